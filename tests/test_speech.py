"""The speech extractor (avfusion/extractors/speech.py) on real encoded videos: its rows are transformers'
own forward pass averaged over each frame, its time base is measured on the convolutional front end,
chunked encoding matches whole-signal encoding, the emotion head is audEERING's, and the store contract
holds through the runner."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from avfusion.errors import ParamsError, UserError, WeightsError
from avfusion.extraction.framewise import frame_intervals
from avfusion.extractors import speech
from avfusion.params import validate
from avfusion.sources import media

from conftest import REPO, encode_video, extract, make_project

SR, FPS = 16000, 15


def blank(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (32, 32), (10 * (i % 20), 40, 80)) for i in range(n)]


def voiced(seconds: float, seed: int = 0) -> np.ndarray:
    """A harmonic sound with a wandering pitch and loudness: audio that varies over time."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.7 * t) + 10 * rng.standard_normal()
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.2 + 0.15 * np.sin(2 * np.pi * 1.3 * t))
    return (wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """model name -> a folder of its seeded random weights, as the extractor makes them."""
    out = {}
    for name in speech.MODELS:
        directory = tmp_path_factory.mktemp(name)
        speech.SpeechExtractor.make_weights({"model": name, "weights": "random", "seed": 0}, str(directory))
        out[name] = str(directory)
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = encode_video(tmp_path_factory.mktemp("clip") / "voice.mp4", blank(3 * FPS), voiced(3.0), fps=FPS)
    return path, media.frame_times(path)


def overlap_mean(steps: np.ndarray, first_centre: float, times: np.ndarray) -> np.ndarray:
    """Reference: each 20 ms row (centred at first_centre + 20 ms k) weighted by its overlap with the frame."""
    centres = first_centre + speech.STEP * np.arange(len(steps))
    out = np.zeros((len(times), steps.shape[1]))
    for i, (lo, hi) in enumerate(zip(*frame_intervals(times))):
        overlap = np.clip(np.minimum(hi, centres + speech.STEP / 2) - np.maximum(lo, centres - speech.STEP / 2), 0, None)
        out[i] = overlap @ steps / overlap.sum()
    return out


# --- the time base, measured ---------------------------------------------------------------------

def test_front_end_receptive_field_and_stride_are_400_and_320_samples(weights):
    """One sample changed at p moves exactly the encoder frames k with 320k <= p < 320k + 400 (the
    layer-normed front end of the large layout: no normalisation over time hides the locality)."""
    from transformers import AutoModel
    model = AutoModel.from_pretrained(weights["wav2vec2-large-robust-12-ft-emotion-msp-dim"]).eval()
    x = torch.from_numpy(voiced(0.5))[None]
    with torch.no_grad():
        base = model.feature_extractor(x)[0]
        assert base.shape[1] == speech.encoder_frames(x.shape[1])
        for p in (0, 399, 400, 1000, 4321):
            bumped = x.clone()
            bumped[0, p] += 0.5
            moved = (model.feature_extractor(bumped)[0] - base).abs().amax(dim=0) > 0
            expected = [k for k in range(base.shape[1]) if 320 * k <= p < 320 * k + 400]
            assert torch.nonzero(moved).flatten().tolist() == expected, p
    for n in (400, 719, 720, 16000, 16399):
        with torch.no_grad():
            assert model.feature_extractor(torch.zeros(1, n)).shape[2] == speech.encoder_frames(n)


def test_rows_line_up_with_the_frames_of_a_tone_burst(tmp_path, weights):
    """A burst from 1.0 s to 1.6 s: the frame-mapped front-end response rises at the frame holding 1.0 s
    and falls at the one holding 1.6 s (the mapping the extractor applies to every layer)."""
    from transformers import AutoModel
    sound = np.zeros(int(2.4 * SR), np.float32)
    on, off = int(1.0 * SR), int(1.6 * SR)
    sound[on:off] = 0.5 * np.sin(2 * np.pi * 700 * np.arange(off - on) / SR)
    path = encode_video(tmp_path / "burst.mp4", blank(int(2.4 * FPS)), sound, fps=FPS)
    times = media.frame_times(path)
    samples, start = media.read_audio(path, SR)
    model = AutoModel.from_pretrained(weights["wav2vec2-large-robust-12-ft-emotion-msp-dim"]).eval()
    with torch.no_grad():
        conv = model.feature_extractor(torch.from_numpy(samples)[None])[0].T.numpy()
    response = np.abs(conv - conv[:20].mean(axis=0)).sum(axis=1)      # distance from the silent rows
    rows = speech.to_video_frames(response[:, None], start, times)[:, 0]
    loud = rows > rows.max() / 2
    frame = 1 / FPS
    assert abs(times[np.argmax(loud)] - 1.0) <= frame / 2 + 0.01
    assert abs(times[len(loud) - 1 - np.argmax(loud[::-1])] - 1.6) <= frame / 2 + 0.01


# --- equal to transformers' own forward pass ------------------------------------------------------

@pytest.mark.parametrize(("name", "layer"), [(name, "mean") for name in speech.MODELS] + [("wavlm-base-plus", 1)])
def test_rows_are_transformers_hidden_states_averaged_over_each_frame(clip, weights, name, layer):
    from transformers import AutoModel, Wav2Vec2FeatureExtractor
    path, times = clip
    encoder = speech.SpeechEncoder(weights[name], speech.MODELS[name].emotion, layer, chunk=60, context=0)
    rows, valid = encoder.frames(path, times)
    assert valid.all() and rows.dtype == np.float32

    samples, start = media.read_audio(path, SR)
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(weights[name])
    assert extractor.do_normalize
    inputs = extractor(samples, sampling_rate=SR, return_tensors="pt").input_values
    model = AutoModel.from_pretrained(weights[name]).eval()
    with torch.no_grad():
        out = model(inputs, output_hidden_states=True)
    hidden = torch.stack(out.hidden_states).mean(0)[0] if layer == "mean" else out.hidden_states[layer][0]
    first_centre = start + 200 / SR
    expected = overlap_mean(hidden.numpy().astype(np.float64), first_centre, times)
    width = model.config.hidden_size
    np.testing.assert_allclose(rows[:, :width], expected, rtol=1e-4, atol=1e-4)


class EmotionModel(nn.Module):
    """audEERING's model card (wav2vec2-large-robust-12-ft-emotion-msp-dim), transcribed: Wav2Vec2Model,
    mean of the last hidden state over time, RegressionHead (dropout, dense, tanh, dropout, out_proj)."""

    def __init__(self, config):
        from transformers import Wav2Vec2Model
        super().__init__()
        self.wav2vec2 = Wav2Vec2Model(config)
        self.classifier = nn.Module()
        self.classifier.dropout = nn.Dropout(config.final_dropout)
        self.classifier.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.classifier.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_values):
        hidden_states = self.wav2vec2(input_values)[0]
        pooled = torch.mean(hidden_states, dim=1)
        x = self.classifier.dropout(pooled)
        x = torch.tanh(self.classifier.dense(x))
        x = self.classifier.out_proj(self.classifier.dropout(x))
        return pooled, x


def test_emotion_head_is_audeerings_on_the_window_around_each_frame(tmp_path, weights):
    """On a clip shorter than the emotion window, the middle frame's window holds the whole signal: its
    arousal / dominance / valence are the model card's EmotionModel on that signal."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, Wav2Vec2FeatureExtractor
    name = "wav2vec2-large-robust-12-ft-emotion-msp-dim"
    directory = weights[name]
    reference = EmotionModel(AutoConfig.from_pretrained(directory)).eval()
    assert not reference.load_state_dict(load_file(os.path.join(directory, "model.safetensors")), strict=True).missing_keys

    seconds, fps, window = 2.0, 10, 3.0
    path = encode_video(tmp_path / "two.mp4", blank(int(seconds * fps)), voiced(seconds, 1), fps=fps)
    times = media.frame_times(path)
    samples, start = media.read_audio(path, SR)
    encoder = speech.SpeechEncoder(directory, True, "mean", chunk=60, context=0, emotion_window=window)
    rows, valid = encoder.frames(path, times)
    assert rows.shape == (len(times), 64 + 3)
    inputs = Wav2Vec2FeatureExtractor.from_pretrained(directory)(samples, sampling_rate=SR, return_tensors="pt").input_values
    with torch.no_grad():
        _, logits = reference(inputs)
    # the frame whose centred window covers every 20 ms step of the signal
    first, last = start + 40 / SR, start + 40 / SR + speech.STEP * speech.encoder_frames(len(samples))
    middle = int(np.argmin(np.abs(times - (first + last) / 2)))
    covered = (times[middle] - window / 2 <= first) and (times[middle] + window / 2 >= last)
    assert covered, (times[middle], first, last)
    np.testing.assert_allclose(rows[middle, -3:], logits[0].numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_chunked_encoding_matches_the_whole_signal(weights):
    """40 s encoded in 10 s chunks with 3 s of context each side vs in one pass: equal to a tolerance
    (attention spans the whole input, so context far away still moves the rows a little)."""
    audio = np.concatenate([voiced(10.0, s) for s in range(4)])
    for name in ("wavlm-base-plus", "wav2vec2-base"):
        whole, _ = speech.SpeechEncoder(weights[name], False, "mean", chunk=60, context=0).states(audio)
        encoder = speech.SpeechEncoder(weights[name], False, "mean", chunk=10, context=3, batch_size=2)
        assert [c[1] for c in encoder.plan(len(whole))] == [650, 800, 800, 649]
        chunked, _ = encoder.states(audio)
        assert chunked.shape == whole.shape
        scale = np.abs(whole).mean()
        assert np.abs(chunked - whole).mean() < 0.02 * scale, name
        assert np.abs(chunked - whole).max() < 0.3 * scale, name


# --- params, weights, the store --------------------------------------------------------------------

def test_bad_layer_and_missing_pins_are_one_line(tmp_path):
    with pytest.raises(ParamsError, match=r"speech.layer must be mean or an integer from 0 to 2 for these weights, not 5"):
        validate("speech", {"layer": 5})
    with pytest.raises(ParamsError, match=r"speech.layer must be mean or a hidden layer index >= 0, not 'last'"):
        validate("speech", {"layer": "last"})
    assert validate("speech", {"layer": 12, "weights": "official"})["layer"] == 12
    with pytest.raises(WeightsError, match=r"no SHA-256 is pinned .* set speech.weights to its path"):
        speech.SpeechExtractor.make_weights({"model": "wav2vec2-base", "weights": "official"}, str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(WeightsError, match=r"must be a model.safetensors with config.json and preprocessor_config.json"):
        speech.SpeechExtractor.make_weights({"model": "hubert-base", "weights": str(tmp_path / "model.safetensors")},
                                            str(tmp_path / "out"))


@pytest.mark.slow
def test_store_contract_through_the_runner(tmp_path, monkeypatch, weights):
    params = yaml.safe_load(open(os.path.join(REPO, "params.yaml")))
    params["speech"].update(model="wav2vec2-large-robust-12-ft-emotion-msp-dim", stores=1, device="cpu")
    videos = {"voice": encode_video(tmp_path / "voice.mp4", blank(20), voiced(2.0), fps=10),
              "mute": encode_video(tmp_path / "mute.mp4", blank(8), None, fps=10)}
    root = make_project(tmp_path / "project", params, [{"video_id": k, "path": v} for k, v in videos.items()])
    reader = extract(root, "speech", monkeypatch)
    prov = reader.provenance
    assert prov["extractor"] == "speech-transformers/1" and prov["params"]["model"].startswith("wav2vec2-large")
    assert prov["columns"][-3:] == ["arousal", "dominance", "valence"] and len(prov["columns"]) == 67
    assert set(prov["weights_sha256"]) == set(speech.FILES)
    rows = reader.rows("voice")
    assert np.array_equal(rows["time"], media.frame_times(videos["voice"])) and rows["valid"].all()
    assert rows["embedding"].shape == (20, 67) and np.isfinite(rows["embedding"]).all()
    assert not reader.rows("mute")["valid"].any() and not reader.rows("mute")["embedding"].any()
    # `avfusion predict` rebuilds it from the store's provenance and computes the same rows
    from avfusion.app.predict import build
    from avfusion.extraction.base import Video
    rebuilt = build("speech", reader.provenance, os.path.join(root, "data", "weights"), "cpu")
    again = rebuilt.rows(Video("voice", videos["voice"], media.frame_times(videos["voice"])))
    for column in ("embedding", "valid", "time"):
        np.testing.assert_array_equal(again[column], rows[column])
    monkeypatch.setattr(speech.SpeechExtractor, "rows", lambda self, video: pytest.fail(f"re-read {video.id}"))
    extract(root, "speech", monkeypatch)           # resumes: nothing to do


def test_unknown_model_is_refused_before_any_work():
    with pytest.raises(UserError, match=r"speech.model must be one of wavlm-base-plus, wav2vec2-base"):
        validate("speech", {"model": "whisper"})
