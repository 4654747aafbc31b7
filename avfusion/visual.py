"""The `visual` extractor: a face embedding for every decoded frame of every manifest video.

Rows (data/features/visual/store-XX.zarr, written by avfusion/extract.py): the trial's person's 512-d
InceptionResnetV1 embedding (and the 1792-d pooled features with `keep_pooled`), `valid`, the face box
in full-resolution pixels, MTCNN's five facial points (`landmarks`, x, y per point, the `landmarks`
extractor's input) in full-resolution pixels, the MTCNN probability, frame index and timestamp. With
`people: all` also `person` (the id of the track the rows follow, -1 where absent) and the `people` row
set: one row per tracked face per frame, everyone in the video (docs/design.md §5.2).
"""
from __future__ import annotations

import numpy as np

from avfusion.extract import Extractor
from avfusion.faces import EMBEDDING_DIM, POOLED_DIM, FaceTrackEmbedder
from avfusion.tracks import person_rows, trial_person

WEIGHTS = "data/weights/visual.pt"
# /2: the landmarks column, the library's crop step (other boxes on small and edge-cut faces) and
# `_left` / `_right` trials following the multi-person tracker; /3: the embedder runs channels-last
# (embeddings rounded differently, ~1e-6)
EXTRACTOR = "facenet-mtcnn-inception-resnet-v1/3"
SIDES = ("left", "right")


class FaceNetExtractor(Extractor):
    """MTCNN + InceptionResnetV1 (avfusion/faces.py). A trial follows one person: with `people: one`
    the largest central face (avfusion/faces.py FaceTracker); with `people: all`, and for every
    Aff-Wild2 `_left` / `_right` trial, one track of everyone's (avfusion/tracks.py), picked by
    position for a side, else the longest on screen. Trials of one file share that decode and detection."""

    name = "visual"
    version = EXTRACTOR
    weights = WEIGHTS
    per_file = True
    # batch_size too: the detector and the embedding net run on batches of that many frames, and CPU
    # kernels round differently per batch shape (measured: dvc.yaml). Stores and workers do not.
    output_params = ("detect_size", "min_face", "margin", "keep_pooled", "batch_size", "detect_every")

    def __init__(self, params: dict, device: str):
        super().__init__(params, device)
        self.dim = EMBEDDING_DIM
        self.columns = {"box": ((4,), "float32"), "landmarks": ((10,), "float32"), "prob": ((), "float32")}
        if params["keep_pooled"]:
            self.columns["pooled"] = ((POOLED_DIM,), "float32")
        self.everyone = params.get("people", "one") == "all"
        if self.everyone:
            self.row_sets = {"people": {"frame": ((), "int32"), "person": ((), "int32"),
                                        **self.columns,
                                        "embedding": ((EMBEDDING_DIM,), "float32")}}
            self.columns = {**self.columns, "person": ((), "int32")}
        self.precision = "float32" if device == "cpu" else "cuda-fp16"

    def provenance(self) -> dict:
        provenance = super().provenance()
        if self.everyone:      # only then: `people: one` stores keep their provenance, so they resume
            provenance["params"]["people"] = "all"
        return provenance

    def load(self) -> None:
        p = self.params
        self.embedder = FaceTrackEmbedder(self.weights, self.device, p["detect_size"], p["min_face"], p["margin"],
                                          p["batch_size"], p["keep_pooled"], p["detect_every"])

    def _tracks_everyone(self, video: dict) -> bool:
        return self.everyone or video.get("person") in SIDES

    def file_rows(self, video: dict) -> dict[str, np.ndarray]:
        if self._tracks_everyone(video):
            return self.embedder.embed_people(video["path"])
        return self.embedder.embed_video(video["path"])

    def trial_rows(self, shared: dict[str, np.ndarray], video: dict) -> dict[str, np.ndarray]:
        if not self._tracks_everyone(video):
            return shared
        rows = person_rows(shared, trial_person(shared, video.get("person") or ""))
        if not self.everyone:
            del rows["person"]
            return rows
        return {**rows, "people": {k: v for k, v in shared.items() if k != "time"}}

    def rows(self, video: dict) -> dict[str, np.ndarray]:
        return self.trial_rows(self.file_rows(video), video)
