"""The `audio` stage: one OpenL3 embedding per decoded video frame, into Zarr feature stores.

Row t of a video is its frame t (docs/design.md §4): the 1 s window is centred on the frame's timestamp.
With `audio.rate` > 0 embeddings are computed on a coarser grid of that many per second and each frame
takes the nearest one, so rows stay one-to-one with frames. A frame is valid when the audio around it
(`silence_window` seconds, centred) is louder than `silence_db` dBFS RMS; frames of a video without an
audio stream, silent frames and frames past the end of the audio get a zero vector and valid = false.
"""
from __future__ import annotations

import os
import time
from collections import Counter

import av
import numpy as np
from tqdm import tqdm

from avfusion import media, openl3
from avfusion.buckets import WORKER_ENV, Videos, local_device, run_extraction_stage, skip_video
from avfusion.media import MediaError
from avfusion.params import load_params, on_error, resolve_device
from avfusion.store import StoreWriter, file_sha256, store_path

WEIGHTS = "data/weights/audio.h5"
OUT_DIR = "data/features/audio"
SKIP_REPORT = "reports/skipped_audio.json"   # videos passed over with on_error: skip
EXTRACTOR = "openl3-pytorch/1"
OUTPUT_PARAMS = ("input_repr", "embedding_size", "rate", "silence_db", "silence_window")


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
        self.precision = "bf16" if self.model.autocast else "fp32"
        self.windows = 0                          # embeddings computed so far (for throughput)

    def audible(self, audio: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """Whether the RMS of `audio` (48 kHz) around each centre sample reaches `silence_db` dBFS."""
        half = max(1, int(self.silence_window * openl3.SAMPLE_RATE / 2))
        energy = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
        lo, hi = np.clip(centres - half, 0, len(audio)), np.clip(centres + half, 0, len(audio))
        mean_square = (energy[hi] - energy[lo]) / (2 * half)       # zeros outside the audio
        return 10 * np.log10(np.maximum(mean_square, 1e-20)) >= self.silence_db

    def embed_video(self, path: str, frame_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings [n, D] float32, valid [n] bool) for the frames at `frame_times` (video clock)."""
        frame_times = np.asarray(frame_times, dtype=np.float64)
        emb = np.zeros((len(frame_times), self.dim), np.float32)
        audio, sr, start = read_audio_native(path)
        if audio.size == 0:
            return emb, np.zeros(len(frame_times), bool)
        audio = openl3.resample(audio, sr)

        def sample_at(times):
            return np.round((times - start) * openl3.SAMPLE_RATE).astype(np.int64)
        valid = self.audible(audio, sample_at(frame_times))
        # the window each valid frame uses: its own, or the nearest point of the `rate` grid
        slot = np.round(frame_times * self.rate).astype(np.int64) if self.rate else np.arange(len(frame_times))
        slots, row_of = np.unique(slot[valid], return_inverse=True)
        centres = slots / self.rate if self.rate else frame_times[slots]
        if len(slots):
            emb[valid] = self.model.embed_centred(audio, sample_at(centres), self.batch_size)[row_of]
        self.windows += len(slots)
        return emb, valid


def embed_rows(embedder: AudioEmbedder, path: str, rows_with_path: int, shared: dict) -> tuple:
    """(frame times, embeddings, valid) of a video file, computed once for all the rows that share it
    (Aff-Wild2 `_left`/`_right`, which `plan` puts in one store): `shared` keeps a result, with the
    count of its rows still to write, until the last of them went through here."""
    if path in shared:
        result, rows_left = shared.pop(path)
    else:
        times = media.frame_times(path)
        result, rows_left = (times, *embedder.embed_video(path, times)), rows_with_path
    if rows_left > 1:
        shared[path] = (result, rows_left - 1)
    return result


def extract_store(bucket: int, videos: Videos) -> None:
    """Write one store (run by `run_buckets`, possibly in a worker process); resumes after its last commit."""
    params = load_params("audio")
    embedder = AudioEmbedder(WEIGHTS, params["input_repr"], params["embedding_size"], params["rate"],
                             local_device(params["device"]), params["batch_size"], params["silence_db"],
                             params["silence_window"])
    provenance = {"extractor": EXTRACTOR, "params": {k: params[k] for k in OUTPUT_PARAMS},
                  "precision": embedder.precision, "weights_sha256": file_sha256(WEIGHTS),
                  "videos_sha256": videos.fingerprints()}
    writer = StoreWriter(store_path(OUT_DIR, bucket), embedder.dim, provenance, videos.ids)
    uses, shared = Counter(os.path.normpath(v["path"]) for v in videos.todo(writer.committed)), {}
    began, done = time.perf_counter(), len(writer.committed)
    with tqdm(videos.todo(writer.committed), desc=f"audio store {bucket}", unit="video",
              initial=done, total=len(videos), position=int(os.environ.get(WORKER_ENV, 0))) as bar:
        for video in bar:
            path = os.path.normpath(video["path"])
            try:
                times, emb, valid = embed_rows(embedder, path, uses[path], shared)
            except MediaError as exc:
                if on_error(params, "audio") == "fail":
                    raise
                skip_video(writer, video, exc)
                continue
            writer.append(video["video_id"], embedding=emb, valid=valid, frame=np.arange(len(times)), time=times)
            bar.set_postfix(windows_per_s=f"{embedder.windows / (time.perf_counter() - began):.1f}")
