"""Per-frame valence/arousal annotation files (Aff-Wild2 format) and safe video ids.

Format: header `valence,arousal`, then one line per video frame (line k = frame k); `-5` means not
annotated. Anything else that is not a number in [-1, 1] is an error: a silently shifted or
truncated label file would misalign every frame after it.
"""
from __future__ import annotations

import math
import os
import re

import numpy as np

from avfusion.errors import AnnotationError

INVALID = -5.0
HEADER = ["valence", "arousal"]
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def check_video_id(video_id: str, source: str = "") -> str:
    """Ids become file names under the data root: refuse anything that could escape it."""
    if not _SAFE_ID.match(video_id) or ".." in video_id:
        where = f"{source}: " if source else ""
        raise AnnotationError(f"{where}unsafe video id {video_id!r} (letters, digits, '_', '-', '.' only; no '..' or '/')")
    return video_id


def inside(root: str, *parts: str) -> str:
    """Join parts under root and refuse a result outside it (symlinks resolved)."""
    path = os.path.join(root, *parts)
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise AnnotationError(f"{path}: resolves outside the data root {root}")
    return path


def read_labels(path: str) -> np.ndarray:
    """[n, 2] float32 (valence, arousal) with -5 where not annotated."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise AnnotationError(f"{path}: label file not found") from None
    if not lines:
        raise AnnotationError(f"{path}: empty annotation file")
    header = [h.strip().lower() for h in lines[0].split(",")]
    if header != HEADER:
        raise AnnotationError(f"{path}:1: header must be 'valence,arousal', found {lines[0]!r}")
    while lines and not lines[-1].strip():
        lines.pop()   # trailing blank lines are harmless; blank lines inside are not
    rows = np.empty((len(lines) - 1, 2), dtype=np.float32)
    for k, line in enumerate(lines[1:]):
        fields = line.split(",")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if len(values) != 2 or not all(math.isfinite(v) for v in values):
            raise AnnotationError(f"{path}:{k + 2}: expected two numbers, found {line!r}")
        for v in values:
            if v != INVALID and not -1.0 <= v <= 1.0:
                raise AnnotationError(f"{path}:{k + 2}: value {v} outside [-1, 1] (only -5 marks 'not annotated')")
        rows[k] = values
    return rows


def write_labels(path: str, labels: np.ndarray) -> None:
    with open(path, "w") as f:
        f.write("valence,arousal\n")
        for v, a in labels:
            f.write(f"{v:.6g},{a:.6g}\n")
