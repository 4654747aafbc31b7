"""The `visual` extractor: a face embedding for every decoded frame of every manifest video.

Rows (data/features/visual/store-XX.zarr, written by avfusion/extract.py): the tracked person's 512-d
InceptionResnetV1 embedding (and the 1792-d pooled features with `keep_pooled`), `valid`, the face box
and MTCNN's five facial points (`landmarks`, x, y per point, the `landmarks` extractor's input) in
full-resolution pixels, the MTCNN probability, frame index and timestamp.
"""
from __future__ import annotations

import numpy as np

from avfusion.extract import Extractor
from avfusion.faces import EMBEDDING_DIM, POOLED_DIM, FaceTrackEmbedder

WEIGHTS = "data/weights/visual.pt"
EXTRACTOR = "facenet-mtcnn-inception-resnet-v1/2"   # /2: the landmarks column


class FaceNetExtractor(Extractor):
    """MTCNN + InceptionResnetV1 (avfusion/faces.py). Each trial of a file tracks its own person
    (Aff-Wild2 `_left` / `_right`), so trials do not share rows."""

    name = "visual"
    version = EXTRACTOR
    weights = WEIGHTS
    # batch_size too: the detector and the embedding net run on batches of that many frames, and CPU
    # kernels round differently per batch shape (measured: dvc.yaml). Stores and workers do not.
    output_params = ("detect_size", "min_face", "margin", "keep_pooled", "batch_size", "detect_every")

    def __init__(self, params: dict, device: str):
        super().__init__(params, device)
        self.dim = EMBEDDING_DIM
        self.columns = {"box": ((4,), "float32"), "landmarks": ((10,), "float32"), "prob": ((), "float32")}
        if params["keep_pooled"]:
            self.columns["pooled"] = ((POOLED_DIM,), "float32")
        self.precision = "float32" if device == "cpu" else "cuda-fp16"

    def load(self) -> None:
        p = self.params
        self.embedder = FaceTrackEmbedder(self.weights, self.device, p["detect_size"], p["min_face"], p["margin"],
                                          p["batch_size"], p["keep_pooled"], p["detect_every"])

    def rows(self, video: dict) -> dict[str, np.ndarray]:
        return self.embedder.embed_video(video["path"], video.get("person") or "")
