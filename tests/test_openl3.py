"""OpenL3 port: parity with the official library, resampling, and the random-weights round trip."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avfusion.errors import WeightsError
from avfusion.extraction.keras import read_layers
from avfusion.openl3.embed import embed
from avfusion.openl3.frontend import DB_RANGE, Spectrogram, mel_filterbank
from avfusion.openl3.network import WINDOW, OpenL3
from avfusion.openl3.resample import resample
from avfusion.openl3.weights import load_model, load_weights, write_random_weights

FIXTURE = Path(__file__).parent / "fixtures" / "openl3-mel256-512"   # made with the official library


@pytest.fixture(scope="module")
def fixture():
    meta = json.loads((FIXTURE / "meta.json").read_text())
    return meta, np.load(FIXTURE / "audio.npy")


def test_matches_official_openl3(fixture):
    meta, audio = fixture
    expected = np.load(FIXTURE / "expected_embedding.npy")
    emb, ts = embed(audio, meta["sample_rate"], FIXTURE / "weights.h5", meta["input_repr"],
                           meta["embedding_size"], meta["hop_size"], center=meta["center"], device="cpu")
    assert emb.shape == expected.shape and emb.dtype == np.float32
    error = np.abs(emb - expected).max() / np.abs(expected).max()
    assert error <= 1e-3, f"max abs error {error:.2e} of the embedding scale"
    np.testing.assert_array_equal(ts, np.load(FIXTURE / "expected_timestamps.npy"))


def test_front_end_shapes_match_the_keras_models():
    waves = torch.zeros(2, WINDOW)
    waves[:, ::100] = 1.0
    for repr_, shape in {"linear": (257, 197), "mel128": (128, 199), "mel256": (256, 199)}.items():
        spec = Spectrogram(repr_)(waves)
        assert spec.shape == (2, 1, *shape)
        assert spec.max() == 0.0 and spec.min() >= -DB_RANGE   # per-window max is 0 dB


@pytest.mark.parametrize("n_fft, n_mels", [(2048, 128), (2048, 256), (512, 64)])
def test_mel_filterbank_is_librosas_slaney(n_fft, n_mels):
    """The front end's filterbank is librosa.filters.mel with its defaults (Slaney scale, area norm),
    which kapre 0.4.1 takes from librosa for openl3."""
    librosa = pytest.importorskip("librosa", reason="test extra: pip install -e '.[test]'")
    ours = mel_filterbank(48000, n_fft, n_mels)
    theirs = librosa.filters.mel(sr=48000, n_fft=n_fft, n_mels=n_mels)
    assert ours.shape == theirs.shape == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7 * theirs.max())


@pytest.mark.filterwarnings("ignore:pkg_resources is deprecated")
@pytest.mark.parametrize("sr, target", [(16000, 48000), (44100, 48000), (22050, 48000), (48000, 16000)])
def test_resample_is_resampys_kaiser_best(sr, target):
    """The port against resampy itself on noise (every frequency), ends included: openl3 0.4.2 resamples
    with resampy.resample(..., filter='kaiser_best') from resampy < 0.3 (0.3 changed the filter table)."""
    resampy = pytest.importorskip("resampy", reason="test extra: pip install -e '.[test]'")
    assert resampy.__version__ == "0.2.2", "the test extra pins openl3's resampy, 0.2.2"
    audio = np.random.default_rng(sr).normal(0, 0.3, sr // 2)
    ours = resample(audio, sr, target=target)
    theirs = resampy.resample(audio, sr, target, filter="kaiser_best")
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    # resampy accumulates its table position in floating point; the port uses exact integers
    np.testing.assert_allclose(ours, theirs, atol=1e-6 * np.abs(theirs).max())


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "audio.h5"
    write_random_weights(path, "mel128", 512, seed=3)
    return path


def test_random_weights_round_trip(random_weights, tmp_path):
    again = tmp_path / "again.h5"
    write_random_weights(again, "mel128", 512, seed=3)
    for (_, xs), (_, ys) in zip(read_layers(again), read_layers(random_weights)):
        assert all(np.array_equal(a, b) for a, b in zip(xs, ys))     # seeded: the same file again
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, 3 * 16000).astype(np.float32)
    emb, ts = embed(audio, 16000, random_weights, "mel128", 512, hop_size=0.5, device="cpu")
    # 3 s, centred: 3.5 s of signal -> 1 + ceil(2.5 / 0.5) windows
    assert emb.shape == (6, 512) and np.isfinite(emb).all() and emb.std() > 0
    np.testing.assert_allclose(ts, np.arange(6) * 0.5)
    big, _ = embed(audio, 16000, random_weights, "mel128", 6144, hop_size=0.5, device="cpu")
    assert big.shape == (6, 6144)


def test_stereo_is_mixed_down(random_weights):
    mono = np.random.default_rng(1).normal(0, 0.1, 48000).astype(np.float32)
    stereo = np.stack([mono, mono], axis=1)
    a, _ = embed(mono, 48000, random_weights, "mel128", 512, hop_size=0.25, device="cpu")
    b, _ = embed(stereo, 48000, random_weights, "mel128", 512, hop_size=0.25, device="cpu")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_rejects_a_file_that_is_not_openl3(tmp_path):
    import h5py
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
        g = f.create_group("dense")
        g.attrs["weight_names"] = np.array([b"dense/kernel:0", b"dense/bias:0"])
        g.create_dataset("dense/kernel:0", data=np.zeros((4, 2), np.float32))
        g.create_dataset("dense/bias:0", data=np.zeros(2, np.float32))
    with pytest.raises(WeightsError, match="not an OpenL3 audio weight file"):
        load_weights(OpenL3("mel128", 512), str(path))


@pytest.mark.parametrize("input_repr", ["linear", "mel128", "mel256"])
def test_every_configuration_gives_the_official_sizes(tmp_path, input_repr):
    path = tmp_path / "w.h5"
    write_random_weights(path, input_repr, 512, seed=0)
    tone = np.sin(np.arange(WINDOW) * 0.05).astype(np.float32)
    for size in (512, 6144):
        model = load_model(str(path), input_repr, size, "cpu")
        emb = model.embed_centred(tone, np.array([WINDOW // 2]))
        assert emb.shape == (1, size) and np.isfinite(emb).all()
