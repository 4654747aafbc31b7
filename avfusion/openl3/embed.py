"""openl3.get_audio_embedding for one signal, on the ported network: the reference the tests compare with."""
from __future__ import annotations

import math
import os

import numpy as np
import torch

from avfusion.openl3.frontend import SAMPLE_RATE
from avfusion.openl3.network import WINDOW
from avfusion.openl3.resample import resample
from avfusion.openl3.weights import load_model


def window_count(samples: int, hop: int, center: bool) -> int:
    """openl3's number of windows for a 48 kHz signal of `samples` samples."""
    length = samples + (WINDOW // 2 if center else 0)
    return 1 if length <= WINDOW else 1 + int(math.ceil((length - WINDOW) / hop))


def embed(audio, sr, weights, input_repr, embedding_size, hop_size, center=True, batch_size=32, device=None):
    """openl3.get_audio_embedding for one signal: (embeddings [T, D] float32, timestamps [T] seconds).

    `audio` is [n] or [n, channels] (channels are averaged); `weights` is an official-format file.
    """
    audio = np.asarray(audio)
    if audio.size == 0:
        raise ValueError("empty audio")
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    audio = resample(audio, sr)
    hop = int(hop_size * SAMPLE_RATE)
    count = window_count(len(audio), hop, center)
    # window k covers [k·hop, k·hop + 1 s) of the (front-padded when centred) signal
    centres = np.arange(count) * hop + (0 if center else WINDOW // 2)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(os.fspath(weights), input_repr, embedding_size, device)
    return model.embed_centred(audio, centres, batch_size), np.arange(count) * hop_size
