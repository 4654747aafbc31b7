"""The OpenL3 audio network (Cramer et al. 2019) in PyTorch, loading the official Keras HDF5 weights.

Matches openl3 0.4.2 with its kapre 0.4.1 front end (docs/design.md §4):
- audio at 48 kHz (other rates resampled with resampy's `kaiser_best` filter, ported below), 1 s windows;
  with `center=True` window k is centred on k·hop (the signal is padded with 0.5 s of zeros in front);
- spectrogram: `tf.signal.stft` framing (periodic Hann, hop 242, no centring; `pad_end` for the mel
  inputs), magnitude, Slaney mel filterbank (librosa's default), then openl3's own decibel scaling:
  10·log10(max(x, 1e-10)) minus the window's maximum, floored at -80 dB;
- network: input batch norm, four blocks of two 3×3 convs (64, 128, 256, 512 channels) with batch norm
  and ReLU, max-pooling between blocks; the last conv (`audio_embedding_layer`) has neither; a final
  max-pool sets the embedding size, flattened in Keras' (freq, time, channel) order.
Batch norms that follow a conv are folded into it at load time (same result, one pass less).
"""
from __future__ import annotations

import functools
import math
import os

import h5py
import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F
from torch import nn

from avfusion.errors import WeightsError

SAMPLE_RATE = 48000
WINDOW = SAMPLE_RATE                 # samples per 1 s window
STFT_HOP = 242
BN_EPS = 1e-3                        # Keras BatchNormalization default
CPU_MICRO_BATCH = 2                  # windows per conv pass on a CPU (see OpenL3.forward)
DB_FLOOR, DB_RANGE = 1e-10, 80.0     # openl3's kapre_v0_1_4_magnitude_to_decibel
CHANNELS = (64, 64, 128, 128, 256, 256, 512, 512)
FRONT_ENDS = {  # n_fft, mel bands (None: linear magnitude), pad_end
    "linear": (512, None, False),
    "mel128": (2048, 128, True),
    "mel256": (2048, 256, True),
}
FINAL_POOL = {  # (freq, time) pooling of the last feature map for each embedding size
    "linear": {6144: (8, 8), 512: (32, 24)},
    "mel128": {6144: (4, 8), 512: (16, 24)},
    "mel256": {6144: (8, 8), 512: (32, 24)},
}


def _check(input_repr: str, embedding_size: int) -> None:
    if input_repr not in FRONT_ENDS:
        raise ValueError(f"input_repr must be one of {sorted(FRONT_ENDS)}, not {input_repr!r}")
    if embedding_size not in FINAL_POOL[input_repr]:
        raise ValueError(f"embedding_size must be 512 or 6144, not {embedding_size!r}")


# ---------------------------------------------------------------- front end

def _hz_to_mel(hz):
    """Slaney's mel scale (librosa, htk=False): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step, hz * 3.0 / 200.0)


def _mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), mel * 200.0 / 3.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with its defaults (Slaney scale and area norm): [n_mels, n_fft//2+1]."""
    fft_hz = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


class Spectrogram(nn.Module):
    """1 s waveforms [B, 48000] -> decibel spectrogram [B, 1, freq, time] as kapre computes it."""

    def __init__(self, input_repr: str):
        super().__init__()
        self.n_fft, n_mels, self.pad_end = FRONT_ENDS[input_repr]
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True, dtype=torch.float32))
        fbank = mel_filterbank(SAMPLE_RATE, self.n_fft, n_mels).T if n_mels else None
        self.register_buffer("mel", None if fbank is None else torch.from_numpy(np.ascontiguousarray(fbank)))

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        if self.pad_end:   # tf.signal.frame(pad_end=True): ceil(n / hop) frames, zeros after the end
            frames = -(-waves.shape[-1] // STFT_HOP)
            waves = F.pad(waves, (0, (frames - 1) * STFT_HOP + self.n_fft - waves.shape[-1]))
        frames = waves.unfold(-1, self.n_fft, STFT_HOP) * self.window
        spec = torch.fft.rfft(frames, n=self.n_fft).abs()                 # [B, time, freq]
        if self.mel is not None:
            spec = spec @ self.mel
        db = 10.0 * torch.log10(spec.clamp_min(DB_FLOOR))
        db = torch.maximum(db - db.amax(dim=(1, 2), keepdim=True), torch.tensor(-DB_RANGE, device=db.device))
        return db.transpose(1, 2).unsqueeze(1)


# ---------------------------------------------------------------- network

class OpenL3(nn.Module):
    """Waveform windows [B, 48000] at 48 kHz -> embeddings [B, embedding_size]."""

    def __init__(self, input_repr: str, embedding_size: int):
        super().__init__()
        _check(input_repr, embedding_size)
        self.input_repr, self.embedding_size = input_repr, embedding_size
        self.spectrogram = Spectrogram(input_repr)
        self.register_buffer("input_scale", torch.ones(1))   # the input batch norm, as an affine map
        self.register_buffer("input_shift", torch.zeros(1))
        channels_in = (1,) + CHANNELS[:-1]
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in zip(channels_in, CHANNELS))
        self.final_pool = FINAL_POOL[input_repr][embedding_size]
        self.autocast = False

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        x = spec * self.input_scale + self.input_shift
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i == len(self.convs) - 1:
                break                                   # the embedding layer: no batch norm, no ReLU
            x = F.relu(x)
            if i % 2 == 1:
                x = F.max_pool2d(x, 2, 2)
        # Keras pools with padding='same'; every configured pool size divides the map exactly.
        x = F.max_pool2d(x, self.final_pool, self.final_pool)
        return x.permute(0, 2, 3, 1).flatten(1)        # Keras flattens (freq, time, channel)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        spec = self.spectrogram(waves.float())          # FFT and logs stay in float32
        spec = spec.contiguous(memory_format=torch.channels_last)
        if waves.is_cuda:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                return self.features(spec).float()
        # On a CPU, a few windows at a time keep the first block's activations (13 MB per mel256
        # window) in the L3 cache: measured ~25% faster than whole batches of 32.
        return torch.cat([self.features(part) for part in spec.split(CPU_MICRO_BATCH)])

    @torch.inference_mode()
    def embed_centred(self, audio: np.ndarray, centres: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Embeddings [len(centres), D] of the 1 s windows centred on sample positions `centres` of
        48 kHz mono `audio`; the signal is taken as zero outside its extent."""
        device = self.input_scale.device
        padded = np.zeros(len(audio) + 2 * WINDOW, dtype=np.float32)
        padded[WINDOW:WINDOW + len(audio)] = audio
        views = np.lib.stride_tricks.sliding_window_view(padded, WINDOW)
        # window of centre c starts at c - WINDOW/2 (+ WINDOW of padding); windows fully outside are all zeros
        starts = np.clip(np.asarray(centres, dtype=np.int64) + WINDOW // 2, 0, len(views) - 1)
        out = np.empty((len(starts), self.embedding_size), dtype=np.float32)
        for lo in range(0, len(starts), batch_size):
            batch = torch.from_numpy(views[starts[lo:lo + batch_size]].copy()).to(device, non_blocking=True)
            out[lo:lo + len(batch)] = self(batch).cpu().numpy()
        return out


# ---------------------------------------------------------------- official weight files

def _keras_layers(path: str) -> list[tuple[str, list[np.ndarray]]]:
    """(layer name, weight arrays) in file order, for every layer that has weights."""
    def text(value):
        return value.decode() if isinstance(value, bytes) else str(value)

    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        layers = []
        for name in map(text, root.attrs["layer_names"]):
            names = [text(n) for n in root[name].attrs.get("weight_names", [])]
            if names:
                layers.append((name, [np.asarray(root[name][n]) for n in names]))
        return layers


def load_weights(model: OpenL3, path: str) -> OpenL3:
    """Fill `model` from an official-layout Keras HDF5 file, matching layers by order, not by name
    (names differ between Keras versions). Conv kernels are (kh, kw, in, out); batch norms are
    (gamma, beta, moving_mean, moving_variance)."""
    norms, convs = [], []
    for _, arrays in _keras_layers(path):
        if len(arrays) == 4 and all(a.ndim == 1 for a in arrays):
            norms.append(arrays)
        elif len(arrays) == 2 and arrays[0].ndim == 4 and arrays[0].shape[:2] == (3, 3):
            convs.append(arrays)
        # anything else is a fixed front-end kernel of old kapre versions, recomputed here
    expected = [(3, 3, c_in, c_out) for c_in, c_out in zip((1,) + CHANNELS[:-1], CHANNELS)]
    if [k.shape for k, _ in convs] != expected or len(norms) != len(CHANNELS):
        raise WeightsError(f"{path}: not an OpenL3 audio weight file (found {len(convs)} conv and {len(norms)} "
                         f"batch-norm layers with shapes {[k.shape for k, _ in convs]})")

    def affine(gamma, beta, mean, var):
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + BN_EPS)
        return scale, beta - mean * scale

    scale, shift = affine(*norms[0])
    model.input_scale.fill_(float(scale[0]))
    model.input_shift.fill_(float(shift[0]))
    post_conv_norms = norms[1:] + [None]        # the embedding layer has no batch norm after it
    with torch.no_grad():
        for conv, (kernel, bias), norm in zip(model.convs, convs, post_conv_norms):
            weight, bias = kernel.transpose(3, 2, 0, 1).astype(np.float64), bias.astype(np.float64)
            if norm is not None:
                scale, shift = affine(*norm)
                weight, bias = weight * scale[:, None, None, None], bias * scale + shift
            conv.weight.copy_(torch.from_numpy(weight))
            conv.bias.copy_(torch.from_numpy(bias))
    return model


def load_model(weights: str, input_repr: str, embedding_size: int, device: str = "cpu") -> OpenL3:
    """The network for a weight file, built once per (file version, settings, device) and then reused;
    channels_last everywhere, bf16 autocast on CUDA."""
    path = os.path.abspath(weights)
    stat = os.stat(path)
    return _build_model(path, stat.st_mtime_ns, stat.st_size, input_repr, embedding_size, device)


@functools.lru_cache(maxsize=4)
def _build_model(path, mtime_ns, size, input_repr, embedding_size, device) -> OpenL3:
    # channels_last: oneDNN's and cuDNN's fastest conv layout (measured ~1.4x on this project's CPU)
    model = load_weights(OpenL3(input_repr, embedding_size), path).eval()
    model = model.to(device, memory_format=torch.channels_last)
    model.autocast = device.startswith("cuda")
    return model


def write_random_weights(path: str, input_repr: str, embedding_size: int, seed: int) -> None:
    """Seeded random weights in the official Keras HDF5 layout (the offline demo's stand-in).

    He-normal kernels; batch norms with realistic statistics (the input one normalises the
    [-80, 0] dB spectrogram). The same file serves both embedding sizes, like the official files;
    `embedding_size` is only checked.
    """
    _check(input_repr, embedding_size)
    rng = np.random.default_rng(seed)

    def norm(n, mean, std):
        return [rng.uniform(0.8, 1.2, n), rng.normal(0.0, 0.1, n),
                mean + rng.normal(0.0, 0.1, n), std ** 2 * rng.uniform(0.8, 1.25, n)]

    layers = [("batch_normalization", ["gamma", "beta", "moving_mean", "moving_variance"], norm(1, -40.0, 20.0))]
    for i, (c_in, c_out) in enumerate(zip((1,) + CHANNELS[:-1], CHANNELS)):
        name = "audio_embedding_layer" if i == len(CHANNELS) - 1 else f"conv2d_{i + 1}"
        kernel = rng.normal(0.0, math.sqrt(2.0 / (9 * c_in)), (3, 3, c_in, c_out))
        layers.append((name, ["kernel", "bias"], [kernel, rng.normal(0.0, 0.01, c_out)]))
        if i < len(CHANNELS) - 1:
            # ReLU after He init keeps roughly unit second moment: mean ~0.5·σ, σ ~ sqrt(1.5)
            layers.append((f"batch_normalization_{i + 2}", ["gamma", "beta", "moving_mean", "moving_variance"],
                           norm(c_out, 0.0, 1.0)))
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([name.encode() for name, _, _ in layers])
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.3.1"
        for name, weight_names, arrays in layers:
            group = f.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}/{w}:0".encode() for w in weight_names])
            for w, array in zip(weight_names, arrays):
                group.create_dataset(f"{name}/{w}:0", data=np.asarray(array, dtype=np.float32))


# ---------------------------------------------------------------- resampling (resampy kaiser_best)

KAISER_ZEROS, KAISER_TABLE = 64, 2 ** 9             # zero crossings kept, filter table entries per crossing
KAISER_BETA, KAISER_ROLLOFF = 14.769656459379492, 0.9475937167399596


@functools.lru_cache(maxsize=1)
def _kaiser_best() -> np.ndarray:
    """Right wing of resampy's precomputed `kaiser_best` windowed-sinc filter."""
    n = KAISER_ZEROS * KAISER_TABLE
    sinc = KAISER_ROLLOFF * np.sinc(KAISER_ROLLOFF * np.linspace(0, KAISER_ZEROS, n + 1))
    return scipy.signal.windows.kaiser(2 * n + 1, KAISER_BETA)[n:] * sinc


def resample(audio: np.ndarray, sr: int, target: int = SAMPLE_RATE, chunk: int = 1 << 14) -> np.ndarray:
    """resampy.resample(audio, sr, target, filter='kaiser_best'), vectorised over output samples.

    The filter weights depend only on an output sample's phase (t mod `up`), so they are tabulated
    once per phase, from exact integer positions (resampy accumulates the position in floating
    point; the difference is at rounding level).
    """
    if sr == target:
        return np.asarray(audio, dtype=np.float32)
    if sr != int(sr) or sr <= 0:
        raise ValueError(f"sample rate must be a positive integer, not {sr}")
    sr = int(sr)
    g = math.gcd(sr, target)
    up, down = target // g, sr // g
    scale = min(1.0, target / sr)
    win = _kaiser_best() * scale
    delta = np.diff(win, append=win[-1])
    step = int(scale * KAISER_TABLE)
    taps = np.arange(len(win) // step)             # the most taps one wing can use

    def wing(phase):                               # weights [phases, taps] of one wing of the filter
        index = phase * KAISER_TABLE
        offset = index.astype(np.int64)
        idx = np.minimum(offset[:, None] + taps * step, len(win) - 1)
        used = taps < ((len(win) - offset) // step)[:, None]
        return np.where(used, win[idx] + (index - offset)[:, None] * delta[idx], 0.0)

    frac = scale * (np.arange(up) * down % up) / up
    left, right = wing(frac), wing(scale - frac)
    x = np.asarray(audio, dtype=np.float64)
    pad = len(taps) + 1
    xp = np.pad(x, pad)                            # resampy stops at the signal's ends: zeros do the same
    n_out = int(len(x) * float(target) / float(sr))
    out = np.empty(n_out, dtype=np.float32)
    for lo in range(0, n_out, chunk):
        t = np.arange(lo, min(lo + chunk, n_out), dtype=np.int64)
        n, phase = t * down // up + pad, t % up
        out[lo:lo + len(t)] = (np.einsum("ij,ij->i", left[phase], xp[n[:, None] - taps])
                               + np.einsum("ij,ij->i", right[phase], xp[n[:, None] + 1 + taps]))
    return out


# ---------------------------------------------------------------- the official entry point

def window_count(samples: int, hop: int, center: bool) -> int:
    """openl3's number of windows for a 48 kHz signal of `samples` samples."""
    length = samples + (WINDOW // 2 if center else 0)
    return 1 if length <= WINDOW else 1 + int(math.ceil((length - WINDOW) / hop))


def embed(audio, sr, weights, input_repr, embedding_size, hop_size, center=True, batch_size=32, device=None):
    """openl3.get_audio_embedding for one signal: (embeddings [T, D] float32, timestamps [T] seconds).

    `audio` is [n] or [n, channels] (channels are averaged); `weights` is an official-format file.
    """
    audio = np.asarray(audio)
    if audio.size == 0:
        raise ValueError("empty audio")
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    audio = resample(audio, sr)
    hop = int(hop_size * SAMPLE_RATE)
    count = window_count(len(audio), hop, center)
    # window k covers [k·hop, k·hop + 1 s) of the (front-padded when centred) signal
    centres = np.arange(count) * hop + (0 if center else WINDOW // 2)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(os.fspath(weights), input_repr, embedding_size, device)
    return model.embed_centred(audio, centres, batch_size), np.arange(count) * hop_size
