"""The `audio` stage: one OpenL3 embedding per decoded video frame, into Zarr feature stores.

Row t of a video is its frame t (DESIGN.md §4): the 1 s window is centred on the frame's timestamp.
With `audio.rate` > 0 embeddings are computed on a coarser grid of that many per second and each frame
takes the nearest one, so rows stay one-to-one with frames. A frame is valid when the audio around it
(`silence_window` seconds, centred) is louder than `silence_db` dBFS RMS; frames of a video without an
audio stream, silent frames and frames past the end of the audio get a zero vector and valid = false.
"""
from __future__ import annotations

import csv
import glob
import os
import shutil
import sys
import time
from collections import Counter

import av
import numpy as np
import torch
from tqdm import tqdm

from stages import media, openl3
from stages.params import load_params, resolve_device
from stages.store import StoreWriter, bucket_of, file_sha256, store_path

WEIGHTS = "data/weights/audio.h5"
OUT_DIR = "data/features/audio"
MANIFEST = "data/manifest.csv"
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


def read_manifest(path: str = MANIFEST) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main() -> None:
    params = load_params("audio")
    videos = read_manifest()
    embedder = AudioEmbedder(WEIGHTS, params["input_repr"], params["embedding_size"], params["rate"],
                             params["device"], params["batch_size"], params["silence_db"], params["silence_window"])
    provenance = {"extractor": EXTRACTOR, "params": {k: params[k] for k in OUTPUT_PARAMS},
                  "precision": embedder.precision, "weights_sha256": file_sha256(WEIGHTS)}
    stores = params["stores"]
    os.makedirs(OUT_DIR, exist_ok=True)
    current = {store_path(OUT_DIR, b) for b in range(stores)}
    for stale in set(glob.glob(os.path.join(OUT_DIR, "store-*.zarr"))) - current:
        shutil.rmtree(stale)                      # left by a run with more stores
    writers = [StoreWriter(store_path(OUT_DIR, b), embedder.dim, provenance,
                           [v["video_id"] for v in videos if bucket_of(v["video_id"], stores) == b])
               for b in range(stores)]
    done = {vid for w in writers for vid in w.committed}
    todo = [v for v in videos if v["video_id"] not in done]
    pending = Counter(os.path.normpath(v["path"]) for v in todo)   # _left/_right rows share one audio track
    computed: dict[str, tuple] = {}
    began = time.perf_counter()
    with tqdm(todo, unit="video", desc="audio", initial=len(done), total=len(videos)) as bar:
        for video in bar:
            path = os.path.normpath(video["path"])
            if path not in computed:
                times = media.frame_times(path)
                computed[path] = (times, *embedder.embed_video(path, times))
            times, emb, valid = computed[path]
            pending[path] -= 1
            if not pending[path]:
                del computed[path]
            writers[bucket_of(video["video_id"], stores)].append(
                video["video_id"], embedding=emb, valid=valid, frame=np.arange(len(times)), time=times)
            bar.set_postfix(windows_per_s=f"{embedder.windows / (time.perf_counter() - began):.1f}")
    print(f"audio: {len(todo)} videos embedded ({embedder.windows} windows, {embedder.precision}, "
          f"torch threads {torch.get_num_threads()}), {len(done)} already done")


if __name__ == "__main__":
    try:
        main()
    except media.MediaError as exc:
        sys.exit(f"audio: {exc}")
