"""`data/manifest.csv`: one row per video trial, written by the dataset stage, read by every later stage.

Kept apart from avfusion/dataset.py (which parses the sources) so that the extraction and training
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
                  cross-validation folds); stores are bucketed by it (`store.bucket_of`).
    sha256        the media file's SHA-256, computed once by the dataset stage (see build_manifest)
"""
from __future__ import annotations

import csv
import os

from avfusion.errors import DatasetError

MANIFEST = "data/manifest.csv"
COLUMNS = ["video_id", "path", "split", "fps", "frames", "labels", "label_frames", "person", "media", "sha256"]


def read_manifest(path: str = MANIFEST) -> list[dict]:
    """The manifest rows (every value a string, as the dataset stage writes them)."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: not found (run the dataset stage first)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
