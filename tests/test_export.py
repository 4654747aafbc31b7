"""`avfusion features VIDEO --out FILE.csv`: one row per decoded frame, every extractor's named columns,
on a real encoded video with a drawn face and a tone; bad input gets one line and leaves no file."""
from __future__ import annotations

import csv
import glob
import os

import numpy as np
import pytest

from avfusion.app.cli import main
from avfusion.extraction.registry import get, names
from avfusion.extraction.weights import materialise
from avfusion.extractors.emotieff import CLASSES as EMOTIEFF_CLASSES
from avfusion.extractors.expression import EXPRESSIONS
from avfusion.extractors.landmarks import NAMES
from avfusion.params import load_params
from avfusion.sources.demo import draw_face
from avfusion.sources.media import frame_times

from conftest import LOOK, REPO, encode_video, project_root, tone

PARAMS = os.path.join(REPO, "params.yaml")
FRAMES = 8


def make_weights(weights: str, extractors) -> None:
    """The extractors' weight files as their stages make them from params.yaml (seeded random), in
    <project>/data/weights/<name>/."""
    with project_root(os.path.dirname(os.path.dirname(weights))):
        for name in extractors:
            materialise(get(name), load_params(name, PARAMS))


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    """What the fast tests read: the default extractors' weights and the landmarks'; the slow test adds
    the rest (the large random encoders take most of the time)."""
    root = tmp_path_factory.mktemp("project")
    (root / "params.yaml").write_text("{}\n")
    weights = str(root / "data" / "weights")
    make_weights(weights, ("facenet", "openl3", "vad", "mfcc", "landmarks"))
    return weights


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    frames = [draw_face(160, LOOK, valence=0.5, eye_open=0.5, center=(80 + i, 80)) for i in range(FRAMES)]
    return encode_video(tmp_path_factory.mktemp("video") / "face.mp4", frames, tone(FRAMES / 10), fps=10)


def read(path: str) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=np.float64)


@pytest.mark.slow
def test_every_extractor_in_one_table(tmp_path, video, weights):
    make_weights(weights, names())
    out = str(tmp_path / "features.csv")
    assert main(["features", video, "--out", out, "--weights", weights, "--params", PARAMS, "--device", "cpu"]) == 0
    header, table = read(out)
    assert header[:2] == ["frame", "time"]
    assert len(table) == FRAMES and np.array_equal(table[:, 0], np.arange(FRAMES))
    np.testing.assert_allclose(table[:, 1], frame_times(video), atol=1e-4)
    column = {name: i for i, name in enumerate(header)}
    for name, width in (("facenet", 512), ("openl3", 512), ("vad", 1), ("egemaps", 25), ("logmel", 64),
                        ("mfcc", 20), ("expression", 135), ("landmarks", 10), ("speech", 64), ("vggish", 128),
                        ("emotieff", 8 + 2 + 1280), ("clip", 512), ("irse50", 512)):
        assert f"{name}.valid" in column
        assert len([h for h in header if h.startswith(name + ".")]) == width + 1, name
    assert {"facenet.000", "facenet.511", "openl3.000", "vad.speech", "logmel.mel_00", "mfcc.mfcc_19",
            "egemaps.F0semitoneFrom27.5Hz_sma3nz", "egemaps.Loudness_sma3",
            *(f"expression.{e}" for e in EXPRESSIONS), "expression.feature_127",
            "landmarks.left_eye_x", "landmarks.mouth_right_y", "speech.emb_0000", "vggish.emb_127",
            "emotieff.happiness", "emotieff.valence", "emotieff.arousal", "emotieff.feature_1279", "clip.000",
            "clip.511", "irse50.511"} <= set(header)
    assert table[:, column["speech.valid"]].all() and table[:, column["vggish.valid"]].all()
    assert table[:, column["facenet.valid"]].sum() >= FRAMES - 1           # the drawn face is found
    assert table[:, column["openl3.valid"]].all() and table[:, column["vad.valid"]].all()
    assert table[:, column["vad.speech"]].max() < 0.5                       # a tone is not speech
    probs = table[:, [column[f"expression.{e}"] for e in EXPRESSIONS]]
    face = table[:, column["facenet.valid"]] == 1
    np.testing.assert_allclose(probs[face].sum(axis=1), 1, atol=1e-4)
    assert np.array_equal(table[:, column["expression.valid"]], table[:, column["facenet.valid"]])
    assert np.array_equal(table[:, column["landmarks.valid"]], table[:, column["facenet.valid"]])
    for name in ("emotieff", "clip", "irse50"):
        assert np.array_equal(table[:, column[f"{name}.valid"]], table[:, column["facenet.valid"]])
    np.testing.assert_allclose(table[face][:, [column[f"emotieff.{c}"] for c in EMOTIEFF_CLASSES]].sum(axis=1), 1, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(table[face][:, [column[f"irse50.{i:03d}"] for i in range(512)]], axis=1),
                               1, atol=1e-4)
    eyes_nose = table[face][:, [column[f"landmarks.{p}_x"] for p in ("left_eye", "nose", "right_eye")]]
    assert np.all(np.diff(eyes_nose, axis=1) > 0)                           # inside the box, left to right


def test_landmarks_alone_run_facenet_for_its_faces(tmp_path, video, weights):
    out = str(tmp_path / "landmarks.csv")
    assert main(["features", video, "--out", out, "--extractors", "landmarks", "--weights", weights,
                 "--params", PARAMS, "--device", "cpu"]) == 0
    header, table = read(out)
    assert header == ["frame", "time", "landmarks.valid", *(f"landmarks.{name}" for name in NAMES)]
    face = table[:, 2] == 1
    assert face.sum() >= FRAMES - 1 and np.all((table[face, 3:] > 0) & (table[face, 3:] < 1))
    assert not table[~face, 3:].any()


def test_chosen_extractors_only(tmp_path, video, weights):
    out = str(tmp_path / "some.csv")
    assert main(["features", video, "--out", out, "--extractors", "mfcc,vad", "--weights", weights,
                 "--params", PARAMS]) == 0
    header, table = read(out)
    assert header == ["frame", "time", "mfcc.valid", *(f"mfcc.mfcc_{i:02d}" for i in range(20)), "vad.valid",
                      "vad.speech"]
    assert table.shape == (FRAMES, len(header))


@pytest.mark.parametrize("problem", ["corrupt", "missing", "unknown extractor", "no weights"])
def test_bad_input_is_one_line_and_no_file(tmp_path, video, weights, capsys, problem):
    path, extra = video, []
    if problem == "corrupt":
        path = str(tmp_path / "cut.mp4")
        with open(video, "rb") as src, open(path, "wb") as dst:
            dst.write(src.read()[: os.path.getsize(video) // 2])
    elif problem == "missing":
        path = str(tmp_path / "nowhere.mp4")
    elif problem == "unknown extractor":
        extra = ["--extractors", "vad,landmark"]
    else:
        extra = ["--extractors", "facenet", "--weights", str(tmp_path / "empty")]
    out = str(tmp_path / "features.csv")
    code = main(["features", path, "--out", out, "--params", PARAMS, *(extra or ["--weights", weights])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("avfusion features: error: ") and "Traceback" not in "\n".join(err)
    assert not glob.glob(str(tmp_path / "*.csv")) and not glob.glob(str(tmp_path / ".features.csv*"))
