"""Valence and arousal for a new video with a trained model (`avfusion predict`).

The features are computed by the same extractor classes as the pipeline's stores (avfusion/extraction/
registry.py), built with the settings those stores recorded: the fold's config.json holds each store's
provenance (extractor version, its output params, the weights' SHA-256), and the weight files used here
must hash the same. Extractors that read faces take the faces the facenet extractor finds in this
video, as in the pipeline. With several folds (a `models/` directory) their predictions are merged by
CCC centring, and with several seeds (models/seed-<s>/) the seeds' merged predictions are averaged,
as the evaluate stage does for test videos (`ensemble_prediction`).

A model trained on the synthetic demo, or on features of seeded-random backbones, predicts numbers
that look plausible on any video: `demo_warning` says so (config.json's `trained_on` tells).
"""
from __future__ import annotations

import csv
import os
import re
import tempfile

import numpy as np

from avfusion.errors import CheckpointError, MediaError, PredictError
from avfusion.extraction.base import Extractor, Video
from avfusion.extraction.faces import FACES
from avfusion.extraction.registry import get
from avfusion.faces.people import people_summary, person_rows
from avfusion.learning.evaluate import ensemble_prediction, postprocess, seed_models
from avfusion.learning.featuresets import MODALITIES, compose, feature_set
from avfusion.learning.train import load_model
from avfusion.learning.windows import predict_video
from avfusion.params import resolve_device
from avfusion.paths import file_sha256
from avfusion.sources.media import frame_times

COLUMNS = ["frame", "time", "valence", "arousal", "face", "audio"]
PEOPLE_COLUMNS = ["frame", "time", "person", "valence", "arousal", "face", "audio", "x", "y", "w", "h"]
HOW_TO_TRAIN = ("to train a real model, set facenet.weights: vggface2 and openl3.weights: env in params.yaml, "
                "point data.source and data.root at your dataset, and run `dvc repro`")


def model_folds(model_dir: str) -> list[list[str]]:
    """Each seed's fold directories: a single fold directory (with config.json), every fold-<i> of a
    models/ directory, or of each of its seed-<s>/."""
    if os.path.exists(os.path.join(model_dir, "config.json")):
        return [[model_dir]]
    if not os.path.isdir(model_dir):
        raise PredictError(f"{model_dir}: model directory not found")
    try:
        return seed_models(model_dir)
    except CheckpointError:
        raise PredictError(f"{model_dir}: no trained model (config.json, fold-<i>/ or seed-<s>/) in it") from None


def default_weights_dir(fold_dir: str) -> str:
    """data/weights of the project the model belongs to (its folds live in <project>/models/fold-<i>,
    or <project>/models/seed-<s>/fold-<i>)."""
    models = os.path.dirname(os.path.abspath(fold_dir))
    if re.fullmatch(r"seed-\d+", os.path.basename(models)):
        models = os.path.dirname(models)
    return os.path.join(os.path.dirname(models), "data", "weights")


def demo_warning(config: dict) -> str | None:
    """One line when the model's output on real video is not meaningful; None otherwise (or unknown)."""
    trained_on = config.get("trained_on") or {}
    reasons = ["on the synthetic demo"] if trained_on.get("data_source") == "demo" else []
    random = [name for name, spec in (trained_on.get("weights") or {}).items() if spec == "random"]
    if random:
        reasons.append(f"with seeded-random {' and '.join(random)} weights")
    if not reasons:
        return None
    return f"this model was trained {' '.join(reasons)}: its output on real video is not meaningful; {HOW_TO_TRAIN}"


def build(name: str, provenance: dict, weights_dir: str, device: str) -> Extractor:
    """Extractor `name` as it wrote the store of `provenance`: its version checked, its settings from the
    provenance, its weight files from `weights_dir`/<name> checked against the recorded SHA-256."""
    cls = get(name)
    if provenance["extractor"] != cls.version:
        raise PredictError(f"trained on {name} features of extractor {provenance['extractor']!r}, "
                           f"this version has {cls.version!r}")
    extractor = cls(cls.settings(provenance), device)
    extractor.weights_dir = os.path.join(weights_dir, name)
    files = cls.weight_files(extractor.params)
    recorded = provenance.get("weights_sha256")
    expected = {files[0]: recorded} if len(files) == 1 else (recorded or {})
    for file in files:
        path = os.path.join(extractor.weights_dir, file)
        if not os.path.isfile(path):
            raise PredictError(f"{path}: {name} weights not found (run `dvc pull` or pass --weights DIR)")
        if file_sha256(path) != expected.get(file):
            raise PredictError(f"{path}: not the {name} weights the model was trained with (SHA-256 differs)")
    extractor.ensure_loaded()
    return extractor


def face_provenance(provenance: dict) -> dict | None:
    """The facenet settings of a feature set: its own store's, or those an extractor on faces recorded."""
    return provenance.get(FACES) or next((p["boxes"] for p in provenance.values() if "boxes" in p), None)


class Predictor:
    """The model's folds and the extractors of its feature set, built once; `predict(path)` per video."""

    def __init__(self, model_dir: str = "models", weights_dir: str | None = None, device: str = "auto"):
        self.device = resolve_device(device)
        seeds = model_folds(model_dir)
        folds = [d for dirs in seeds for d in dirs]
        self.seeds = [[load_model(d, self.device) for d in dirs] for dirs in seeds]
        self.models = [model for models in self.seeds for model in models]
        provenance = self.models[0][1]["provenance"]
        if any(config["provenance"] != provenance for _, config in self.models):
            raise PredictError(f"{model_dir}: its folds were trained on different features")
        self.warning = demo_warning(self.models[0][1])
        weights_dir = weights_dir or default_weights_dir(folds[0])
        self.features_of = feature_set(self.models[0][1]["fusion"])
        names = [n for m in MODALITIES for n in self.features_of[m]]
        faces = face_provenance(provenance)
        if faces is None:
            raise PredictError(f"{folds[0]}: predict needs facenet to find faces, and this model's feature set "
                               f"({', '.join(names)}) does not record its settings")
        self.faces = build(FACES, faces, weights_dir, self.device)
        self.extractors = {name: self.faces if name == FACES else build(name, provenance[name], weights_dir, self.device)
                           for name in names}

    def features(self, path: str) -> tuple[Video, dict[str, dict[str, np.ndarray]]]:
        """The video and, by extractor name, the rows of every extractor of the model's feature set (the
        main face's, for those on faces): what the pipeline's stores would hold for it. Raises MediaError."""
        video = self._video(path)
        return video, self._face_rows(video, self.faces.rows(video), self._video_rows(video))

    def predict(self, path: str, smooth_valence: int = 0, smooth_arousal: int = 0) -> dict[str, np.ndarray]:
        """Per decoded frame: time, pred [n, 2] (clipped), face and audio presence. Raises MediaError."""
        video, rows = self.features(path)
        pred, face_in, voice_in = self._valence_arousal(rows, smooth_valence, smooth_arousal)
        return {"time": video.times, "pred": pred, "face": face_in, "audio": voice_in, "box": rows[FACES]["box"]}

    def predict_people(self, path: str, smooth_valence: int = 0, smooth_arousal: int = 0) -> dict:
        """Everyone tracked in the video (avfusion/faces/people.py): per decoded frame `time` and `audio`
        presence (the voice is shared by everyone); `people`, longest on screen first, each with its
        `person` id and per frame `pred` [n, 2], `face` (on screen) and `box` [n, 4] (pixels of the
        original frame). A person's curve is predicted over the whole video, as a trial's is, so the
        model sees the same windows as in training. Raises MediaError."""
        video = self._video(path)
        everyone = self.faces.everyone_rows(video)
        shared = self._video_rows(video)
        people = []
        for track in people_summary(everyone):
            face = person_rows(everyone, track.person)
            pred, _, _ = self._valence_arousal(self._face_rows(video, face, shared), smooth_valence, smooth_arousal)
            people.append({"person": track.person, "face": face["valid"], "box": face["box"], "pred": pred})
        voice_in = compose([(shared[n]["embedding"], shared[n]["valid"]) for n in self.features_of["audio"]])[1]
        return {"time": video.times, "audio": voice_in, "people": people}

    @staticmethod
    def _video(path: str) -> Video:
        times = frame_times(path)
        if len(times) == 0:
            raise MediaError(f"{path}: no decodable video frames")
        return Video(id=os.path.splitext(os.path.basename(path))[0], path=path, times=times)

    def _video_rows(self, video: Video) -> dict[str, dict[str, np.ndarray]]:
        """The rows of the feature set's extractors that read the whole video, not a face."""
        return {name: self._checked(video, name, e.rows(video)) for name, e in self.extractors.items()
                if name != FACES and not e.reads_faces}

    def _face_rows(self, video: Video, face: dict, video_rows: dict) -> dict[str, dict[str, np.ndarray]]:
        """Every extractor's rows for one face track: facenet's, the whole video's, and those on that face."""
        rows = {FACES: face, **video_rows}
        with_face = Video(video.id, video.path, video.times, faces=face)
        for name, extractor in self.extractors.items():
            if extractor.reads_faces:
                rows[name] = self._checked(video, name, extractor.rows(with_face))
        return rows

    def _valence_arousal(self, rows: dict, smooth_valence: int,
                         smooth_arousal: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One face track's prediction [n, 2] (clipped) and the presence of its visual and audio features."""
        (visual, face_in, _), (voice, voice_in, _) = (
            compose([(rows[n]["embedding"], rows[n]["valid"]) for n in self.features_of[m]]) for m in MODALITIES)
        seeds = [[predict_video(model, visual, face_in, voice, voice_in, config["window"], config["hop"], self.device)
                  for model, config in models] for models in self.seeds]
        return postprocess(ensemble_prediction(seeds), True, smooth_valence, smooth_arousal), face_in, voice_in

    @staticmethod
    def _checked(video: Video, name: str, out: dict) -> dict[str, np.ndarray]:
        if len(out["valid"]) != len(video.times):
            raise MediaError(f"{video.path}: {name} gave {len(out['valid'])} rows for {len(video.times)} frames")
        return out


def write_atomically(path: str, write) -> None:
    """Call write(temp_path), then rename onto path: a failure never leaves a partial file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=os.path.splitext(path)[1], dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise


def write_csv(path: str, result: dict[str, np.ndarray]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for i, (t, (v, a), face, voice) in enumerate(zip(result["time"], result["pred"], result["face"],
                                                         result["audio"])):
            writer.writerow([i, f"{t:.4f}", f"{v:.6f}", f"{a:.6f}", int(face), int(voice)])


def write_people_csv(path: str, result: dict) -> None:
    """One row per frame per person on screen, by frame then person; the box as x, y (top left), w, h."""
    rows = [(f, p["person"], p) for p in result["people"] for f in np.flatnonzero(p["face"])]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(PEOPLE_COLUMNS)
        for frame, person, p in sorted(rows, key=lambda r: (r[0], r[1])):
            (v, a), (x1, y1, x2, y2) = p["pred"][frame], p["box"][frame]
            writer.writerow([frame, f"{result['time'][frame]:.4f}", person, f"{v:.6f}", f"{a:.6f}", 1,
                             int(result["audio"][frame]), f"{x1:.1f}", f"{y1:.1f}", f"{x2 - x1:.1f}", f"{y2 - y1:.1f}"])


def overlay_people(result: dict) -> list[list[tuple]]:
    """Per decoded frame, what `overlay.write_overlay` draws: (id, box, valence, arousal) of each face on
    screen; a one-person result (`predict`) is person 0."""
    people = result.get("people") or [{"person": 0, "face": result["face"], "box": result["box"], "pred": result["pred"]}]
    return [[(p["person"], p["box"][f], *p["pred"][f]) for p in people if p["face"][f]]
            for f in range(len(result["time"]))]
