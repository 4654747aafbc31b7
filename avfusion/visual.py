"""DVC stage `visual`: a face embedding for every decoded frame of every manifest video.

    python -m avfusion.visual        (params: visual; or under torchrun, one rank per GPU)

Rows go to `data/features/visual/store-XX.zarr` (bucket of the video id): the tracked person's
512-d InceptionResnetV1 embedding (and the 1792-d pooled features with `keep_pooled`), `valid`, the
face box in full-resolution pixels, the MTCNN probability, frame index and timestamp. Each store is
written by one process and resumes after its last committed video (docs/design.md §5).
"""
from __future__ import annotations

import os
import time

import numpy as np
from tqdm import tqdm

from avfusion.buckets import WORKER_ENV, Videos, local_device, run_extraction_stage, skip_video
from avfusion.faces import EMBEDDING_DIM, POOLED_DIM, FaceTrackEmbedder
from avfusion.media import MediaError
from avfusion.params import load_params, on_error
from avfusion.store import StoreWriter, file_sha256, store_path

WEIGHTS = "data/weights/visual.pt"
OUT_DIR = "data/features/visual"
SKIP_REPORT = "reports/skipped_visual.json"   # videos passed over with on_error: skip
EXTRACTOR = "facenet-mtcnn-inception-resnet-v1/1"
# Params that change the stored values besides the weights (hashed instead); batch size, stores and
# workers only change speed or layout.
OUTPUT_PARAMS = ("detect_size", "min_face", "margin", "keep_pooled", "detect_every")


def make_embedder(params: dict, device: str) -> FaceTrackEmbedder:
    return FaceTrackEmbedder(WEIGHTS, device, params["detect_size"], params["min_face"], params["margin"],
                             params["batch_size"], params["keep_pooled"], params["detect_every"])


def extract_store(bucket: int, videos: Videos) -> None:
    """Write one store (run by `run_buckets`, possibly in a worker process); resumes after its last commit."""
    params = load_params("visual")
    device = local_device(params["device"])
    embedder = make_embedder(params, device)
    # CPU float32 and CUDA fp16 embeddings differ in the last bits: never mix them in one store.
    provenance = {"extractor": EXTRACTOR, "params": {k: params[k] for k in OUTPUT_PARAMS},
                  "precision": "float32" if device == "cpu" else "cuda-fp16",
                  "weights_sha256": file_sha256(WEIGHTS),
                  "videos_sha256": videos.fingerprints()}
    columns = {"box": ((4,), "float32"), "prob": ((), "float32")}
    if params["keep_pooled"]:
        columns["pooled"] = ((POOLED_DIM,), "float32")
    writer = StoreWriter(store_path(OUT_DIR, bucket), EMBEDDING_DIM, provenance, videos.ids, columns)
    began, frames = time.perf_counter(), 0
    with tqdm(videos.todo(writer.committed), desc=f"visual store {bucket}", unit="video",
              initial=len(writer.committed), total=len(videos),
              position=int(os.environ.get(WORKER_ENV, 0))) as bar:
        for video in bar:
            try:
                rows = embedder.embed_video(video["path"], video.get("person") or "")
            except MediaError as exc:
                if on_error(params, "visual") == "fail":
                    raise
                skip_video(writer, video, exc)
                continue
            writer.append(video["video_id"], frame=np.arange(len(rows["time"])), **rows)
            frames += len(rows["time"])
            bar.set_postfix(frames_per_s=f"{frames / (time.perf_counter() - began):.1f}")
