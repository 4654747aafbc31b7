"""Each stage reads only its own section of params.yaml (plain YAML, loaded safely)."""
from __future__ import annotations

import yaml


def load_params(section: str, path: str = "params.yaml") -> dict:
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    if section not in params:
        raise KeyError(f"{path}: no '{section}' section")
    return params[section]


def resolve_device(name: str = "auto") -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' requested but no CUDA device is available")
    return name
