"""Feature sets: the extractors whose stores a model reads, per modality (`fusion.visual`, `fusion.audio`).

A modality is its extractors' features side by side, in list order (docs/design.md §6.5): a frame's
modality is present only when every one of its extractors is valid there, so a model never sees a
face embedding without the expression features it was trained beside. Each extractor's block is
standardised with its own training statistics, over the training frames where that extractor is valid
(`train.feature_statistics`; the model carries them). Training and evaluation (in memory or out of
core, avfusion/windows.py `Modality`) and `avfusion predict` all join the blocks with `compose`.

Names are the extractor registry's (avfusion/extractors.py). This module maps them to their store
directories without importing the extractors, so the train and evaluate stages do not depend on
extraction code (tests/test_featuresets.py checks the map against the registry).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os

import numpy as np

from avfusion.errors import UserError
from avfusion.store import FeatureReader

MODALITIES = ("visual", "audio")
DEFAULT = {"visual": ["facenet"], "audio": ["openl3"]}      # today's models: what old config.json files mean
STORE_OF = {"facenet": "visual", "openl3": "audio"}         # the stages that predate the registry


class MissingFeatures(UserError):
    """A model needs the store of an extractor that was not run."""


def store_name(name: str) -> str:
    """The store directory (under data/features) and params section of an extractor."""
    return STORE_OF.get(name, name)


def feature_set(fusion: dict) -> dict[str, list[str]]:
    """The extractor names per modality of a `fusion` params section or a model's config.json `fusion`."""
    return {modality: list(fusion.get(modality) or DEFAULT[modality]) for modality in MODALITIES}


def how_to_extract(name: str) -> str:
    if name in STORE_OF:
        return f"run its stage (`dvc repro {store_name(name)}`)"
    return (f"add {name} to features.extractors in params.yaml and run `dvc repro` "
            f"(or `dvc exp run -S 'features.extractors=[...,{name}]'`)")


def store_dirs(modality: str, names: list[str], root: str = ".") -> list[str]:
    """The store directories of one modality's extractors; MissingFeatures (one line) for one not extracted."""
    directories = []
    for name in names:
        directory = os.path.join(root, "data", "features", store_name(name))
        if not glob.glob(os.path.join(directory, "store-*.zarr")):
            raise MissingFeatures(f"fusion.{modality} needs {name} features, but {directory} holds none: "
                                  f"{how_to_extract(name)}")
        directories.append(directory)
    return directories


def feature_stores(features: dict[str, list[str]], root: str = ".") -> tuple[list[str], list[str], dict]:
    """(visual store directories, audio store directories, provenance of each store by store name:
    what a model's config.json records and evaluation checks) of a feature set."""
    visual, audio = (store_dirs(modality, features[modality], root) for modality in MODALITIES)
    provenance = {os.path.basename(d): FeatureReader(d).provenance for d in visual + audio}
    return visual, audio, provenance


def compose(blocks: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One modality from its extractors' (embedding [n, D_i], valid [n]) rows, in feature-set order:
    (embedding [n, sum D_i], present [n]: every extractor valid, valid per extractor [n, k])."""
    embedding = blocks[0][0] if len(blocks) == 1 else np.concatenate([e for e, _ in blocks], axis=1)
    each = np.stack([np.asarray(v, bool) for _, v in blocks], axis=1)
    return embedding, each.all(axis=1), each


def store_fingerprint(directory: str) -> str:
    """A digest of a store directory that changes whenever its rows can: every file's path and size,
    and the full text of its `zarr.json` files, which hold the provenance and the commit records. The
    chunks themselves are not read (gigabytes at Aff-Wild2 size): a store's rows are fixed by its
    provenance and its committed videos (avfusion/extract.py resumes a store only when both match)."""
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(directory, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            name = os.path.relpath(path, directory)
            digest.update(f"{name}\0{os.path.getsize(path)}\0".encode())
            if os.path.basename(path) == "zarr.json":
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()


def describe(fusion: dict, root: str = ".") -> dict:
    """The feature set of a `fusion` params section with each store's directory and fingerprint: what
    data/featureset.json holds (the train and evaluate stages depend on it, not on every store)."""
    features = feature_set(fusion)
    return {modality: [{"extractor": name, "store": os.path.relpath(directory, root),
                        "fingerprint": store_fingerprint(directory)}
                       for name, directory in zip(names, store_dirs(modality, names, root))]
            for modality, names in features.items()}


def write_description(fusion: dict, out: str, root: str = ".") -> None:
    """data/featureset.json, replaced in one step (a killed run leaves the old one or none)."""
    text = json.dumps(describe(fusion, root), indent=2) + "\n"
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".tmp", "w") as f:
        f.write(text)
    os.replace(out + ".tmp", out)
