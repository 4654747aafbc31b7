"""The `audio` extractor: one OpenL3 embedding per decoded video frame (stores written by avfusion/extract.py).

Row t of a video is its frame t (docs/design.md §4): the 1 s window is centred on the frame's timestamp.
With `audio.rate` > 0 embeddings are computed on a coarser grid of that many per second and each frame
takes the nearest one, so rows stay one-to-one with frames. A frame is valid when the audio around it
(`silence_window` seconds, centred) is louder than `silence_db` dBFS RMS; frames of a video without an
audio stream, silent frames and frames past the end of the audio get a zero vector and valid = false.
With `valid_from: vad` the mask is silero-vad's instead (avfusion/vad.py: speech probability of the
frame >= `vad_threshold`), so a loud tone or music is not taken for a voice; the level gate stays the
default.
"""
from __future__ import annotations

import av
import numpy as np

from avfusion import media, openl3
from avfusion.extract import Extractor
from avfusion.params import resolve_device

WEIGHTS = "data/weights/audio.h5"
EXTRACTOR = "openl3-pytorch/1"


def read_audio_native(path: str) -> tuple[np.ndarray, int, float]:
    """Mono audio at the stream's own rate (resampled later as openl3 does), its rate, and its start time."""
    if not media.probe(path).has_audio:          # probe also turns unreadable files into MediaError
        return np.zeros(0, np.float32), openl3.SAMPLE_RATE, 0.0
    with av.open(path) as container:
        rate = container.streams.audio[0].rate or openl3.SAMPLE_RATE
    samples, start = media.read_audio(path, rate)
    return samples, rate, start


class AudioEmbedder:
    """OpenL3 embeddings aligned to video frames; the network is built once and reused per video."""

    def __init__(self, weights_path: str, input_repr: str, embedding_size: int, rate: float = 0,
                 device: str = "auto", batch_size: int = 32, silence_db: float = -60.0,
                 silence_window: float = 0.25):
        self.device = resolve_device(device)
        self.model = openl3.load_model(weights_path, input_repr, embedding_size, self.device)
        self.dim, self.rate, self.batch_size = embedding_size, rate, batch_size
        self.silence_db, self.silence_window = silence_db, silence_window
        self.windows = 0                          # embeddings computed so far (for throughput)

    def audible(self, audio: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """Whether the RMS of `audio` (48 kHz) around each centre sample reaches `silence_db` dBFS."""
        half = max(1, int(self.silence_window * openl3.SAMPLE_RATE / 2))
        energy = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
        lo, hi = np.clip(centres - half, 0, len(audio)), np.clip(centres + half, 0, len(audio))
        mean_square = (energy[hi] - energy[lo]) / (2 * half)       # zeros outside the audio
        return 10 * np.log10(np.maximum(mean_square, 1e-20)) >= self.silence_db

    def embed_video(self, path: str, frame_times: np.ndarray,
                    gate: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings [n, D] float32, valid [n] bool) for the frames at `frame_times` (video clock).
        `gate` [n] bool replaces the level gate as the validity mask when given."""
        frame_times = np.asarray(frame_times, dtype=np.float64)
        emb = np.zeros((len(frame_times), self.dim), np.float32)
        audio, sr, start = read_audio_native(path)
        if audio.size == 0:
            return emb, np.zeros(len(frame_times), bool)
        audio = openl3.resample(audio, sr)

        def sample_at(times):
            return np.round((times - start) * openl3.SAMPLE_RATE).astype(np.int64)
        valid = self.audible(audio, sample_at(frame_times)) if gate is None else np.asarray(gate, bool)
        # the window each valid frame uses: its own, or the nearest point of the `rate` grid
        slot = np.round(frame_times * self.rate).astype(np.int64) if self.rate else np.arange(len(frame_times))
        slots, row_of = np.unique(slot[valid], return_inverse=True)
        centres = slots / self.rate if self.rate else frame_times[slots]
        if len(slots):
            emb[valid] = self.model.embed_centred(audio, sample_at(centres), self.batch_size)[row_of]
        self.windows += len(slots)
        return emb, valid


class OpenL3Extractor(Extractor):
    """OpenL3 on the audio around each frame. The rows depend on the file only, so the trials of one
    file (Aff-Wild2 `_left` / `_right`) share them: the runner extracts the file once."""

    name = "audio"
    version = EXTRACTOR
    weights = WEIGHTS
    # batch_size, stores and workers only change speed or layout (measured: dvc.yaml)
    output_params = ("input_repr", "embedding_size", "rate", "silence_db", "silence_window")
    per_file = True

    def __init__(self, params: dict, device: str):
        super().__init__(params, device)
        self.dim = params["embedding_size"]
        self.precision = "bf16" if device.startswith("cuda") else "fp32"   # openl3.load_model's autocast

    def provenance(self) -> dict:
        # Recorded only when not the default, so that the level-gated stores stay byte-identical
        # to those written before `valid_from` existed.
        vad = {"valid_from": "vad", "vad_threshold": self.params["vad_threshold"]} if self.by_vad else {}
        return {**super().provenance(), **vad}

    @property
    def by_vad(self) -> bool:
        return self.params.get("valid_from", "level") == "vad"

    def load(self) -> None:
        p = self.params
        self.embedder = AudioEmbedder(self.weights, p["input_repr"], p["embedding_size"], p["rate"], self.device,
                                      p["batch_size"], p["silence_db"], p["silence_window"])
        if self.by_vad:
            from avfusion.vad import VoiceActivity
            self.voice = VoiceActivity()

    def rows(self, video: dict) -> dict[str, np.ndarray]:
        times = media.frame_times(video["path"])
        if self.by_vad:
            speech = self.voice.frames(video["path"], times)
            gate = speech.valid & (speech.features[:, 0] >= self.params["vad_threshold"])
            embedding, valid = self.embedder.embed_video(video["path"], times, gate)
        else:
            embedding, valid = self.embedder.embed_video(video["path"], times)
        return {"embedding": embedding, "valid": valid, "time": times}
