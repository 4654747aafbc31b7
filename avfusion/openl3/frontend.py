"""OpenL3's front end (kapre 0.4.1 as openl3 0.4.2 configures it): 1 s waveforms at 48 kHz to decibel
spectrograms. `tf.signal.stft` framing (periodic Hann, hop 242, no centring; `pad_end` for the mel
inputs), magnitude, Slaney mel filterbank (librosa's default), then openl3's own decibel scaling:
10·log10(max(x, 1e-10)) minus the window's maximum, floored at -80 dB."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 48000
STFT_HOP = 242
DB_FLOOR, DB_RANGE = 1e-10, 80.0     # openl3's kapre_v0_1_4_magnitude_to_decibel
FRONT_ENDS = {  # n_fft, mel bands (None: linear magnitude), pad_end
    "linear": (512, None, False),
    "mel128": (2048, 128, True),
    "mel256": (2048, 256, True),
}


def _hz_to_mel(hz):
    """Slaney's mel scale (librosa, htk=False): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step, hz * 3.0 / 200.0)


def _mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), mel * 200.0 / 3.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with its defaults (Slaney scale and area norm): [n_mels, n_fft//2+1]."""
    fft_hz = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


class Spectrogram(nn.Module):
    """1 s waveforms [B, 48000] -> decibel spectrogram [B, 1, freq, time] as kapre computes it."""

    def __init__(self, input_repr: str):
        super().__init__()
        self.n_fft, n_mels, self.pad_end = FRONT_ENDS[input_repr]
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True, dtype=torch.float32))
        fbank = mel_filterbank(SAMPLE_RATE, self.n_fft, n_mels).T if n_mels else None
        self.register_buffer("mel", None if fbank is None else torch.from_numpy(np.ascontiguousarray(fbank)))

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        if self.pad_end:   # tf.signal.frame(pad_end=True): ceil(n / hop) frames, zeros after the end
            frames = -(-waves.shape[-1] // STFT_HOP)
            waves = F.pad(waves, (0, (frames - 1) * STFT_HOP + self.n_fft - waves.shape[-1]))
        frames = waves.unfold(-1, self.n_fft, STFT_HOP) * self.window
        spec = torch.fft.rfft(frames, n=self.n_fft).abs()                 # [B, time, freq]
        if self.mel is not None:
            spec = spec @ self.mel
        db = 10.0 * torch.log10(spec.clamp_min(DB_FLOOR))
        db = torch.maximum(db - db.amax(dim=(1, 2), keepdim=True), torch.tensor(-DB_RANGE, device=db.device))
        return db.transpose(1, 2).unsqueeze(1)
