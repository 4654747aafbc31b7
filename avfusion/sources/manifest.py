"""`data/manifest.csv` and `data/frame_times/`: what the dataset stage writes and every later stage reads.

Kept apart from avfusion/sources/dataset.py (which parses the sources) so that the extraction and training
stages do not depend on the source-parsing code: a change there would re-run hours of extraction.

Columns:
    video_id      the trial (Aff-Wild2: `<video>_left` / `_right` are two people of one file)
    path          the media file
    split         train | validation | test
    fps, frames   as probed from the container
    labels        the label file; label_frames: its row count
    person        left | right | "" (the face to track)
    media         the media file's name, without extension: unique per file in the manifest, shared by
                  the trials of one file. Every "same file" decision uses it (stores, shared decoding,
                  cross-validation folds); stores are bucketed by it (`store.layout.bucket_of`).
    sha256        the media file's SHA-256, computed once by the dataset stage

Frame times: `data/frame_times/<sha256>.npy` holds the timestamps of every decoded frame of that media
file (float64 seconds from the video's start, `media.frame_times`): row t of every store is frame t.
Decoded once, by the dataset stage, and named by content, so an interrupted stage keeps what it
decoded and a changed file gets new times; extractors that read only the audio never decode the video.
"""
from __future__ import annotations

import csv
import os

import numpy as np

from avfusion import paths
from avfusion.errors import DatasetError

COLUMNS = ["video_id", "path", "split", "fps", "frames", "labels", "label_frames", "person", "media", "sha256"]


def read_manifest(path: str | None = None) -> list[dict]:
    """The manifest rows (every value a string, as the dataset stage writes them), with `path` and
    `labels` made absolute: the manifest keeps them relative to the project root, so that it is the
    same in every clone, and they open from any working directory."""
    path = path or paths.manifest()
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: not found (run the dataset stage first)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"media", "sha256"} <= rows[0].keys():
        raise DatasetError(f"{path} has no media / sha256 columns (re-run the dataset stage)")
    for row in rows:
        row.update({key: os.path.join(paths.root(), row[key]) for key in ("path", "labels") if row[key]})
    return rows


def frame_times_path(sha256: str, directory: str | None = None) -> str:
    return os.path.join(directory or paths.frame_times_dir(), f"{sha256}.npy")


def read_frame_times(row: dict, directory: str | None = None) -> np.ndarray:
    """The decoded frames' timestamps of a manifest row's media file."""
    path = frame_times_path(row["sha256"], directory)
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"{path}: frame times of {row['path']} not found (re-run the dataset stage)") from None


def write_frame_times(sha256: str, times: np.ndarray, directory: str | None = None) -> None:
    """Written whole, then renamed: a killed stage leaves the file or nothing."""
    path = frame_times_path(sha256, directory)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        np.save(f, np.asarray(times, np.float64), allow_pickle=False)
    os.replace(path + ".tmp", path)
