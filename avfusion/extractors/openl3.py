"""`openl3`: one OpenL3 embedding per decoded video frame (the network: avfusion/openl3/).

Row t of a video is its frame t (docs/design.md §4): the 1 s window is centred on the frame's timestamp.
With `rate` > 0 embeddings are computed on a coarser grid of that many per second and each frame
takes the nearest one, so rows stay one-to-one with frames. A frame is valid when the audio around it
(`silence_window` seconds, centred) is louder than `silence_db` dBFS RMS; frames of a video without an
audio stream, silent frames and frames past the end of the audio get a zero vector and valid = false.
With `valid_from: vad` the mask is silero-vad's instead (the vad extractor: speech probability of the
frame >= `vad_threshold`), so a loud tone or music is not taken for a voice; the level gate stays the
default.

Weights: `random` (seeded, offline), `env` or `music` (the official Keras files for `input_repr`,
pinned by SHA-256), or the path of an official-layout .h5 file.
"""
from __future__ import annotations

import os
from typing import Literal

import av
import numpy as np

from avfusion.extraction.base import DeviceParams, Extractor, Video, register, weights_param
from avfusion.extraction.weights import Download, copy_user_file, fetch
from avfusion.openl3.frontend import FRONT_ENDS, SAMPLE_RATE
from avfusion.openl3.network import FINAL_POOL
from avfusion.openl3.resample import resample
from avfusion.openl3.weights import load_model, load_weights, write_random_weights
from avfusion.params import integer, number
from avfusion.sources import media

FILE = "openl3.h5"
# the models branch at a fixed commit; weights CC BY 4.0
OPENL3_URL = ("https://github.com/marl/openl3/raw/c2321e8c1e68213357431f1868380a0ef224ce03/"
              "openl3_audio_{repr}_{content}-v0_4_0.h5.gz")
# SHA-256 of the .h5.gz downloads; the others have no published hash: download them yourself and set
# openl3.weights to the .h5 file
PINNED: dict[tuple[str, str], str] = {
    ("mel256", "music"): "e379f41e880b78e157c199ebddac80d3764e6a46282bcccdbe875bcf538f9afd",
}
CONTENTS = ("env", "music")


def official(input_repr: str, content: str) -> Download:
    return Download(OPENL3_URL.format(repr=input_repr, content=content),
                    PINNED.get((input_repr, content), ""), unpack="gz")


class Params(DeviceParams):
    weights: weights_param("random", *CONTENTS) = "random"
    seed: integer(ge=0) = 0
    input_repr: Literal[tuple(FRONT_ENDS)] = "mel128"
    embedding_size: Literal[tuple(sorted({s for sizes in FINAL_POOL.values() for s in sizes}))] = 512
    rate: number(ge=0) = 5                # embeddings per second (0 = one per video frame); rows stay aligned to frames
    silence_db: number(le=0) = -60        # a frame is valid when the audio RMS around it reaches this (dBFS) ...
    silence_window: number(gt=0) = 0.25   # ... over this many seconds centred on the frame
    valid_from: Literal["level", "vad"] = "level"   # the RMS gate above | silero-vad
    vad_threshold: number(ge=0, le=1) = 0.5          # valid_from: vad: valid when the speech probability reaches this
    batch_size: integer(ge=1) = 32


def read_audio_native(path: str) -> tuple[np.ndarray, int, float]:
    """Mono audio at the stream's own rate (resampled later as openl3 does), its rate, and its start time."""
    if not media.probe(path).has_audio:          # probe also turns unreadable files into MediaError
        return np.zeros(0, np.float32), SAMPLE_RATE, 0.0
    with av.open(path) as container:
        rate = container.streams.audio[0].rate or SAMPLE_RATE
    samples, start = media.read_audio(path, rate)
    return samples, rate, start


class AudioEmbedder:
    """OpenL3 embeddings aligned to video frames; the network is built once and reused per video."""

    def __init__(self, weights_path: str, input_repr: str, embedding_size: int, rate: float = 0,
                 device: str = "cpu", batch_size: int = 32, silence_db: float = -60.0,
                 silence_window: float = 0.25):
        self.model = load_model(weights_path, input_repr, embedding_size, device)
        self.dim, self.rate, self.batch_size = embedding_size, rate, batch_size
        self.silence_db, self.silence_window = silence_db, silence_window
        self.windows = 0                          # embeddings computed so far (for throughput)

    def audible(self, audio: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """Whether the RMS of `audio` (48 kHz) around each centre sample reaches `silence_db` dBFS."""
        half = max(1, int(self.silence_window * SAMPLE_RATE / 2))
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
        audio = resample(audio, sr)

        def sample_at(times):
            return np.round((times - start) * SAMPLE_RATE).astype(np.int64)
        valid = self.audible(audio, sample_at(frame_times)) if gate is None else np.asarray(gate, bool)
        # the window each valid frame uses: its own, or the nearest point of the `rate` grid
        slot = np.round(frame_times * self.rate).astype(np.int64) if self.rate else np.arange(len(frame_times))
        slots, row_of = np.unique(slot[valid], return_inverse=True)
        centres = slots / self.rate if self.rate else frame_times[slots]
        if len(slots):
            emb[valid] = self.model.embed_centred(audio, sample_at(centres), self.batch_size)[row_of]
        self.windows += len(slots)
        return emb, valid


@register
class OpenL3Extractor(Extractor):
    """OpenL3 on the audio around each frame. The rows depend on the file only, so the trials of one
    file (Aff-Wild2 `_left` / `_right`) share them: the runner extracts the file once."""

    name = "openl3"
    version = "openl3-pytorch/1"
    Params = Params
    backbone = True
    weight_names = ("random", *CONTENTS)
    # batch_size, stores and workers only change speed or layout (measured: dvc.yaml)
    output_params = ("input_repr", "embedding_size", "rate", "silence_db", "silence_window")
    per_file = True

    def __init__(self, params: dict, device: str = "cpu"):
        super().__init__(params, device)
        self.dim = params["embedding_size"]
        self.precision = "bf16" if device.startswith("cuda") else "fp32"   # load_model's autocast

    @classmethod
    def weight_files(cls, params: dict) -> list[str]:
        return [FILE]

    @classmethod
    def weights_spec(cls, params: dict) -> dict:
        return {**super().weights_spec(params), "input_repr": params["input_repr"]}

    @classmethod
    def make_weights(cls, params: dict, directory: str) -> None:
        out, spec = os.path.join(directory, FILE), params["weights"]
        if spec == "random":
            write_random_weights(out, params["input_repr"], params["embedding_size"], params["seed"])
            return
        if spec in CONTENTS:
            fetch(official(params["input_repr"], spec), out, "openl3.weights")
        else:
            copy_user_file(spec, out, "openl3.weights")
        from avfusion.openl3.network import OpenL3
        load_weights(OpenL3(params["input_repr"], params["embedding_size"]), out)   # refuse a wrong file now

    def provenance(self) -> dict:
        # Recorded only when not the default, so that the level-gated stores stay byte-identical
        # to those written before `valid_from` existed.
        vad = {"valid_from": "vad", "vad_threshold": self.params["vad_threshold"]} if self.by_vad else {}
        return {**super().provenance(), **vad}

    @classmethod
    def settings(cls, provenance: dict) -> dict:
        return {**super().settings(provenance), "valid_from": provenance.get("valid_from", "level"),
                **({"vad_threshold": provenance["vad_threshold"]} if "vad_threshold" in provenance else {})}

    @property
    def by_vad(self) -> bool:
        return self.params.get("valid_from", "level") == "vad"

    def load(self) -> None:
        p = self.params
        self.embedder = AudioEmbedder(self.weight_path(), p["input_repr"], p["embedding_size"], p["rate"],
                                      self.device, p["batch_size"], p["silence_db"], p["silence_window"])
        if self.by_vad:
            from avfusion.extractors.vad import VoiceActivity
            self.voice = VoiceActivity()

    def rows(self, video: Video) -> dict[str, np.ndarray]:
        gate = None
        if self.by_vad:
            speech = self.voice.frames(video.path, video.times)
            gate = speech.valid & (speech.features[:, 0] >= self.params["vad_threshold"])
        embedding, valid = self.embedder.embed_video(video.path, video.times, gate)
        return {"embedding": embedding, "valid": valid, "time": video.times}
