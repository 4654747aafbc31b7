"""The OpenL3 audio network (Cramer et al. 2019) in PyTorch, loading the official Keras HDF5 weights.

Matches openl3 0.4.2 with its kapre 0.4.1 front end (docs/design.md §4):
- audio at 48 kHz (other rates resampled with resampy's `kaiser_best` filter, ported below), 1 s windows;
  with `center=True` window k is centred on k·hop (the signal is padded with 0.5 s of zeros in front);
- spectrogram: `tf.signal.stft` framing (periodic Hann, hop 242, no centring; `pad_end` for the mel
  inputs), magnitude, Slaney mel filterbank (librosa's default), then openl3's own decibel scaling:
  10·log10(max(x, 1e-10)) minus the window's maximum, floored at -80 dB;
- network: input batch norm, four blocks of two 3×3 convs (64, 128, 256, 512 channels) with batch norm
  and ReLU, max-pooling between blocks; the last conv (`audio_embedding_layer`) has neither; a final
  max-pool sets the embedding size, flattened in Keras' (freq, time, channel) order.
Batch norms that follow a conv are folded into it at load time (same result, one pass less). The
front end is avfusion/openl3/frontend.py, the weight files avfusion/openl3/weights.py, the resampler
avfusion/openl3/resample.py.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avfusion.openl3.frontend import FRONT_ENDS, SAMPLE_RATE, Spectrogram

WINDOW = SAMPLE_RATE                 # samples per 1 s window
CPU_MICRO_BATCH = 2                  # windows per conv pass on a CPU (see OpenL3.forward)
CHANNELS = (64, 64, 128, 128, 256, 256, 512, 512)
FINAL_POOL = {  # (freq, time) pooling of the last feature map for each embedding size
    "linear": {6144: (8, 8), 512: (32, 24)},
    "mel128": {6144: (4, 8), 512: (16, 24)},
    "mel256": {6144: (8, 8), 512: (32, 24)},
}


def _check(input_repr: str, embedding_size: int) -> None:
    if input_repr not in FRONT_ENDS:
        raise ValueError(f"input_repr must be one of {sorted(FRONT_ENDS)}, not {input_repr!r}")
    if embedding_size not in FINAL_POOL[input_repr]:
        raise ValueError(f"embedding_size must be 512 or 6144, not {embedding_size!r}")


class OpenL3(nn.Module):
    """Waveform windows [B, 48000] at 48 kHz -> embeddings [B, embedding_size]."""

    def __init__(self, input_repr: str, embedding_size: int):
        super().__init__()
        _check(input_repr, embedding_size)
        self.input_repr, self.embedding_size = input_repr, embedding_size
        self.spectrogram = Spectrogram(input_repr)
        self.register_buffer("input_scale", torch.ones(1))   # the input batch norm, as an affine map
        self.register_buffer("input_shift", torch.zeros(1))
        channels_in = (1,) + CHANNELS[:-1]
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in zip(channels_in, CHANNELS))
        self.final_pool = FINAL_POOL[input_repr][embedding_size]
        self.autocast = False

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        x = spec * self.input_scale + self.input_shift
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i == len(self.convs) - 1:
                break                                   # the embedding layer: no batch norm, no ReLU
            x = F.relu(x)
            if i % 2 == 1:
                x = F.max_pool2d(x, 2, 2)
        # Keras pools with padding='same'; every configured pool size divides the map exactly.
        x = F.max_pool2d(x, self.final_pool, self.final_pool)
        return x.permute(0, 2, 3, 1).flatten(1)        # Keras flattens (freq, time, channel)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        spec = self.spectrogram(waves.float())          # FFT and logs stay in float32
        spec = spec.contiguous(memory_format=torch.channels_last)
        if waves.is_cuda:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                return self.features(spec).float()
        # On a CPU, a few windows at a time keep the first block's activations (13 MB per mel256
        # window) in the L3 cache: measured ~25% faster than whole batches of 32.
        return torch.cat([self.features(part) for part in spec.split(CPU_MICRO_BATCH)])

    @torch.inference_mode()
    def embed_centred(self, audio: np.ndarray, centres: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Embeddings [len(centres), D] of the 1 s windows centred on sample positions `centres` of
        48 kHz mono `audio`; the signal is taken as zero outside its extent."""
        device = self.input_scale.device
        padded = np.zeros(len(audio) + 2 * WINDOW, dtype=np.float32)
        padded[WINDOW:WINDOW + len(audio)] = audio
        views = np.lib.stride_tricks.sliding_window_view(padded, WINDOW)
        # window of centre c starts at c - WINDOW/2 (+ WINDOW of padding); windows fully outside are all zeros
        starts = np.clip(np.asarray(centres, dtype=np.int64) + WINDOW // 2, 0, len(views) - 1)
        out = np.empty((len(starts), self.embedding_size), dtype=np.float32)
        for lo in range(0, len(starts), batch_size):
            batch = torch.from_numpy(views[starts[lo:lo + batch_size]].copy()).to(device, non_blocking=True)
            out[lo:lo + len(batch)] = self(batch).cpu().numpy()
        return out
