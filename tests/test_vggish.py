"""The vggish extractor (avfusion/extractors/vggish.py): its front end against the authors' mel_features.py
and vggish_input.py transcribed here in numpy, its network against harritaylor/torchvggish's module
transcribed here, on the same state dict, its example windows measured with a click, and the store
contract through the runner on real encoded video."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from avfusion.errors import WeightsError
from avfusion.extractors import vggish
from avfusion.sources import media

from conftest import REPO, encode_video, extract, make_project

SR = 16000



# --- reference: tensorflow/models research/audioset/vggish mel_features.py, transcribed -------------

def ref_frame(data, window_length, hop_length):
    num_samples = data.shape[0]
    num_frames = 1 + int(np.floor((num_samples - window_length) / hop_length))
    shape = (num_frames, window_length) + data.shape[1:]
    strides = (data.strides[0] * hop_length,) + data.strides
    return np.lib.stride_tricks.as_strided(data, shape=shape, strides=strides)


def ref_periodic_hann(window_length):
    return 0.5 - (0.5 * np.cos(2 * np.pi / window_length * np.arange(window_length)))


def ref_stft_magnitude(signal, fft_length, hop_length=None, window_length=None):
    frames = ref_frame(signal, window_length, hop_length)
    window = ref_periodic_hann(window_length)
    windowed_frames = frames * window
    return np.abs(np.fft.rfft(windowed_frames, int(fft_length)))


def ref_hertz_to_mel(frequencies_hertz):
    return 1127.0 * np.log(1.0 + (frequencies_hertz / 700.0))


def ref_spectrogram_to_mel_matrix(num_mel_bins=20, num_spectrogram_bins=129, audio_sample_rate=8000,
                                  lower_edge_hertz=125.0, upper_edge_hertz=3800.0):
    nyquist_hertz = audio_sample_rate / 2.
    spectrogram_bins_hertz = np.linspace(0.0, nyquist_hertz, num_spectrogram_bins)
    spectrogram_bins_mel = ref_hertz_to_mel(spectrogram_bins_hertz)
    band_edges_mel = np.linspace(ref_hertz_to_mel(lower_edge_hertz), ref_hertz_to_mel(upper_edge_hertz), num_mel_bins + 2)
    mel_weights_matrix = np.empty((num_spectrogram_bins, num_mel_bins))
    for i in range(num_mel_bins):
        lower_edge_mel, center_mel, upper_edge_mel = band_edges_mel[i:i + 3]
        lower_slope = ((spectrogram_bins_mel - lower_edge_mel) / (center_mel - lower_edge_mel))
        upper_slope = ((upper_edge_mel - spectrogram_bins_mel) / (upper_edge_mel - center_mel))
        mel_weights_matrix[:, i] = np.maximum(0.0, np.minimum(lower_slope, upper_slope))
    mel_weights_matrix[0, :] = 0.0
    return mel_weights_matrix


def ref_log_mel_spectrogram(data, audio_sample_rate=8000, log_offset=0.0, window_length_secs=0.025,
                            hop_length_secs=0.010, **kwargs):
    window_length_samples = int(round(audio_sample_rate * window_length_secs))
    hop_length_samples = int(round(audio_sample_rate * hop_length_secs))
    fft_length = 2 ** int(np.ceil(np.log(window_length_samples) / np.log(2.0)))
    spectrogram = ref_stft_magnitude(data, fft_length=fft_length, hop_length=hop_length_samples,
                                     window_length=window_length_samples)
    mel_spectrogram = np.dot(spectrogram, ref_spectrogram_to_mel_matrix(
        num_spectrogram_bins=spectrogram.shape[1], audio_sample_rate=audio_sample_rate, **kwargs))
    return np.log(mel_spectrogram + log_offset)


def ref_waveform_to_examples(data):
    """vggish_input.waveform_to_examples for 16 kHz mono (vggish_params' values)."""
    log_mel = ref_log_mel_spectrogram(data, audio_sample_rate=16000, log_offset=0.01, window_length_secs=0.025,
                                      hop_length_secs=0.010, num_mel_bins=64, lower_edge_hertz=125,
                                      upper_edge_hertz=7500)
    features_sample_rate = 1.0 / 0.010
    example_window_length = int(round(0.96 * features_sample_rate))
    example_hop_length = int(round(0.96 * features_sample_rate))
    return ref_frame(log_mel, window_length=example_window_length, hop_length=example_hop_length)


# --- reference: harritaylor/torchvggish vggish.py, transcribed --------------------------------------

class RefVGG(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.features = features
        self.embeddings = nn.Sequential(nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True), nn.Linear(4096, 4096),
                                        nn.ReLU(True), nn.Linear(4096, 128), nn.ReLU(True))

    def forward(self, x):
        x = self.features(x)
        x = torch.transpose(x, 1, 3)
        x = torch.transpose(x, 1, 2)
        x = x.contiguous()
        x = x.view(x.size(0), -1)
        return self.embeddings(x)


def ref_make_layers():
    layers = []
    in_channels = 1
    for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M"]:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


def ref_postprocess(embeddings_batch, pca_eigen_vectors, pca_means):
    pca_applied = torch.mm(pca_eigen_vectors, (embeddings_batch.t() - pca_means)).t()
    clipped_embeddings = torch.clamp(pca_applied, -2.0, 2.0)
    return torch.round((clipped_embeddings - -2.0) * (255.0 / (2.0 - -2.0)))


def known_signal(seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    chirp = 0.3 * np.sin(2 * np.pi * (200 * t + 600 * t ** 2))
    return chirp + 0.2 * np.sin(2 * np.pi * 1000 * t) * (t > 1.2) + 0.01 * np.random.default_rng(0).standard_normal(len(t))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("vggish"))
    vggish.VGGishExtractor.make_weights({"weights": "random", "seed": 0, "postprocess": True}, directory)
    return directory


def test_front_end_is_mel_features(weights):
    signal = known_signal()
    reference = ref_waveform_to_examples(signal)
    embedder = vggish.Embedder(weights, False, 0)
    np.testing.assert_allclose(embedder.log_mel(signal), ref_log_mel_spectrogram(
        signal, 16000, 0.01, num_mel_bins=64, lower_edge_hertz=125, upper_edge_hertz=7500), rtol=1e-5, atol=1e-5)
    # reference example k starts at log-mel row 96 k: centred on sample 160 * 96 k + 7800
    centres = 160 * 96 * np.arange(len(reference)) + 7800
    examples = embedder.examples_at(signal, centres)
    assert examples.shape == reference.shape == (3, 96, 64)
    np.testing.assert_allclose(examples, reference, rtol=1e-5, atol=1e-5)


def test_network_and_postprocess_are_torchvggish_without_the_last_relu(weights):
    state = torch.load(os.path.join(weights, vggish.FILE), weights_only=True)
    ref = RefVGG(ref_make_layers()).eval()
    ref.load_state_dict(state)
    embedder = vggish.Embedder(weights, True, 0)
    x = ref_waveform_to_examples(known_signal()).astype(np.float32)
    pca, embedder.pca = embedder.pca, None
    ours = embedder.embed(x)
    embedder.pca = pca
    with torch.no_grad():
        theirs = ref(torch.from_numpy(x)[:, None]).numpy()
        before_relu = ref.embeddings[:-1](ref.features(torch.from_numpy(x)[:, None]).permute(0, 2, 3, 1).flatten(1)).numpy()
    assert (ours < 0).any()                       # the authors' embedding layer is linear
    np.testing.assert_allclose(np.maximum(ours, 0), theirs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours, before_relu, rtol=1e-4, atol=1e-5)
    pca = torch.load(os.path.join(weights, vggish.PCA_FILE), weights_only=False)   # our own file, for the reference
    eigen, means = torch.as_tensor(pca["pca_eigen_vectors"]).float(), torch.as_tensor(pca["pca_means"]).float()
    quantised = embedder.embed(x)
    np.testing.assert_array_equal(quantised, ref_postprocess(torch.from_numpy(ours), eigen, means.reshape(-1, 1)).numpy())
    assert quantised.min() >= 0 and quantised.max() <= 255 and np.array_equal(quantised, np.round(quantised))


def test_an_example_covers_the_0_975_s_centred_on_it(weights):
    """A click at sample s enters the example centred at c exactly when the example's 15 600 samples
    (c - 7800, c + 7800) hold it (measured on the examples the network reads)."""
    embedder = vggish.Embedder(weights, False, 0)
    signal = np.zeros(3 * SR)
    click = 24000
    signal[click] = 1.0
    centres = np.arange(click - 8200, click + 8200, 40)
    silent = embedder.examples_at(np.zeros_like(signal), centres)
    holds = np.abs(embedder.examples_at(signal, centres) - silent).max(axis=(1, 2)) > 0
    # the windows start every 160 samples, so a centre counts by the row grid it snaps to; the periodic
    # Hann window is 0 at its first sample, so a click exactly there leaves the example unchanged
    snapped = np.round((centres - 7800) / 160) * 160 + 7800
    np.testing.assert_array_equal(holds, (snapped - 7800 < click) & (click < snapped + 7800))


def test_weights_are_plain_state_dicts(tmp_path, weights):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))
    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="refused: not a plain tensor state dict"):
        vggish.load_state(str(tmp_path / "evil.pth"), vggish.network_shapes())
    assert not (tmp_path / "pwned").exists()
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError, match="not a VGGish file"):
        vggish.load_state(str(tmp_path / "wrong.pth"), vggish.network_shapes())
    assert vggish.load_state(os.path.join(weights, vggish.PCA_FILE), vggish.PCA_SHAPES)["pca_means"].shape == (128,)
    # the release's PCA file (2019) holds numpy arrays pickled under numpy 1's module name
    with zipfile.ZipFile(os.path.join(weights, vggish.PCA_FILE)) as src, \
            zipfile.ZipFile(tmp_path / "old.pth", "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                assert b"cnumpy._core.multiarray\n_reconstruct" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            dst.writestr(item, data)
    old = vggish.load_state(str(tmp_path / "old.pth"), vggish.PCA_SHAPES)
    assert torch.equal(old["pca_means"], vggish.load_state(os.path.join(weights, vggish.PCA_FILE), vggish.PCA_SHAPES)["pca_means"])
    with pytest.raises(WeightsError, match=r"vggish.postprocess: .*vggish_pca_params-970ea276.pth has no pinned SHA-256"):
        vggish.VGGishExtractor.make_weights({"weights": "official", "postprocess": True}, str(tmp_path))


@pytest.mark.slow
def test_store_contract_through_the_runner(tmp_path, monkeypatch):
    params = yaml.safe_load(open(os.path.join(REPO, "params.yaml")))
    params["vggish"].update(rate=0, postprocess=True, stores=1, device="cpu")
    frames = [Image.new("RGB", (32, 32), (10 * i, 40, 80)) for i in range(20)]
    sound = known_signal(2.0).astype(np.float32)
    videos = {"voice": encode_video(tmp_path / "voice.mp4", frames, sound, fps=10),
              "mute": encode_video(tmp_path / "mute.mp4", frames[:8], None, fps=10)}
    root = make_project(tmp_path / "project", params, [{"video_id": k, "path": v} for k, v in videos.items()])
    reader = extract(root, "vggish", monkeypatch)
    assert reader.provenance["params"] == {"postprocess": True, "rate": 0}
    assert set(reader.provenance["weights_sha256"]) == {vggish.FILE, vggish.PCA_FILE}
    rows = reader.rows("voice")
    assert np.array_equal(rows["time"], media.frame_times(videos["voice"])) and rows["valid"].all()
    assert rows["embedding"].shape == (20, 128) and len(np.unique(rows["embedding"], axis=0)) > 10   # one example per frame
    assert not reader.rows("mute")["valid"].any() and not reader.rows("mute")["embedding"].any()
    # `avfusion predict` rebuilds it from the store's provenance and computes the same rows
    from avfusion.app.predict import build
    from avfusion.extraction.base import Video
    rebuilt = build("vggish", reader.provenance, os.path.join(root, "data", "weights"), "cpu")
    again = rebuilt.rows(Video("voice", videos["voice"], media.frame_times(videos["voice"])))
    for column in ("embedding", "valid", "time"):
        np.testing.assert_array_equal(again[column], rows[column])


def test_frame_rows_hold_the_audio_centred_on_each_frame(tmp_path, weights):
    """A 0.1 s burst at 1.5 s in an encoded video (rate 0): exactly the frames within 0.4875 s of it (the
    half-span of an example, plus AAC's smearing of the burst's edges) differ from silence."""
    fps, seconds = 20, 3.0
    sound = np.zeros(int(seconds * SR), np.float32)
    on, off = int(1.5 * SR), int(1.6 * SR)
    sound[on:off] = 0.5 * np.sin(2 * np.pi * 800 * np.arange(off - on) / SR)
    frames = [Image.new("RGB", (32, 32), (4 * i, 40, 80)) for i in range(int(seconds * fps))]
    path = encode_video(tmp_path / "burst.mp4", frames, sound, fps=fps)
    times = media.frame_times(path)
    embedder = vggish.Embedder(weights, False, 0)
    rows, valid = embedder.frames(path, times)
    assert valid.all()
    silent = embedder.embed(embedder.examples_at(np.zeros(SR), [SR // 2]))[0]
    moved = np.abs(rows - silent).max(axis=1) > 1e-4
    half, smear = (vggish.HOP * (vggish.EXAMPLE - 1) + vggish.WINDOW) / 2 / SR, 0.07
    assert moved[(times > 1.5 - half + smear) & (times < 1.6 + half - smear)].all()
    assert not moved[(times < 1.5 - half - smear) | (times > 1.6 + half + smear)].any()
