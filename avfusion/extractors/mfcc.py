"""`mfcc`: MFCCs per video frame, the orthonormal DCT-II of the log mel rows (avfusion/extraction/melspectrum.py).

Default: 20 MFCCs, the DCT of the frame's mean log-mel row. `mfcc.deltas: true`: 13 MFCCs with their
deltas and delta-deltas (39 columns, the JCA line's audio input), computed on the 10 ms rows before the
per-frame mean, with HTK's regression formula of width 2,
    d_t = sum_{n=1..2} n (c_{t+n} - c_{t-n}) / (2 sum_{n=1..2} n^2),
the edge rows repeated (HTK's, and librosa.feature.delta(width=5, mode="nearest")); delta-deltas are
the same formula on the deltas.
"""
from __future__ import annotations

import numpy as np
import scipy.fft

from avfusion.extraction.base import ExtractorParams, register
from avfusion.extraction.framewise import (
    SAMPLE_RATE,
    FrameFeatures,
    FramewiseExtractor,
    frame_audio,
    frame_intervals,
    interval_mean,
)
from avfusion.extraction.melspectrum import HOP, WINDOW, LogMel

N_DELTA_MFCC = 13
DELTA_WIDTH = 2          # HTK DELTAWINDOW: rows each side


def deltas(rows: np.ndarray, width: int = DELTA_WIDTH) -> np.ndarray:
    """HTK regression deltas along axis 0, edges repeated."""
    padded = np.pad(rows, ((width, width), (0, 0)), mode="edge")
    m = len(rows)
    total = sum(n * (padded[width + n:width + n + m] - padded[width - n:width - n + m]) for n in range(1, width + 1))
    return total / (2 * sum(n * n for n in range(1, width + 1)))


class CepstraWithDeltas:
    """13 MFCCs, deltas and delta-deltas of the 10 ms rows, averaged over each frame's interval."""

    def __init__(self):
        self.logmel = LogMel()
        base = [f"mfcc_{i:02d}" for i in range(N_DELTA_MFCC)]
        self.names = base + [f"d_{n}" for n in base] + [f"dd_{n}" for n in base]
        self.provenance = {**LogMel(mfcc=True).provenance, "n_mfcc": N_DELTA_MFCC, "deltas": "HTK regression, width 2, "
                           "edges repeated; delta-deltas of the deltas; on the 10 ms rows before the per-frame mean"}

    def frames(self, path: str, times: np.ndarray) -> FrameFeatures:
        samples, start, valid = frame_audio(path, times)
        cepstra = scipy.fft.dct(self.logmel.log_mel(samples), type=2, norm="ortho", axis=1)[:, :N_DELTA_MFCC]
        first = deltas(cepstra)
        rows = np.concatenate([cepstra, first, deltas(first)], axis=1)
        t0 = start + (WINDOW / 2 - HOP / 2) / SAMPLE_RATE     # as LogMel.frames: row k centred at k HOP + WINDOW / 2
        out = interval_mean(rows, t0, HOP / SAMPLE_RATE, *frame_intervals(times))
        out[~valid] = 0.0
        return FrameFeatures(out.astype(np.float32), valid, list(self.names), dict(self.provenance))


class Params(ExtractorParams):
    deltas: bool = False       # true: 13 MFCCs + deltas + delta-deltas (39 columns)


@register
class MfccExtractor(FramewiseExtractor):
    """20 MFCCs (the DCT of the log mel rows), `mfcc.mfcc_00` ...; with deltas 39 columns."""
    name, version = "mfcc", "mfcc-torch/1"
    Params = Params
    output_params = ("deltas",)

    def build(self):
        mfcc = CepstraWithDeltas() if self.params.get("deltas") else LogMel(mfcc=True)
        return mfcc, mfcc.names
