"""`vad`: the probability of speech at each video frame, from silero-vad (MIT; its weights ship in the
wheel, so it works offline).

silero-vad scores 512-sample chunks of 16 kHz audio (32 ms) with a recurrent network. A frame's value
is the mean of the chunk probabilities over the frame's interval, weighted by overlap
(avfusion.framewise): at 25 fps a frame spans 1.25 chunks, so taking the chunk under the frame centre
would skip every fifth chunk, while the mean uses each chunk once and gives the same answer at any
frame rate. Frames outside the audio, or of a video without audio, are 0 and not valid.

The network runs on one torch thread: it scores one 32 ms chunk at a time, too little work to share
(on 2 cores shared with other work, 2 threads measured 30x slower). Importing silero_vad also sets one
thread for the whole process; `torch_threads` puts the caller's setting back. The results do not
depend on the thread count (tests/test_extractors_audio.py checks 1 vs 2).
"""
from __future__ import annotations

import warnings
from importlib.metadata import version

import numpy as np
import torch

from avfusion.extraction.base import register
from avfusion.extraction.framewise import (
    SAMPLE_RATE,
    FrameFeatures,
    FramewiseExtractor,
    frame_audio,
    frame_intervals,
    interval_mean,
)
from avfusion.threads import torch_threads

NAMES = ["speech"]
CHUNK = 512             # samples per silero-vad score at 16 kHz


def load_model() -> torch.jit.ScriptModule:
    """silero-vad's TorchScript model from its wheel."""
    with torch_threads(1), warnings.catch_warnings():
        # the library's own deprecation notices (importlib path, torch.jit.load): nothing to act on here
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        from silero_vad import load_silero_vad
        return load_silero_vad()


class VoiceActivity:
    """Built once (loads the model), then `frames(path, times)` per video."""

    def __init__(self):
        self.model = load_model()
        self.provenance = {"extractor": "vad", "silero_vad": version("silero-vad"), "torch": torch.__version__,
                           "sample_rate": SAMPLE_RATE, "chunk": CHUNK,
                           "per_frame": "overlap-weighted mean of chunk probabilities over the frame interval"}

    @torch.inference_mode()
    def chunk_probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Speech probability of each 512-sample chunk of 16 kHz audio (the last one zero-padded)."""
        if len(samples) == 0:
            return np.zeros(0, np.float32)
        with torch_threads(1):
            probs = self.model.audio_forward(torch.from_numpy(np.ascontiguousarray(samples, np.float32))[None],
                                             SAMPLE_RATE)
        return probs[0].numpy()

    def frames(self, path: str, times: np.ndarray) -> FrameFeatures:
        samples, start, valid = frame_audio(path, times)
        probs = self.chunk_probabilities(samples)
        speech = interval_mean(probs, start, CHUNK / SAMPLE_RATE, *frame_intervals(times))
        speech[~valid] = 0.0
        return FrameFeatures(speech.astype(np.float32), valid, list(NAMES), dict(self.provenance))


@register
class VadExtractor(FramewiseExtractor):
    """silero-vad speech probability (`vad.speech`); valid = the frame lies inside the audio."""
    name, version = "vad", "silero-vad/1"

    def build(self):
        return VoiceActivity(), NAMES
