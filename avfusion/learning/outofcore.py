"""Splits too large for memory: the same windows and batches as `Split`, embeddings read per batch.

An in-memory split (windows.Split) holds every embedding: about 11 GB at Aff-Wild2 size (2.8 M frames,
512-d visual and audio) and 75 GB with 6144-d audio. A `StoreSplit` keeps only the small per-row columns
in memory (valid flags and labels: 10 bytes a row) and reads the embeddings a batch needs from the
memory-mapped stores (store.RawShardReader), so its memory does not grow with the features.

It is a `Split` whose `visual` and `audio` are `ModalityColumn`s (a `StoreColumn` per extractor of the
feature set, side by side): indexing one with row positions reads
those rows, so `Split.gather`, `predict_split` and training run unchanged, and every batch (hence every
loss, model and prediction) is identical to the in-memory path's. Which path a stage takes is decided
by `choose_data` from the features' size and the `data` / `memory_budget_gb` params of its section.
"""
from __future__ import annotations

import numpy as np
import torch

from avfusion.errors import ParamsError
from avfusion.learning.windows import Modality, Split, extractor_parts, load_labels, load_split, usable_entries
from avfusion.store.reader import FeatureReader

DATA_CHOICES = ("auto", "memory", "stores")
MEMORY_BUDGET_GB = 2.0   # features held in memory at most (loading briefly needs twice that)


class StoreColumn:
    """A split's [N, D] float32 embeddings of one modality, read from the stores when indexed.

    `column[pos]` (pos: int64 tensor of flat rows, any shape) is `pos.shape + (D,)`, like indexing
    the in-memory tensor. Rows a video's store does not hold (features shorter than its labels) are zero.
    """

    def __init__(self, reader: FeatureReader, video_ids: list[str], offsets: np.ndarray, device: str):
        self.reader = reader
        self.offsets = offsets
        where = [reader.index[v] for v in video_ids]   # (store, first row, end row)
        self.store = np.array([s for s, _, _ in where], np.int64)
        self.first = np.array([lo for _, lo, _ in where], np.int64)
        self.held = np.minimum([hi - lo for _, lo, hi in where], np.diff(offsets))
        self.shape = (int(offsets[-1]), reader.dim)
        self.device = device

    def _read(self, store: int, start: int, stop: int) -> np.ndarray:
        raw = self.reader.raw[store].get("embedding")
        return raw.read(start, stop) if raw else self.reader.arrays[store]["embedding"][start:stop]

    def __getitem__(self, pos: torch.Tensor) -> torch.Tensor:
        # Each distinct row is read once, in flat order (video by video, ascending rows): one read per
        # run of consecutive store rows, so a window costs one or two chunk copies, not one per frame.
        rows, inverse = np.unique(pos.reshape(-1).cpu().numpy(), return_inverse=True)
        out = np.zeros((len(rows), self.shape[1]), np.float32)
        video = np.searchsorted(self.offsets, rows, side="right") - 1
        local = rows - self.offsets[video]
        at = np.flatnonzero(local < self.held[video])
        store, source = self.store[video[at]], self.first[video[at]] + local[at]
        breaks = np.flatnonzero((np.diff(store) != 0) | (np.diff(source) != 1) | (np.diff(at) != 1)) + 1
        for a, b in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(at)]])):
            if b > a:
                out[at[a]:at[b - 1] + 1] = self._read(int(store[a]), int(source[a]), int(source[b - 1]) + 1)
        return torch.from_numpy(out[inverse.reshape(-1)].reshape(*pos.shape, self.shape[1])).to(self.device)


class ModalityColumn:
    """A modality's [N, dim] embeddings read from the stores of its extractors: their `StoreColumn`s
    side by side (avfusion/featuresets.py)."""

    def __init__(self, modality: Modality, video_ids: list[str], offsets: np.ndarray, device: str):
        self.parts = [StoreColumn(reader, video_ids, offsets, device) for reader in modality.readers]
        self.shape = (int(offsets[-1]), modality.dim)

    def __getitem__(self, pos: torch.Tensor) -> torch.Tensor:
        if len(self.parts) == 1:
            return self.parts[0][pos]
        return torch.cat([part[pos] for part in self.parts], dim=-1)


class StoreSplit(Split):
    """A `Split` of the same videos, rows and windows whose embeddings stay in the stores.

    It does not call `Split.__init__`, which concatenates the embeddings: it builds the same offsets,
    valid flags and labels (aligned on the annotation length the same way) without reading them.
    """

    def __init__(self, entries: list[dict], visual: Modality, audio: Modality, device: str = "cpu"):
        if not entries:
            raise ValueError("a split needs at least one video")
        self.video_ids = [e["video_id"] for e in entries]
        labels, visual_each, audio_each = [], [], []
        for e in entries:
            vid = e["video_id"]
            rows = load_labels(e["labels"], max(visual.length(vid), audio.length(vid)))
            labels.append(rows)
            visual_each.append(visual.valid(vid, len(rows)))
            audio_each.append(audio.valid(vid, len(rows)))
        self.offsets = np.concatenate([[0], np.cumsum([len(rows) for rows in labels])]).astype(np.int64)
        for name, modality, each in (("visual", visual, visual_each), ("audio", audio, audio_each)):
            each = torch.from_numpy(np.concatenate(each)).to(device, torch.bool)
            setattr(self, f"{name}_valid", each.all(dim=1))
            setattr(self, f"{name}_parts", extractor_parts(each, modality.columns, modality.dim))
            setattr(self, name, ModalityColumn(modality, self.video_ids, self.offsets, device))
        self.labels = torch.from_numpy(np.concatenate(labels)).to(device, torch.float32)
        self.device = device


def feature_bytes(entries: list[dict], visual_dirs: str | list[str], audio_dirs: str | list[str]) -> int:
    """Bytes of float32 embeddings an in-memory split of these videos would hold (feature rows)."""
    total = 0
    for directories in (visual_dirs, audio_dirs):
        for reader in Modality(directories).readers:
            rows = sum(reader.length(e["video_id"]) for e in entries)
            total += 4 * rows * reader.dim
    return total


def choose_data(params: dict, entries: list[dict], visual_dirs: str | list[str], audio_dirs: str | list[str]) -> str:
    """`memory` or `stores` for these videos: a section's `data` (auto | memory | stores); `auto`
    keeps the splits in memory when their embeddings fit in `memory_budget_gb`."""
    data = params.get("data", "auto")
    if data not in DATA_CHOICES:
        raise ParamsError(f"data must be one of {', '.join(DATA_CHOICES)}, not {data!r}")
    if data != "auto":
        return data
    budget = float(params.get("memory_budget_gb", MEMORY_BUDGET_GB)) * 2**30
    return "memory" if feature_bytes(entries, visual_dirs, audio_dirs) <= budget else "stores"


def open_split(entries: list[dict], visual_dirs: str | list[str], audio_dirs: str | list[str], device: str,
               data: str) -> Split:
    """The split of these manifest rows (each modality: a store directory or its feature set's, as
    `load_split`): in memory (`load_split`) or read from the stores per batch."""
    if data == "memory":
        return load_split(entries, visual_dirs, audio_dirs, device)
    visual, audio = Modality(visual_dirs), Modality(audio_dirs)
    return StoreSplit(usable_entries(entries, visual, audio), visual, audio, device)
