"""Feature sets: the extractors whose stores a model reads, per modality (`fusion.visual`, `fusion.audio`).

A modality is its extractors' features side by side, in list order (docs/design.md §6.5): a frame's
modality is present only when every one of its extractors is valid there, so a model never sees a
face embedding without the expression features it was trained beside. Each extractor's block is
standardised with its own training statistics, over the training frames where that extractor is valid
(`train.feature_statistics`; the model carries them). Training and evaluation (in memory or out of
core, avfusion/windows.py `Modality`) and `avfusion predict` all join the blocks with `compose`.

Names are the extractor registry's (avfusion/extraction/registry.py); an extractor's store is
data/features/<name>, so the train and evaluate stages find it without importing extraction code.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os

import numpy as np

from avfusion import paths
from avfusion.errors import UserError
from avfusion.store.reader import FeatureReader

MODALITIES = ("visual", "audio")


class MissingFeatures(UserError):
    """A model needs the store of an extractor that was not run."""


def feature_set(fusion: dict) -> dict[str, list[str]]:
    """The extractor names per modality of a `fusion` params section or a model's config.json `fusion`."""
    return {modality: list(fusion[modality]) for modality in MODALITIES}


def how_to_extract(name: str) -> str:
    return (f"add {name} to features.extractors (features.faces for an extractor on faces) in params.yaml and "
            f"run `dvc repro` (or `dvc exp run -S 'features.extractors=[...,{name}]'`)")


def store_dirs(modality: str, names: list[str]) -> list[str]:
    """The store directories of one modality's extractors; MissingFeatures (one line) for one not extracted."""
    directories = []
    for name in names:
        directory = paths.features_dir(name)
        if not glob.glob(os.path.join(directory, "store-*.zarr")):
            raise MissingFeatures(f"fusion.{modality} needs {name} features, but {directory} holds none: "
                                  f"{how_to_extract(name)}")
        directories.append(directory)
    return directories


def feature_stores(features: dict[str, list[str]]) -> tuple[list[str], list[str], dict]:
    """(visual store directories, audio store directories, provenance of each store by extractor name:
    what a model's config.json records and evaluation checks) of a feature set."""
    visual, audio = (store_dirs(modality, features[modality]) for modality in MODALITIES)
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


def describe(fusion: dict) -> dict:
    """The feature set of a `fusion` params section with each store's directory and fingerprint, and the
    weights its extractor ran with (`random`, a named official file or a path: from
    data/weights/<name>/weights.json): what data/featureset.json holds (the train and evaluate stages
    depend on it, not on every store)."""
    features = feature_set(fusion)
    described = {}
    for modality, names in features.items():
        described[modality] = []
        for name, directory in zip(names, store_dirs(modality, names)):
            record = json.load(open(paths.weights_record(name))) if os.path.isfile(paths.weights_record(name)) else {}
            described[modality].append({"extractor": name, "store": os.path.relpath(directory, paths.root()),
                                        "fingerprint": store_fingerprint(directory),
                                        "weights": record.get("spec", {}).get("weights")})
    return described


def read_description() -> dict:
    """data/featureset.json, as the featureset stage wrote it."""
    try:
        with open(paths.featureset_file()) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{paths.featureset_file()}: not found (run the featureset stage first)") from None


def weights_of(description: dict) -> dict[str, str | None]:
    """{extractor: its weights spec} of a data/featureset.json description."""
    return {e["extractor"]: e["weights"] for modality in MODALITIES for e in description[modality]}


def write_description(fusion: dict, out: str | None = None) -> None:
    """data/featureset.json, replaced in one step (a killed run leaves the old one or none)."""
    out = out or paths.featureset_file()
    text = json.dumps(describe(fusion), indent=2) + "\n"
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".tmp", "w") as f:
        f.write(text)
    os.replace(out + ".tmp", out)
