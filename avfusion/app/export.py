"""`avfusion features VIDEO --out FILE.csv`: every registered extractor's rows of one video in one table.

One row per decoded frame: `frame`, `time`, then per extractor `<name>.valid` and its columns
`<name>.<feature>`, under the features' own names where they have them (`vad.speech`, openSMILE's
descriptors, `expression.happy`) and numbered otherwise (`facenet.000`, `openl3.000`): the per-frame
table of OpenFace's FeatureExtraction. The extractors are the pipeline's classes, built with the
project's params.yaml sections and the weight files of a weights directory (default data/weights);
those that read faces take the faces facenet finds in this video, as in the pipeline.
"""
from __future__ import annotations

import csv
import os

import numpy as np
from tqdm import tqdm

from avfusion import paths
from avfusion.errors import UserError
from avfusion.extraction.base import Extractor, Video
from avfusion.extraction.faces import FACES
from avfusion.extraction.registry import get, names
from avfusion.params import read_params, resolve_device, validate
from avfusion.sources.media import frame_times


class ExportError(UserError):
    """An extractor list, weights directory or output that `avfusion features` cannot use."""


def section(name: str, params_path: str | None) -> dict:
    """Extractor `name`'s params.yaml section, validated (its defaults when the file has none)."""
    return validate(name, read_params(params_path).get(name, {}), params_path)


def missing(name: str, weights_dir: str, params: dict) -> str | None:
    """Why extractor `name` cannot run here with these params (a weight file or an optional package
    missing), or None."""
    cls = get(name)
    for file in cls.weight_files(params):
        path = os.path.join(weights_dir, name, file)
        if not os.path.isfile(path):
            return f"{path}: {name} weights not found (run `dvc repro` or `dvc pull`, or pass --weights DIR)"
    return cls.available()


def available(weights_dir: str, params_path: str | None = None) -> list[str]:
    """The extractors that can run here (their weight files in `weights_dir`, their optional packages
    installed; for those on faces, facenet too)."""
    usable = [n for n in names() if missing(n, weights_dir, section(n, params_path)) is None]
    return [n for n in usable if not get(n).reads_faces or FACES in usable]


def column_names(name: str, extractor: Extractor) -> list[str]:
    features = extractor.names or [f"{i:03d}" for i in range(extractor.dim)]
    return [f"{name}.valid", *(f"{name}.{feature}" for feature in features)]


def build(name: str, weights_dir: str, device: str, params_path: str | None) -> Extractor:
    params = section(name, params_path)
    problem = missing(name, weights_dir, params)
    if problem:
        raise ExportError(problem)
    extractor = get(name)(params, device)
    extractor.weights_dir = os.path.join(weights_dir, name)
    extractor.ensure_loaded()
    return extractor


def extract_all(video: str, chosen: list[str], weights_dir: str | None = None, device: str = "auto",
                params_path: str | None = None) -> tuple[list[str], np.ndarray]:
    """(header, table [frames, columns]) of `video` for the extractors `chosen`. Raises UserError."""
    device = resolve_device(device)
    weights_dir = weights_dir or os.path.dirname(paths.weights_dir(FACES))
    on_faces = [n for n in chosen if get(n).reads_faces]
    order = ([FACES] if on_faces or FACES in chosen else []) + [n for n in chosen if n != FACES]
    times = frame_times(video)
    clip = Video(id=os.path.splitext(os.path.basename(video))[0], path=video, times=times)
    results, extractors = {}, {}
    for name in tqdm(order, desc=os.path.basename(video), unit="extractor"):
        extractor = extractors[name] = build(name, weights_dir, device, params_path)
        given = Video(clip.id, clip.path, clip.times, faces=results[FACES]) if extractor.reads_faces else clip
        results[name] = extractor.rows(given)
        if len(results[name]["valid"]) != len(times):
            raise ExportError(f"{video}: {name} gave {len(results[name]['valid'])} rows for {len(times)} frames")
    header, columns = ["frame", "time"], [np.arange(len(times)), times]
    for name in chosen:
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
