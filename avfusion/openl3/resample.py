"""resampy's `kaiser_best` resampling (what openl3 uses to bring audio to 48 kHz), vectorised."""
from __future__ import annotations

import functools
import math

import numpy as np
import scipy.signal

from avfusion.openl3.frontend import SAMPLE_RATE

KAISER_ZEROS, KAISER_TABLE = 64, 2 ** 9             # zero crossings kept, filter table entries per crossing
KAISER_BETA, KAISER_ROLLOFF = 14.769656459379492, 0.9475937167399596


@functools.lru_cache(maxsize=1)
def _kaiser_best() -> np.ndarray:
    """Right wing of resampy's precomputed `kaiser_best` windowed-sinc filter."""
    n = KAISER_ZEROS * KAISER_TABLE
    sinc = KAISER_ROLLOFF * np.sinc(KAISER_ROLLOFF * np.linspace(0, KAISER_ZEROS, n + 1))
    return scipy.signal.windows.kaiser(2 * n + 1, KAISER_BETA)[n:] * sinc


def resample(audio: np.ndarray, sr: int, target: int = SAMPLE_RATE, chunk: int = 1 << 14) -> np.ndarray:
    """resampy.resample(audio, sr, target, filter='kaiser_best'), vectorised over output samples.

    The filter weights depend only on an output sample's phase (t mod `up`), so they are tabulated
    once per phase, from exact integer positions (resampy accumulates the position in floating
    point; the difference is at rounding level).
    """
    if sr == target:
        return np.asarray(audio, dtype=np.float32)
    if sr != int(sr) or sr <= 0:
        raise ValueError(f"sample rate must be a positive integer, not {sr}")
    sr = int(sr)
    g = math.gcd(sr, target)
    up, down = target // g, sr // g
    scale = min(1.0, target / sr)
    win = _kaiser_best() * scale
    delta = np.diff(win, append=win[-1])
    step = int(scale * KAISER_TABLE)
    taps = np.arange(len(win) // step)             # the most taps one wing can use

    def wing(phase):                               # weights [phases, taps] of one wing of the filter
        index = phase * KAISER_TABLE
        offset = index.astype(np.int64)
        idx = np.minimum(offset[:, None] + taps * step, len(win) - 1)
        used = taps < ((len(win) - offset) // step)[:, None]
        return np.where(used, win[idx] + (index - offset)[:, None] * delta[idx], 0.0)

    frac = scale * (np.arange(up) * down % up) / up
    left, right = wing(frac), wing(scale - frac)
    x = np.asarray(audio, dtype=np.float64)
    pad = len(taps) + 1
    xp = np.pad(x, pad)                            # resampy stops at the signal's ends: zeros do the same
    n_out = int(len(x) * float(target) / float(sr))
    out = np.empty(n_out, dtype=np.float32)
    for lo in range(0, n_out, chunk):
        t = np.arange(lo, min(lo + chunk, n_out), dtype=np.int64)
        n, phase = t * down // up + pad, t % up
        out[lo:lo + len(t)] = (np.einsum("ij,ij->i", left[phase], xp[n[:, None] - taps])
                               + np.einsum("ij,ij->i", right[phase], xp[n[:, None] + 1 + taps]))
    return out
