"""`avfusion features VIDEO --out FILE.csv`: every registered extractor's rows of one video in one table.

One row per decoded frame: `frame`, `time`, then per extractor `<name>.valid` and its columns
`<name>.<feature>`, under the features' own names where they have them (`vad.speech`, openSMILE's
descriptors, `expression.happy`) and numbered otherwise (`facenet.000`, `openl3.000`): the per-frame
table of OpenFace's FeatureExtraction. The extractors run as in the pipeline, with the project's
params.yaml sections and the weight files of a weights directory (default data/weights).
"""
from __future__ import annotations

import csv
import importlib.util
import os

import numpy as np
from tqdm import tqdm

from avfusion.errors import UserError
from avfusion.extract import Extractor
from avfusion.extractors import EXTRACTORS, FaceStoreExtractor, get_extractor
from avfusion.params import PARAMS, load_params, resolve_device


class ExportError(UserError):
    """An extractor list, weights directory or output that `avfusion features` cannot use."""


def available(weights_dir: str) -> list[str]:
    """The extractors that work here: their weight file is in `weights_dir`, their optional extra
    installed (egemaps needs openSMILE) and, for those on facenet's faces, facenet's weights there too."""
    names = []
    for name, cls in EXTRACTORS.items():
        if cls.weights and not os.path.isfile(os.path.join(weights_dir, os.path.basename(cls.weights))):
            continue
        if name == "egemaps" and importlib.util.find_spec("opensmile") is None:
            continue
        if issubclass(cls, FaceStoreExtractor) and "facenet" not in names:    # it reads facenet's faces
            continue
        names.append(name)
    return names


def column_names(name: str, extractor: Extractor) -> list[str]:
    names = getattr(extractor, "names", None) or [f"{i:03d}" for i in range(extractor.dim)]
    return [f"{name}.valid", *(f"{name}.{feature}" for feature in names)]


def build(name: str, weights_dir: str, device: str, params_path: str) -> Extractor:
    cls = get_extractor(name)
    extractor = cls(load_params(cls.name, params_path), device)
    if cls.weights:
        extractor.weights = os.path.join(weights_dir, os.path.basename(cls.weights))
        if not os.path.isfile(extractor.weights):
            raise ExportError(f"{extractor.weights}: {name} weights not found (run `dvc repro weights` or "
                              f"`dvc pull`, or pass --weights DIR)")
    return extractor


def extract_all(video: str, names: list[str], weights_dir: str = "data/weights", device: str = "auto",
                params_path: str = PARAMS) -> tuple[list[str], np.ndarray]:
    """(header, table [frames, columns]) of `video` for the extractors `names`. Raises UserError."""
    device = resolve_device(device)
    # expression and landmarks read facenet's faces: facenet runs first (and only for that when not asked for)
    on_faces = {n for n in names if issubclass(get_extractor(n), FaceStoreExtractor)}
    order = (["facenet"] if {"facenet", *on_faces} & set(names) else []) + [n for n in names if n != "facenet"]
    row = {"video_id": os.path.splitext(os.path.basename(video))[0], "path": video, "person": ""}
    results, extractors = {}, {}
    for name in tqdm(order, desc=os.path.basename(video), unit="extractor"):
        extractor = extractors[name] = build(name, weights_dir, device, params_path)
        extractor.load()
        if name in on_faces:
            results[name] = extractor.on_faces(video, results["facenet"])
        else:
            results[name] = extractor.rows(row)
    times = results[order[0]]["time"]
    for name in order:
        if len(results[name]["time"]) != len(times):
            raise ExportError(f"{video}: {name} gave {len(results[name]['time'])} rows for {len(times)} frames")
    header, columns = ["frame", "time"], [np.arange(len(times)), times]
    for name in names:
        header += column_names(name, extractors[name])
        columns += [results[name]["valid"].astype(np.float64), results[name]["embedding"].astype(np.float64)]
    table = np.column_stack([np.asarray(c, np.float64).reshape(len(times), -1) for c in columns])
    return header, table


def write_table(path: str, header: list[str], table: np.ndarray) -> None:
    """CSV: frame and the valid flags as integers, time to 0.1 ms, features to 7 significant digits
    (float32's precision)."""
    valid = {i for i, h in enumerate(header) if h.endswith(".valid")}
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for values in table:
            writer.writerow([int(v) if i == 0 or i in valid else f"{v:.4f}" if i == 1 else f"{v:.7g}"
                             for i, v in enumerate(values)])
