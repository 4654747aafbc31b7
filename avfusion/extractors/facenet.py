"""`facenet`: a face embedding for every decoded frame (MTCNN + InceptionResnetV1, avfusion/faces/).

Rows: the trial's person's 512-d InceptionResnetV1 embedding (and the 1792-d pooled features with
`keep_pooled`), `valid`, the face box in full-resolution pixels, MTCNN's five facial points
(`landmarks`, x, y per point, full-resolution pixels: the `landmarks` extractor's input), the MTCNN
probability, frame index and timestamp. With `people: all` also `person` (the id of the track the rows
follow, -1 where absent) and the `people` row set: one row per tracked face per frame, everyone in the
video (docs/design.md §5.2). The extractors that read faces (`reads_faces`) take this store's boxes.

Weights: `random` (seeded, offline), `vggface2` or `casia-webface` (facenet-pytorch's releases, pinned
by SHA-256), or the path of a state-dict file; a classifier head in the file is dropped.
"""
from __future__ import annotations

import os
from typing import Literal

import numpy as np
import torch

from avfusion.extraction.base import DeviceParams, Extractor, Video, register, weights_param
from avfusion.extraction.weights import Download, check_state_dict, copy_user_file, fetch
from avfusion.faces.embedder import EMBEDDING_DIM, POOLED_DIM, FaceTrackEmbedder, random_state_dict
from avfusion.faces.people import person_rows, trial_person
from avfusion.params import integer

FILE = "inception_resnet_v1.pt"
RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
OFFICIAL = {   # MIT; trained on VGGFace2 / CASIA-WebFace, whose terms restrict use to research
    "vggface2": Download(RELEASE + "20180402-114759-vggface2.pt",
                         "281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b"),
    # no published SHA-256 found: download it yourself and set facenet.weights to its path
    "casia-webface": Download(RELEASE + "20180408-102900-casia-webface.pt", ""),
}
SIDES = ("left", "right")


class Params(DeviceParams):
    weights: weights_param("random", *OFFICIAL) = "random"
    seed: integer(ge=0) = 0
    detect_size: integer(ge=1) = 640      # detect faces on a copy whose longer side is at most this many pixels
    min_face: integer(ge=1) = 20          # smallest face MTCNN looks for, in pixels of that copy
    detect_every: integer(ge=1) = 25      # full MTCNN every k frames, O-net tracking between (1: every frame)
    people: Literal["one", "all"] = "one"  # all: every tracked face (docs/design.md §4.2)
    margin: integer(ge=0) = 20            # context around the face box, in pixels of the 160-px crop
    batch_size: integer(ge=1) = 32
    keep_pooled: bool = False             # also store the 1792-d pooled features

    @classmethod
    def rule(cls, p: dict) -> str | None:
        if p["min_face"] > p["detect_size"]:
            return (f"facenet.min_face must be <= facenet.detect_size (faces are looked for in that copy), "
                    f"not {p['min_face']} > {p['detect_size']}")
        return None


@register
class FaceNetExtractor(Extractor):
    """A trial follows one person: with `people: one` the largest central face (avfusion/faces/tracker.py);
    with `people: all`, and for every Aff-Wild2 `_left` / `_right` trial, one track of everyone's
    (avfusion/faces/people.py), picked by position for a side, else the longest on screen. Trials of one
    file share that decode and detection."""

    name = "facenet"
    # /2: the landmarks column, the library's crop step (other boxes on small and edge-cut faces) and
    # `_left` / `_right` trials following the multi-person tracker; /3: the embedder runs channels-last
    # (embeddings rounded differently, ~1e-6)
    version = "facenet-mtcnn-inception-resnet-v1/3"
    Params = Params
    backbone = True
    weight_names = ("random", *OFFICIAL)
    per_file = True
    # batch_size too: the detector and the embedding net run on batches of that many frames, and CPU
    # kernels round differently per batch shape (measured: dvc.yaml). Stores and workers do not.
    output_params = ("detect_size", "min_face", "margin", "keep_pooled", "batch_size", "detect_every")

    def __init__(self, params: dict, device: str = "cpu"):
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

    @classmethod
    def weight_files(cls, params: dict) -> list[str]:
        return [FILE]

    @classmethod
    def make_weights(cls, params: dict, directory: str) -> None:
        out, spec = os.path.join(directory, FILE), params["weights"]
        if spec == "random":
            torch.save(random_state_dict(params["seed"]), out)
        elif spec in OFFICIAL:
            fetch(OFFICIAL[spec], out, "facenet.weights")
        else:
            copy_user_file(spec, out, "facenet.weights")
        check_state_dict(out)

    def provenance(self) -> dict:
        provenance = super().provenance()
        if self.everyone:      # only then: `people: one` stores keep their provenance, so they resume
            provenance["params"]["people"] = "all"
        return provenance

    @classmethod
    def settings(cls, provenance: dict) -> dict:
        return {**super().settings(provenance), "people": provenance["params"].get("people", "one")}

    def load(self) -> None:
        p = self.params
        self.embedder = FaceTrackEmbedder(self.weight_path(), self.device, p["detect_size"], p["min_face"],
                                          p["margin"], p["batch_size"], p["keep_pooled"], p["detect_every"])

    def _tracks_everyone(self, video: Video) -> bool:
        return self.everyone or video.person in SIDES

    def file_rows(self, video: Video) -> dict[str, np.ndarray]:
        rows = self.embedder.embed_people(video.path) if self._tracks_everyone(video) else \
            self.embedder.embed_video(video.path)
        if not np.array_equal(rows["time"], video.times):
            raise RuntimeError(f"{video.path}: the decoded frames' times differ from data/frame_times "
                               f"(re-run the dataset stage)")
        return rows

    def trial_rows(self, shared: dict[str, np.ndarray], video: Video) -> dict[str, np.ndarray]:
        if not self._tracks_everyone(video):
            return shared
        rows = person_rows(shared, trial_person(shared, video.person))
        if not self.everyone:
            del rows["person"]
            return rows
        return {**rows, "people": {k: v for k, v in shared.items() if k != "time"}}

    def rows(self, video: Video) -> dict[str, np.ndarray]:
        return self.trial_rows(self.file_rows(video), video)

    def everyone_rows(self, video: Video) -> dict[str, np.ndarray]:
        """Every tracked face of the video (`avfusion predict --people all`)."""
        return self.embedder.embed_people(video.path)
