"""Every file and directory the pipeline reads or writes, relative to one project root.

The root is the directory holding `params.yaml` and `dvc.yaml`. DVC runs every stage there, so by
default it is found from the working directory upwards; a notebook elsewhere sets it once with
`set_root(path)` (or the `AVFUSION_ROOT` environment variable), and every library function then finds
the manifest, the stores, the weights and the models under it. `set_root` also sets the variable, so
spawned worker processes see the same root.
"""
from __future__ import annotations

import hashlib
import os

from avfusion.errors import UserError

ROOT_ENV = "AVFUSION_ROOT"
MARKERS = ("params.yaml", "dvc.yaml")


def set_root(path: str) -> str:
    """Make `path` the project root for this process and the processes it starts; returns it, absolute."""
    path = os.path.abspath(path)
    if not os.path.isfile(os.path.join(path, MARKERS[0])):
        raise UserError(f"{path}: not an avfusion project (no {MARKERS[0]} in it)")
    os.environ[ROOT_ENV] = path
    return path


def root() -> str:
    """The project root: `AVFUSION_ROOT` if set, else the nearest directory at or above the working
    directory that holds params.yaml and dvc.yaml, else the working directory."""
    if os.environ.get(ROOT_ENV):
        return os.environ[ROOT_ENV]
    here = os.getcwd()
    directory = here
    while True:
        if all(os.path.isfile(os.path.join(directory, m)) for m in MARKERS):
            return directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return here
        directory = parent


def project(*parts: str) -> str:
    return os.path.join(root(), *parts)


def params_file() -> str:
    return project("params.yaml")


def manifest() -> str:
    return project("data", "manifest.csv")


def frame_times_dir() -> str:
    """One `<sha256>.npy` per media file: the timestamps of its decoded frames (avfusion/sources/manifest.py)."""
    return project("data", "frame_times")


def features_dir(name: str) -> str:
    """The stores of extractor `name`."""
    return project("data", "features", name)


def weights_dir(name: str) -> str:
    """The weight files of extractor `name` and their record (weights.json)."""
    return project("data", "weights", name)


def weights_record(name: str) -> str:
    """What made extractor `name`'s weight files, and their SHA-256 (avfusion/extraction/weights.py)."""
    return os.path.join(weights_dir(name), "weights.json")


def featureset_file() -> str:
    return project("data", "featureset.json")


def models_dir() -> str:
    return project("models")


def predictions_dir() -> str:
    return project("data", "predictions")


def reports(*parts: str) -> str:
    return project("reports", *parts)


def skip_report(name: str) -> str:
    """The videos extractor `name` passed over with `on_error: skip`."""
    return reports(f"skipped_{name}.json")


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
