"""Valence and arousal for a new video with a trained model (`avfusion predict`).

Features are extracted exactly as for the model's training data: the fold's config.json records the
feature stores' provenance (extractor, its params, the weights' SHA-256), and the weight files used
here must hash the same. With several folds (a `models/` directory) their predictions are merged by
CCC centring, as the evaluate stage merges test predictions.

A model trained on the synthetic demo, or on features of seeded-random backbones, predicts numbers
that look plausible on any video: `demo_warning` says so (config.json's `trained_on` tells).
"""
from __future__ import annotations

import csv
import os
import tempfile

import numpy as np

from avfusion import audio as audio_stage
from avfusion import visual as visual_stage
from avfusion.audio import AudioEmbedder
from avfusion.errors import CheckpointError, MediaError, PredictError
from avfusion.evaluate import fold_dirs, merge_folds, postprocess
from avfusion.extract import Extractor
from avfusion.faces import FaceTrackEmbedder
from avfusion.featuresets import compose, feature_set, store_name
from avfusion.params import resolve_device
from avfusion.store import file_sha256
from avfusion.tracks import people_summary, person_rows
from avfusion.train import load_model
from avfusion.windows import predict_video

COLUMNS = ["frame", "time", "valence", "arousal", "face", "audio"]
PEOPLE_COLUMNS = ["frame", "time", "person", "valence", "arousal", "face", "audio", "x", "y", "w", "h"]
HOW_TO_TRAIN = ("to train a real model, set visual.weights: vggface2 and audio.weights: env in params.yaml, "
                "point data.source and data.root at your dataset, and run `dvc repro`")


def model_folds(model_dir: str) -> list[str]:
    """A single fold directory (with config.json), or every fold-<i> of a models/ directory."""
    if os.path.exists(os.path.join(model_dir, "config.json")):
        return [model_dir]
    if not os.path.isdir(model_dir):
        raise PredictError(f"{model_dir}: model directory not found")
    try:
        return fold_dirs(model_dir)
    except CheckpointError:
        raise PredictError(f"{model_dir}: no trained model (config.json or fold-<i>/) in it") from None


def default_weights_dir(fold_dir: str) -> str:
    """data/weights of the project the model belongs to (its folds live in <project>/models/fold-<i>)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(fold_dir))), "data", "weights")


def demo_warning(config: dict) -> str | None:
    """One line when the model's output on real video is not meaningful; None otherwise (or unknown)."""
    trained_on = config.get("trained_on") or {}
    reasons = ["on the synthetic demo"] if trained_on.get("data_source") == "demo" else []
    random = [name for name in ("visual", "audio") if trained_on.get(f"{name}_weights") == "random"]
    if random:
        reasons.append(f"with seeded-random {' and '.join(random)} backbone weights")
    if not reasons:
        return None
    return f"this model was trained {' '.join(reasons)}: its output on real video is not meaningful; {HOW_TO_TRAIN}"


def checked_weights(path: str, provenance: dict, name: str) -> str:
    """The weight file, after checking it is the one the training features were extracted with."""
    if not os.path.isfile(path):
        raise PredictError(f"{path}: {name} weights not found (run `dvc pull` or pass --weights DIR)")
    if file_sha256(path) != provenance["weights_sha256"]:
        raise PredictError(f"{path}: not the {name} weights the model was trained with (SHA-256 differs)")
    return path


def plugin(name: str, provenance: dict, weights_dir: str, device: str) -> Extractor:
    """A registry extractor of the model's feature set besides facenet and openl3 (vad, egemaps, ...),
    built as its store was written: its output params from the provenance, its weight file checked."""
    from avfusion.extractors import get_extractor
    cls = get_extractor(name)
    if provenance["extractor"] != cls.version:
        raise PredictError(f"trained on {name} features of extractor {provenance['extractor']!r}, "
                           f"this version has {cls.version!r}")
    extractor = cls(provenance["params"], device)
    if cls.weights:
        extractor.weights = checked_weights(os.path.join(weights_dir, os.path.basename(cls.weights)),
                                            provenance, name)
    extractor.load()
    return extractor


class Predictor:
    """The model's folds and the extractors of its feature set, built once; `predict(path)` per video."""

    def __init__(self, model_dir: str = "models", weights_dir: str | None = None, device: str = "auto"):
        self.device = resolve_device(device)
        folds = model_folds(model_dir)
        self.models = [load_model(d, self.device) for d in folds]
        provenance = self.models[0][1]["provenance"]
        if any(config["provenance"] != provenance for _, config in self.models):
            raise PredictError(f"{model_dir}: its folds were trained on different features")
        self.warning = demo_warning(self.models[0][1])
        weights_dir = weights_dir or default_weights_dir(folds[0])
        self.features = feature_set(self.models[0][1]["fusion"])
        names = self.features["visual"] + self.features["audio"]
        # facenet finds the faces (and expression's boxes): its store's settings, or those expression recorded
        visual = provenance.get("visual") or next((p["boxes"] for p in provenance.values() if "boxes" in p), None)
        if visual is None:
            raise PredictError(f"{folds[0]}: predict needs facenet to find faces, and this model's feature set "
                               f"({', '.join(names)}) does not record its settings")
        audio = provenance.get("audio")
        for name, prov, module in (("visual", visual, visual_stage), ("audio", audio, audio_stage)):
            if prov and prov["extractor"] != module.EXTRACTOR:
                raise PredictError(f"{folds[0]}: trained on {name} features of extractor {prov['extractor']!r}, "
                                   f"this version has {module.EXTRACTOR!r}")
        vp, ap = visual["params"], (audio or {}).get("params")
        self.faces = FaceTrackEmbedder(checked_weights(os.path.join(weights_dir, "visual.pt"), visual, "visual"),
                                       self.device, vp["detect_size"], vp["min_face"], vp["margin"],
                                       # stores from before these params existed used the old defaults
                                       vp.get("batch_size", 32), detect_every=vp.get("detect_every", 1))
        self.voice = None if audio is None else AudioEmbedder(
            checked_weights(os.path.join(weights_dir, "audio.h5"), audio, "audio"),
            ap["input_repr"], ap["embedding_size"], ap["rate"], self.device,
            silence_db=ap["silence_db"], silence_window=ap["silence_window"])
        self.speech, self.vad_threshold = None, None
        if audio is not None and audio.get("valid_from") == "vad":
            from avfusion.vad import VoiceActivity
            self.speech, self.vad_threshold = VoiceActivity(), audio["vad_threshold"]
        self.plugins = {name: plugin(name, provenance[store_name(name)], weights_dir, self.device)
                        for name in names if name not in ("facenet", "openl3")}

    def predict(self, path: str, smooth_valence: int = 0, smooth_arousal: int = 0) -> dict[str, np.ndarray]:
        """Per decoded frame: time, pred [n, 2] (clipped), face and audio presence. Raises MediaError."""
        face = self.faces.embed_video(path)
        if len(face["time"]) == 0:
            raise MediaError(f"{path}: no decodable video frames")
        voice = self._video_features(path, face["time"])
        pred, face_in, voice_in = self._valence_arousal(path, face, voice, smooth_valence, smooth_arousal)
        return {"time": face["time"], "pred": pred, "face": face_in, "audio": voice_in, "box": face["box"]}

    def predict_people(self, path: str, smooth_valence: int = 0, smooth_arousal: int = 0) -> dict:
        """Everyone tracked in the video (avfusion/tracks.py): per decoded frame `time` and `audio`
        presence (the voice is shared by everyone); `people`, longest on screen first, each with its
        `person` id and per frame `pred` [n, 2], `face` (on screen) and `box` [n, 4] (pixels of the
        original frame). A person's curve is predicted over the whole video, as a trial's is, so the
        model sees the same windows as in training. Raises MediaError."""
        everyone = self.faces.embed_people(path)
        if len(everyone["time"]) == 0:
            raise MediaError(f"{path}: no decodable video frames")
        voice = self._video_features(path, everyone["time"])
        people = []
        for track in people_summary(everyone):
            rows = person_rows(everyone, track.person)
            pred, _, _ = self._valence_arousal(path, rows, voice, smooth_valence, smooth_arousal)
            people.append({"person": track.person, "face": rows["valid"], "box": rows["box"], "pred": pred})
        voice_in = compose([voice[name] for name in self.features["audio"]])[1]
        return {"time": everyone["time"], "audio": voice_in, "people": people}

    def _video_features(self, path: str, times: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The feature set's extractors that read the whole video, not a face: (embedding, valid) by name."""
        rows = {}
        if self.voice is not None:
            gate = None
            if self.speech is not None:     # the store's `audio.valid_from: vad`
                speech = self.speech.frames(path, times)
                gate = speech.valid & (speech.features[:, 0] >= self.vad_threshold)
            rows["openl3"] = self.voice.embed_video(path, times, gate)
        for name, extractor in self.plugins.items():
            if not hasattr(extractor, "on_faces"):
                rows[name] = self._checked(path, name, extractor.rows({"video_id": os.path.basename(path),
                                                                        "path": path, "person": ""}), times)
        return rows

    def _valence_arousal(self, path: str, face: dict, video_rows: dict, smooth_valence: int,
                         smooth_arousal: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One face track's prediction [n, 2] (clipped) and the presence of its visual and audio features."""
        rows = {"facenet": (face["embedding"], face["valid"]), **video_rows}
        for name, extractor in self.plugins.items():   # expression, landmarks: on the faces found above
            if hasattr(extractor, "on_faces"):
                rows[name] = self._checked(path, name, extractor.on_faces(path, face), face["time"])
        (visual, face_in, _), (voice, voice_in, _) = (compose([rows[n] for n in self.features[m]])
                                                      for m in ("visual", "audio"))
        folds = [predict_video(model, visual, face_in, voice, voice_in,
                               config["window"], config["hop"], self.device) for model, config in self.models]
        return postprocess(merge_folds(folds), True, smooth_valence, smooth_arousal), face_in, voice_in

    @staticmethod
    def _checked(path: str, name: str, out: dict, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(out["valid"]) != len(times):
            raise MediaError(f"{path}: {name} gave {len(out['valid'])} rows for {len(times)} frames")
        return out["embedding"], out["valid"]


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
