"""Per-frame audio descriptors: the shared contract of the vad, egemaps, logmel and mfcc extractors.

Each of them computes a descriptor series on its own regular grid (silero-vad: 32 ms chunks,
openSMILE and the log-mel: 10 ms frames) and summarises it over each video frame's interval: the
mean of the series, weighted by how much of each step falls inside the interval. Consecutive frame
intervals tile the audio, so every step counts once whatever the frame rate, and a row describes
exactly the audio of its frame (docs/design.md §4: audio row t is centred on frame t).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avfusion.extraction.base import Extractor, Video
from avfusion.sources import media

SAMPLE_RATE = 16000     # what the audio descriptors read: silero-vad's rate


@dataclass
class FrameFeatures:
    """One video's rows, aligned 1:1 with its decoded frames."""
    features: np.ndarray    # [n, D] float32, zeros where not valid
    valid: np.ndarray       # [n] bool
    names: list[str]        # the D column names
    provenance: dict


def frame_intervals(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) of each frame: from halfway to the previous frame to halfway to the next, so the
    intervals are centred on constant-rate frames and tile the video; variable rates are honoured."""
    times = np.asarray(times, np.float64)
    if len(times) < 2:
        return times.copy(), times.copy()       # one frame: a point (its own step's value)
    mids = (times[1:] + times[:-1]) / 2
    lo = np.concatenate([[2 * times[0] - mids[0]], mids])
    hi = np.concatenate([mids, [2 * times[-1] - mids[-1]]])
    return lo, hi


def interval_mean(values: np.ndarray, t0: float, hop: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mean over each [lo, hi) of the step function equal to values[k] on [t0 + k hop, t0 + (k+1) hop).

    Only the part of an interval covered by steps counts; an empty interval (a point) takes the value
    of the step holding it; intervals that miss every step get 0. values [m, D] -> [n, D] float64.
    """
    values = np.asarray(values, np.float64)
    values = values[:, None] if values.ndim == 1 else values
    m = len(values)
    out = np.zeros((len(lo), values.shape[1]))
    if m == 0:
        return out
    integral = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
    xlo, xhi = (np.clip((np.asarray(t, np.float64) - t0) / hop, 0, m) for t in (lo, hi))

    def area(x):            # integral of the steps from t0 to step coordinate x
        k = np.minimum(np.floor(x).astype(np.int64), m - 1)
        return integral[k] + (x - k)[:, None] * values[k]

    width = xhi - xlo
    span = width > 0
    out[span] = (area(xhi[span]) - area(xlo[span])) / width[span, None]
    point = (np.asarray(hi) <= np.asarray(lo)) & (np.asarray(lo) >= t0) & (np.asarray(lo) < t0 + m * hop)
    out[point] = values[np.minimum(np.floor(xlo[point]).astype(np.int64), m - 1)]
    return out


def frame_audio(path: str, times: np.ndarray, rate: int = SAMPLE_RATE) -> tuple[np.ndarray, float, np.ndarray]:
    """(mono samples at `rate`, time of sample 0 on the video clock, valid [n]): a frame is valid when
    its timestamp falls inside the audio; none is without an audio stream. Raises MediaError."""
    samples, start = media.read_audio(path, rate)
    times = np.asarray(times, np.float64)
    valid = (times >= start) & (times < start + len(samples) / rate)
    return samples, start, valid


class FramewiseExtractor(Extractor):
    """An audio descriptor summarised over each video frame: its rows depend on the file only, so the
    trials of one file share them. The descriptor object (`build`: `frames(path, times)`, `names`,
    `provenance`) is cheap to make (no model besides silero-vad's small TorchScript file) and gives the
    column names and its own provenance (library versions, hop, ...), which the store records."""

    per_file = True

    def __init__(self, params: dict, device: str = "cpu"):
        super().__init__(params, device)
        self.frames, names = self.build()
        self.names, self.dim = list(names), len(names)

    def build(self) -> tuple[object, list[str]]:
        """The descriptor object and its column names."""
        raise NotImplementedError

    def provenance(self) -> dict:
        return {**super().provenance(), "computed": self.frames.provenance}

    def rows(self, video: Video) -> dict[str, np.ndarray]:
        out = self.frames.frames(video.path, video.times)
        return {"embedding": out.features, "valid": out.valid, "time": video.times}
