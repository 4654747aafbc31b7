"""Each stage reads only its own section of params.yaml (plain YAML, loaded safely)."""
from __future__ import annotations

import yaml


def load_params(section: str, path: str = "params.yaml") -> dict:
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    if section not in params:
        raise KeyError(f"{path}: no '{section}' section")
    return params[section]


def on_error(params: dict, section: str) -> str:
    """A section's `on_error`: `fail` (default) or `skip` (leave bad videos out and report them)."""
    value = params.get("on_error", "fail")
    if value not in ("fail", "skip"):
        raise SystemExit(f"{section}.on_error must be 'fail' or 'skip', not {value!r}")
    return value


def resolve_device(name: str = "auto") -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' requested but no CUDA device is available")
    return name
