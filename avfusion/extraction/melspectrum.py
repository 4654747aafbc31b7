"""A log mel spectrogram and its cepstrum on each video frame, with torch (torch.fft): the `logmel` and
`mfcc` extractors.

16 kHz audio is cut into 25 ms Hann windows every 10 ms (the speech front end of HTK and Kaldi);
each window gives the log of 64 HTK-mel band energies (triangles on 0-8 kHz over the power
spectrum, log(energy + 1e-6)), and the MFCCs are the first 20 coefficients of their orthonormal
DCT-II. A video frame's row is the mean of those 10 ms rows over the frame's interval, weighted by
overlap (avfusion.framewise), like the vad and egemaps extractors: every window counts once at any
frame rate, whereas one 25 ms window per 40 ms frame would ignore 15 ms of each frame. The mean is
taken after the log (the usual average of log-mel frames), and as the DCT is linear the MFCC row is
the DCT of the log-mel row. Computed in float64 (stored as float32), so the result does not depend
on torch's summation order.
"""
from __future__ import annotations

import numpy as np
import scipy.fft
import torch

from avfusion.extraction.framewise import SAMPLE_RATE, FrameFeatures, frame_audio, frame_intervals, interval_mean

WINDOW = 400            # 25 ms
HOP = 160               # 10 ms
N_FFT = 512
N_MELS = 64
N_MFCC = 20
FLOOR = 1e-6            # added to band energies before the log: silence stays finite
BLOCK = 6000            # windows per FFT call (60 s of audio): bounds memory on long videos


def hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE) -> np.ndarray:
    """[n_fft // 2 + 1, n_mels] triangles, equally spaced on the HTK mel scale from 0 to rate / 2,
    each peaking at 1 on its centre frequency (no area normalisation)."""
    bins = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(0, hz_to_mel(rate / 2), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).T


class LogMel:
    """`frames(path, times)` gives the log-mel rows, or the MFCC rows when `mfcc` is true."""

    def __init__(self, mfcc: bool = False, n_mels: int = N_MELS, n_mfcc: int = N_MFCC):
        self.mfcc = mfcc
        self.filterbank = torch.from_numpy(mel_filterbank(n_mels))
        self.n_mfcc = n_mfcc
        self.window = torch.hann_window(WINDOW, periodic=True, dtype=torch.float64)
        self.names = [f"mfcc_{i:02d}" for i in range(n_mfcc)] if mfcc else [f"mel_{i:02d}" for i in range(n_mels)]
        self.provenance = {"extractor": "mfcc" if mfcc else "logmel", "torch": torch.__version__,
                           "sample_rate": SAMPLE_RATE, "window": WINDOW, "hop": HOP, "n_fft": N_FFT,
                           "n_mels": n_mels, "mel_scale": "htk", "log_floor": FLOOR,
                           **({"n_mfcc": n_mfcc, "dct": "II, orthonormal"} if mfcc else {}),
                           "per_frame": "overlap-weighted mean of 10 ms rows over the frame interval"}

    def log_mel(self, samples: np.ndarray) -> np.ndarray:
        """[m, n_mels] log band energies of the 25 ms windows starting every 10 ms (whole windows only)."""
        audio = torch.from_numpy(np.asarray(samples, np.float64))
        if len(audio) < WINDOW:
            return np.zeros((0, self.filterbank.shape[1]))
        rows = [torch.log(torch.fft.rfft(block * self.window, n=N_FFT).abs().square() @ self.filterbank + FLOOR)
                for block in audio.unfold(0, WINDOW, HOP).split(BLOCK)]
        return torch.cat(rows).numpy()

    def frames(self, path: str, times: np.ndarray) -> FrameFeatures:
        samples, start, valid = frame_audio(path, times)
        rows = self.log_mel(samples)
        # window k is centred at (k HOP + WINDOW / 2) samples and stands for HOP samples around it
        t0 = start + (WINDOW / 2 - HOP / 2) / SAMPLE_RATE
        out = interval_mean(rows, t0, HOP / SAMPLE_RATE, *frame_intervals(times))
        if self.mfcc:
            out = scipy.fft.dct(out, type=2, norm="ortho", axis=1)[:, :self.n_mfcc]
        out[~valid] = 0.0
        return FrameFeatures(out.astype(np.float32), valid, list(self.names), dict(self.provenance))
