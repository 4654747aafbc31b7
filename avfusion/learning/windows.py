"""The one data path from cached features to model inputs: videos, flat splits, fixed-length windows.

Per video, visual rows, audio rows and labels are aligned on the annotation length (docs/design.md §3: trust
it): feature rows past it are dropped, label rows without features become invalid (zero) feature rows.
A split is every video's rows concatenated into flat tensors (nanoGPT style), so a batch of windows is
one gather on the device and the GPU never waits on I/O. Windows never cross videos: the last window
of a video is padded at the tail and masked (`last="pad"`), or shifted back to end at the video's last
frame (`last="shift"`, LFAN's windowing; only a video shorter than a window is still padded).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from avfusion.learning.featuresets import compose
from avfusion.learning.metrics import INVALID
from avfusion.sources.annotations import read_labels
from avfusion.store.reader import FeatureReader
from avfusion.threads import torch_threads

PREDICT_BATCH = 256   # windows per forward pass when predicting


@dataclass
class Video:
    """One video's aligned per-frame arrays (n rows each)."""
    video_id: str
    visual: np.ndarray         # [n, Dv] float32
    visual_valid: np.ndarray   # [n] bool
    audio: np.ndarray          # [n, Da] float32
    audio_valid: np.ndarray    # [n] bool
    labels: np.ndarray         # [n, 2] float32, INVALID where not annotated
    visual_each: np.ndarray | None = None   # [n, k] bool: each of the modality's k extractors valid
    audio_each: np.ndarray | None = None    # (None: one extractor, whose flag is the modality's)

    def __post_init__(self):
        for name in ("visual", "audio"):
            if getattr(self, f"{name}_each") is None:
                setattr(self, f"{name}_each", getattr(self, f"{name}_valid")[:, None])


def load_labels(path: str, frames: int) -> np.ndarray:
    """Labels of one video; a video without a label file (e.g. an unlabelled test set) is all INVALID."""
    if path and os.path.exists(path):
        return read_labels(path)
    if path:
        raise FileNotFoundError(f"{path}: label file listed in the manifest is missing")
    return np.full((frames, 2), INVALID, np.float32)


def _fit(rows: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad rows to n (missing feature rows are zero, and their valid flag false)."""
    if len(rows) >= n:
        return rows[:n]
    return np.concatenate([rows, np.zeros((n - len(rows), *rows.shape[1:]), rows.dtype)])


class Modality:
    """One modality's stores read as one: the extractors of its feature set, in order
    (avfusion/featuresets.py: blocks side by side, present where every extractor is valid)."""

    def __init__(self, directories: str | list[str]):
        directories = [directories] if isinstance(directories, str) else list(directories)
        self.readers = [FeatureReader(d) for d in directories]
        widths = np.cumsum([0] + [reader.dim for reader in self.readers])
        self.columns = [slice(int(a), int(b)) for a, b in zip(widths[:-1], widths[1:])]   # each extractor's
        self.dim = int(widths[-1])

    def length(self, video_id: str) -> int:
        """Rows the stores hold for the video (0: skipped by extraction)."""
        return max(reader.length(video_id) for reader in self.readers)

    def rows(self, video_id: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(embedding [n, dim], present [n], valid per extractor [n, k]), cut or padded to n rows."""
        parts = [reader.rows(video_id, columns=("embedding", "valid")) for reader in self.readers]
        return compose([(_fit(p["embedding"], n), _fit(p["valid"], n)) for p in parts])

    def valid(self, video_id: str, n: int) -> np.ndarray:
        """[n, k]: each extractor's valid flag, without reading the embeddings."""
        return np.stack([_fit(reader.rows(video_id, columns=("valid",))["valid"], n)
                         for reader in self.readers], axis=1)


def load_video(video_id: str, labels_path: str, visual: Modality, audio: Modality) -> Video:
    labels = load_labels(labels_path, max(visual.length(video_id), audio.length(video_id)))
    n = len(labels)
    v, v_valid, v_each = visual.rows(video_id, n)
    a, a_valid, a_each = audio.rows(video_id, n)
    return Video(video_id, v, v_valid, a, a_valid, labels, v_each, a_each)


def window_starts(n: int, window: int, hop: int, last: str = "pad") -> list[int]:
    """Starts of windows every `hop` frames that cover all n frames.

    last="pad": the last window starts a hop later and may overhang (padded); "shift": it starts at
    n - window instead, ending exactly at the last frame.
    """
    if n <= 0:
        return []
    starts = list(range(0, max(n - window, 0) + 1, hop))
    if starts[-1] + window < n:
        starts.append(starts[-1] + hop if last == "pad" else n - window)
    return starts


def extractor_parts(each: torch.Tensor, columns: list[slice] | None, dim: int) -> list[tuple[slice, torch.Tensor]]:
    """(columns, valid [N]) of each extractor of a modality, from its flags `each` [N, k]."""
    return [(c, each[:, j]) for j, c in enumerate(columns or [slice(0, dim)])]


class Split:
    """Videos of one split as flat tensors on one device; `offsets[i]:offsets[i+1]` is video i.

    `visual_parts` / `audio_parts`: each extractor's columns and where it is valid (its training
    statistics are taken there); `columns` gives them per modality (default: one extractor each).
    """

    def __init__(self, videos: list[Video], device: str = "cpu", columns: dict[str, list[slice]] | None = None):
        if not videos:
            raise ValueError("a split needs at least one video")
        self.video_ids = [v.video_id for v in videos]
        lengths = [len(v.labels) for v in videos]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        def flat(name, dtype):
            return torch.from_numpy(np.concatenate([getattr(v, name) for v in videos])).to(device, dtype)

        self.visual = flat("visual", torch.float32)
        self.visual_valid = flat("visual_valid", torch.bool)
        self.audio = flat("audio", torch.float32)
        self.audio_valid = flat("audio_valid", torch.bool)
        self.labels = flat("labels", torch.float32)
        self.visual_parts = extractor_parts(flat("visual_each", torch.bool), (columns or {}).get("visual"),
                                            self.visual.shape[1])
        self.audio_parts = extractor_parts(flat("audio_each", torch.bool), (columns or {}).get("audio"),
                                           self.audio.shape[1])
        self.device = device

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def windows(self, window: int, hop: int, last: str = "pad") -> torch.Tensor:
        """[W, 2] int64 (flat start, flat end of its video) of every window of every video."""
        rows = [(lo + s, hi) for lo, hi in zip(self.offsets[:-1], self.offsets[1:])
                for s in window_starts(int(hi - lo), window, hop, last)]
        return torch.tensor(rows, dtype=torch.int64, device=self.device).reshape(-1, 2)

    def gather(self, windows: torch.Tensor, window: int) -> dict[str, torch.Tensor]:
        """Batch of windows: features [B, L, D], valid [B, L], labels [B, L, 2], masks.

        `inside` marks real frames (not tail padding); `label_mask` [B, L, 2] marks frames that count
        in the loss: annotated, inside, and with at least one modality present.
        """
        pos = windows[:, :1] + torch.arange(window, device=windows.device)
        inside = pos < windows[:, 1:]
        pos = torch.where(inside, pos, windows[:, :1])   # any in-video row; masked out below
        visual_valid = self.visual_valid[pos] & inside
        audio_valid = self.audio_valid[pos] & inside
        labels = torch.where(inside[..., None], self.labels[pos], INVALID)
        present = (visual_valid | audio_valid) & inside
        return {
            "visual": self.visual[pos] * inside[..., None], "visual_valid": visual_valid,
            "audio": self.audio[pos] * inside[..., None], "audio_valid": audio_valid,
            "labels": labels, "inside": inside,
            "label_mask": (labels != INVALID) & present[..., None],
        }

    def labels_numpy(self) -> np.ndarray:
        return self.labels.cpu().numpy()

    def video_slices(self) -> dict[str, slice]:
        return {vid: slice(int(lo), int(hi))
                for vid, lo, hi in zip(self.video_ids, self.offsets[:-1], self.offsets[1:])}


def load_split(entries: list[dict], visual_dirs: str | list[str], audio_dirs: str | list[str],
               device: str = "cpu") -> Split:
    """entries: manifest rows (`video_id`, `labels`); each modality's store directory, or those of its
    feature set's extractors (avfusion/featuresets.py).

    A video with no rows in any store was skipped as unreadable by the extraction stages
    (`on_error: skip`, listed in reports/skipped_*.json): it is left out, not scored as featureless.
    """
    visual, audio = Modality(visual_dirs), Modality(audio_dirs)
    usable = usable_entries(entries, visual, audio)
    return Split([load_video(e["video_id"], e["labels"], visual, audio) for e in usable], device,
                 {"visual": visual.columns, "audio": audio.columns})


def usable_entries(entries: list[dict], visual: Modality, audio: Modality) -> list[dict]:
    """The entries with rows in either store (see `load_split`)."""
    usable = [e for e in entries if visual.length(e["video_id"]) or audio.length(e["video_id"])]
    for e in entries:
        if e not in usable:
            print(f"{e['video_id']}: no features (skipped by extraction), left out")
    return usable


@contextmanager
def repeatable_cpu_math(device: str, threads: int = 1):
    """On the CPU, compute on `threads` threads inside the block (0: torch's default, all cores). On one
    thread training and evaluation are bitwise repeatable from run to run.

    With 2 threads, MKL's float32 gemm is not: here about 1 training run in 20 (separate processes, same
    seed and data) gave a model differing in the 7th digit, and CI's same-model checks failed on it.
    Neither MKL's strict reproducibility mode (MKL_CBWR=AUTO,STRICT: 8 runs in 210 still differed) nor
    torch.use_deterministic_algorithms helped; one thread did (every run alike). What one thread costs
    is measured by benchmarks/bench_threads.py (reports/threads.json); CUDA runs are untouched."""
    if not str(device).startswith("cpu") or threads == 0:
        yield
        return
    with torch_threads(threads):
        yield


def autocast(device: str):
    """bf16 autocast on CUDA; a no-op on the CPU, where training must stay bit-deterministic."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=str(device).startswith("cuda"))


@torch.no_grad()
def predict_split(model: torch.nn.Module, split: Split, window: int, hop: int, last: str = "pad") -> np.ndarray:
    """[N, 2] per-frame predictions of every video, overlapping windows averaged per frame."""
    was_training = model.training
    model.eval()
    total = torch.zeros(len(split), 2, device=split.device)
    count = torch.zeros(len(split), 1, device=split.device)
    for batch in split.windows(window, hop, last).split(PREDICT_BATCH):
        x = split.gather(batch, window)
        with autocast(split.device):
            pred = model(x["visual"], x["visual_valid"], x["audio"], x["audio_valid"]).float()
        pos = batch[:, :1] + torch.arange(window, device=batch.device)
        keep = x["inside"]
        total.index_add_(0, pos[keep], pred[keep])
        count.index_add_(0, pos[keep], torch.ones_like(pred[keep][:, :1]))
    model.train(was_training)
    return (total / count.clamp_min(1)).cpu().numpy()


def predict_video(model: torch.nn.Module, visual: np.ndarray, visual_valid: np.ndarray,
                  audio: np.ndarray, audio_valid: np.ndarray, window: int, hop: int,
                  device: str = "cpu") -> np.ndarray:
    """[n, 2] predictions for one video's aligned rows (every frame covered, overlaps averaged)."""
    n = len(visual)
    video = Video("video", np.asarray(visual, np.float32), np.asarray(visual_valid, bool),
                  np.asarray(audio, np.float32), np.asarray(audio_valid, bool),
                  np.full((n, 2), INVALID, np.float32))
    return predict_split(model, Split([video], device), window, hop)

