"""`avfusion predict` on real tiny videos made with PyAV, with a real (untrained) model and seeded weights."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from avfusion.app.cli import main
from avfusion.app.predict import COLUMNS, HOW_TO_TRAIN, demo_warning
from avfusion.extraction.registry import get
from avfusion.extraction.weights import materialise
from avfusion.faces.embedder import random_state_dict
from avfusion.learning.fusion import build_model
from avfusion.learning.train import save_fold
from avfusion.params import load_params
from avfusion.paths import ROOT_ENV
from avfusion.sources.demo import draw_face
from avfusion.store.layout import FORMAT

from conftest import LOOK, REPO, encode_video, tone

FPS, FRAMES, SIZE = 10, 12, 160


def store_provenance(name: str, params: dict) -> dict:
    """What extractor `name`'s store records (its weights made in the project first)."""
    extractor = get(name)(params, "cpu")
    return {"format": FORMAT, **extractor.provenance()}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """<root>/data/weights/<name> (seeded random) and <root>/models/fold-0 trained on features of those weights."""
    root = tmp_path_factory.mktemp("predict")
    (root / "params.yaml").write_text("{}\n")
    provenance = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ROOT_ENV, str(root))
        for name in ("facenet", "openl3"):
            params = load_params(name, os.path.join(REPO, "params.yaml"))
            materialise(get(name), params)
            provenance[name] = store_provenance(name, params)
    fusion = {"type": "concat", "dim": 16, "hidden": 8, "dropout": 0.1, "visual": ["facenet"], "audio": ["openl3"]}
    model = build_model(fusion, 16, 512, 512)
    save_fold(str(root / "models" / "fold-0"), model.state_dict(),
              {"fold": 0, "fusion": fusion, "window": 16, "hop": 8, "dim_visual": 512, "dim_audio": 512,
               "provenance": provenance})
    return root


def make_video(path, face: bool, sound: bool):
    t = np.arange(FRAMES) / FPS
    frames = [draw_face(SIZE, LOOK, 0.8 * np.sin(x), 0.5 + 0.4 * np.cos(x), (SIZE / 2, SIZE / 2)) if face
              else Image.new("RGB", (SIZE, SIZE), (90, 120, 90)) for x in t]
    return encode_video(path, frames, tone(FRAMES / FPS) if sound else None, FPS)


def read_rows(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        return next(reader), list(reader)


@pytest.mark.parametrize("container,face,sound", [("mp4", True, True), ("mkv", False, False)])
def test_one_row_per_decoded_frame(project, tmp_path, container, face, sound):
    video = make_video(tmp_path / f"clip.{container}", face, sound)
    out, png = tmp_path / "pred.csv", tmp_path / "pred.png"
    assert main(["predict", video, "--out", str(out), "--model", str(project / "models"),
                 "--plot", str(png), "--device", "cpu"]) == 0
    header, rows = read_rows(out)
    assert header == COLUMNS
    assert len(rows) == FRAMES
    assert [int(r[0]) for r in rows] == list(range(FRAMES))
    np.testing.assert_allclose([float(r[1]) for r in rows], np.arange(FRAMES) / FPS, atol=1e-3)
    values = np.array([[float(r[2]), float(r[3])] for r in rows])
    assert np.isfinite(values).all() and np.abs(values).max() <= 1
    faces, voices = np.array([int(r[4]) for r in rows]), np.array([int(r[5]) for r in rows])
    assert set(faces) | set(voices) <= {0, 1}
    assert faces.mean() > 0.8 if face else faces.sum() == 0
    assert voices.mean() > 0.8 if sound else voices.sum() == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert sorted(os.listdir(tmp_path)) == sorted([f"clip.{container}", "pred.csv", "pred.png"])   # no temp files


def test_weights_other_than_the_models_are_refused(project, tmp_path, capsys):
    other = tmp_path / "weights"
    shutil.copytree(project / "data" / "weights", other)
    (other / "facenet" / "weights.json").unlink()
    torch.save(random_state_dict(1), other / "facenet" / "inception_resnet_v1.pt")
    video = make_video(tmp_path / "clip.mp4", True, True)
    out = tmp_path / "pred.csv"
    assert main(["predict", video, "--out", str(out), "--model", str(project / "models" / "fold-0"),
                 "--weights", str(other), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert "inception_resnet_v1.pt: not the facenet weights the model was trained with" in err and "\n" not in err
    assert not out.exists()


def bad_files(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("these are my notes, not a video\n" * 20)
    return {"missing": str(tmp_path / "missing.mp4"), "zero-byte": str(empty), "text": str(text)}


@pytest.mark.parametrize("case", ["missing", "zero-byte", "text"])
def test_bad_file_gives_one_line_naming_it_and_no_output(project, tmp_path, case):
    video = bad_files(tmp_path)[case]
    out = tmp_path / "pred.csv"
    proc = subprocess.run([sys.executable, "-m", "avfusion.app.cli", "predict", video, "--out", str(out),
                           "--model", str(project / "models")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and video in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not [f for f in os.listdir(tmp_path) if f.startswith(".pred")]


def test_missing_model_is_one_line(tmp_path, capsys):
    video = make_video(tmp_path / "clip.mp4", False, True)
    assert main(["predict", video, "--out", str(tmp_path / "p.csv"), "--model", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope: model directory not found" in err


def test_demo_model_warns_once_and_still_predicts(project, tmp_path, capsys):
    """A model whose config.json says it learned the synthetic demo with seeded-random backbones."""
    fold = tmp_path / "models" / "fold-0"
    shutil.copytree(project / "models" / "fold-0", fold)
    config = json.loads((fold / "config.json").read_text())
    config["trained_on"] = {"data_source": "demo", "weights": {"facenet": "random", "openl3": "random"}}
    (fold / "config.json").write_text(json.dumps(config))
    video = make_video(tmp_path / "clip.mkv", False, False)     # no face, no sound: the quickest to predict
    out = tmp_path / "pred.csv"
    assert main(["predict", video, "--out", str(out), "--model", str(fold),
                 "--weights", str(project / "data" / "weights"), "--device", "cpu"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == ["avfusion predict: warning: this model was trained on the synthetic demo with "
                        "seeded-random facenet and openl3 weights: its output on real video is not "
                        "meaningful; " + HOW_TO_TRAIN]
    assert "facenet.weights: vggface2" in HOW_TO_TRAIN and "openl3.weights: env" in HOW_TO_TRAIN
    assert len(read_rows(out)[1]) == FRAMES                      # the prediction still ran


def test_demo_warning_only_for_demo_data_or_random_weights():
    real = {"data_source": "affwild2", "weights": {"facenet": "vggface2", "openl3": "env", "vad": None}}
    assert demo_warning({"trained_on": real}) is None
    assert demo_warning({}) is None                                  # unknown: no warning
    assert "trained on the synthetic demo: its output" in demo_warning(
        {"trained_on": {**real, "data_source": "demo"}})
    assert "trained with seeded-random openl3 weights: its output" in demo_warning(
        {"trained_on": {**real, "weights": {"facenet": "vggface2", "openl3": "random"}}})


def test_predicts_features_are_the_rows_of_the_stores(tmp_path, monkeypatch):
    """One path from video to features: on a video the pipeline extracted (facenet, openl3 gated by vad,
    vad, landmarks on facenet's faces), predict computes every extractor's rows byte for byte as stored."""
    from avfusion.app.predict import Predictor

    from conftest import extract, make_project
    video = make_video(tmp_path / "clip.mp4", True, True)
    params = {name: load_params(name, os.path.join(REPO, "params.yaml")) for name in ("facenet", "openl3", "vad", "landmarks")}
    params["openl3"].update(valid_from="vad", device="cpu")
    params["facenet"].update(device="cpu")
    params["features"] = {"extractors": ["vad"], "faces": ["landmarks"]}
    root = make_project(tmp_path / "project", params, [{"video_id": "clip", "path": video}])
    stores = {name: extract(root, name, monkeypatch) for name in ("facenet", "openl3", "vad", "landmarks")}
    fusion = {"type": "concat", "dim": 8, "hidden": 4, "dropout": 0.1, "visual": ["facenet", "landmarks"],
              "audio": ["openl3", "vad"]}
    model = build_model(fusion, 16, 512 + 10, 512 + 1)
    save_fold(os.path.join(root, "models", "fold-0"), model.state_dict(),
              {"fold": 0, "fusion": fusion, "window": 16, "hop": 8, "dim_visual": 522, "dim_audio": 513,
               "provenance": {name: reader.provenance for name, reader in stores.items()}})
    monkeypatch.chdir(tmp_path)
    _, rows = Predictor(os.path.join(root, "models"), device="cpu").features(video)
    assert set(rows) == set(stores)
    for name, reader in stores.items():
        stored = reader.rows("clip", ("embedding", "valid", "time"))
        for column in ("embedding", "valid", "time"):
            np.testing.assert_array_equal(rows[name][column], stored[column], err_msg=f"{name}.{column}")
    assert stores["openl3"].provenance["valid_from"] == "vad"        # the gate came through the provenance
    assert not np.array_equal(rows["openl3"]["valid"], np.ones(FRAMES, bool))   # a tone is not a voice


def test_seeds_models_are_averaged(project, tmp_path):
    """models/seed-<s>/fold-0 of two seeds: the prediction is the mean of each seed's own."""
    config = json.load(open(project / "models" / "fold-0" / "config.json"))
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_fold(str(project / "seeded" / f"seed-{seed}" / "fold-0"),
                  build_model(config["fusion"], 16, 512, 512).state_dict(), config)
    video = make_video(tmp_path / "clip.mp4", True, True)
    preds = []
    for model in ("seeded", "seeded/seed-0/fold-0", "seeded/seed-1/fold-0"):
        out = tmp_path / f"{model.replace('/', '_')}.csv"
        assert main(["predict", video, "--out", str(out), "--model", str(project / model), "--device", "cpu"]) == 0
        preds.append(np.array([[float(r[2]), float(r[3])] for r in read_rows(out)[1]]))
    assert not np.allclose(preds[1], preds[2])
    np.testing.assert_allclose(preds[0], (preds[1] + preds[2]) / 2, atol=2e-6)
