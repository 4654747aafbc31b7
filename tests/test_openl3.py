"""OpenL3 port: parity with the official library, resampling, and the random-weights round trip."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avfusion import openl3
from avfusion.errors import WeightsError

FIXTURE = Path(__file__).parent / "fixtures" / "openl3-mel256-512"   # made with the official library


@pytest.fixture(scope="module")
def fixture():
    meta = json.loads((FIXTURE / "meta.json").read_text())
    return meta, np.load(FIXTURE / "audio.npy")


def test_matches_official_openl3(fixture):
    meta, audio = fixture
    expected = np.load(FIXTURE / "expected_embedding.npy")
    emb, ts = openl3.embed(audio, meta["sample_rate"], FIXTURE / "weights.h5", meta["input_repr"],
                           meta["embedding_size"], meta["hop_size"], center=meta["center"], device="cpu")
    assert emb.shape == expected.shape and emb.dtype == np.float32
    error = np.abs(emb - expected).max() / np.abs(expected).max()
    assert error <= 1e-3, f"max abs error {error:.2e} of the embedding scale"
    np.testing.assert_array_equal(ts, np.load(FIXTURE / "expected_timestamps.npy"))


def test_front_end_shapes_match_the_keras_models():
    waves = torch.zeros(2, openl3.WINDOW)
    waves[:, ::100] = 1.0
    for repr_, shape in {"linear": (257, 197), "mel128": (128, 199), "mel256": (256, 199)}.items():
        spec = openl3.Spectrogram(repr_)(waves)
        assert spec.shape == (2, 1, *shape)
        assert spec.max() == 0.0 and spec.min() >= -openl3.DB_RANGE   # per-window max is 0 dB


def test_mel_filterbank_is_slaney():
    fb = openl3.mel_filterbank(48000, 2048, 128)
    assert fb.shape == (128, 1025) and (fb >= 0).all()
    # Slaney area normalisation: each triangle's peak is 2 / (its width in Hz), up to bin sampling
    assert np.all(fb.sum(axis=1) > 0)
    assert fb[0].argmax() < fb[-1].argmax()


def test_resample_matches_band_limited_interpolation():
    sr = 16000
    t = np.arange(sr) / sr
    tone = np.sin(2 * np.pi * 440.0 * t)
    out = openl3.resample(tone, sr)
    assert len(out) == 48000
    t48 = np.arange(48000) / 48000
    inner = slice(2000, -2000)          # away from the zero-padded ends
    np.testing.assert_allclose(out[inner], np.sin(2 * np.pi * 440.0 * t48)[inner], atol=1e-4)
    # Downsampling: resampy steps through its filter table in int(scale * 512) = 170 entries per input
    # sample instead of 170.67, a gain of ~1.003 that the port reproduces.
    down = openl3.resample(out, 48000, target=sr)
    assert len(down) == sr
    np.testing.assert_allclose(down[500:-500], tone[500:-500] * 1.0027, atol=1e-3)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "audio.h5"
    openl3.write_random_weights(path, "mel128", 512, seed=3)
    return path


def test_random_weights_round_trip(random_weights, tmp_path):
    again = tmp_path / "again.h5"
    openl3.write_random_weights(again, "mel128", 512, seed=3)
    for (_, xs), (_, ys) in zip(openl3._keras_layers(again), openl3._keras_layers(random_weights)):
        assert all(np.array_equal(a, b) for a, b in zip(xs, ys))     # seeded: the same file again
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, 3 * 16000).astype(np.float32)
    emb, ts = openl3.embed(audio, 16000, random_weights, "mel128", 512, hop_size=0.5, device="cpu")
    # 3 s, centred: 3.5 s of signal -> 1 + ceil(2.5 / 0.5) windows
    assert emb.shape == (6, 512) and np.isfinite(emb).all() and emb.std() > 0
    np.testing.assert_allclose(ts, np.arange(6) * 0.5)
    big, _ = openl3.embed(audio, 16000, random_weights, "mel128", 6144, hop_size=0.5, device="cpu")
    assert big.shape == (6, 6144)


def test_stereo_is_mixed_down(random_weights):
    mono = np.random.default_rng(1).normal(0, 0.1, 48000).astype(np.float32)
    stereo = np.stack([mono, mono], axis=1)
    a, _ = openl3.embed(mono, 48000, random_weights, "mel128", 512, hop_size=0.25, device="cpu")
    b, _ = openl3.embed(stereo, 48000, random_weights, "mel128", 512, hop_size=0.25, device="cpu")
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
        openl3.load_weights(openl3.OpenL3("mel128", 512), str(path))


@pytest.mark.parametrize("input_repr", ["linear", "mel128", "mel256"])
def test_every_configuration_gives_the_official_sizes(tmp_path, input_repr):
    path = tmp_path / "w.h5"
    openl3.write_random_weights(path, input_repr, 512, seed=0)
    tone = np.sin(np.arange(openl3.WINDOW) * 0.05).astype(np.float32)
    for size in (512, 6144):
        model = openl3.load_model(str(path), input_repr, size, "cpu")
        emb = model.embed_centred(tone, np.array([openl3.WINDOW // 2]))
        assert emb.shape == (1, size) and np.isfinite(emb).all()
