"""`vggish`: VGGish (Hershey et al. 2017, the AudioSet embedding; the audio features of LFAN and RJCMA)
in PyTorch, one 128-d embedding per 0.96 s example centred on each video frame.

Front end, as tensorflow/models research/audioset/vggish (vggish_input.py, mel_features.py): 16 kHz
mono, 25 ms periodic-Hann windows every 10 ms (no centring), 512-point FFT magnitude, 64 mel bands
on the HTK scale (1127 ln(1 + f/700)) from 125 to 7500 Hz with the DC bin zeroed, log(mel + 0.01),
examples of 96 rows x 64 bands. Network (vggish_slim.py): conv64 - pool - conv128 - pool - conv256 x2 -
pool - conv512 x2 - pool (3x3 'same' convs with ReLU, 2x2 max-pools), flattened in TensorFlow's (time,
freq, channel) order, fc4096 x2 with ReLU, fc128. The embedding layer has no ReLU in the authors'
vggish_slim.py; harritaylor/torchvggish, whose state-dict layout and released weights are read here,
puts a ReLU after it: this port follows the authors (tests/test_vggish.py checks that ReLU of it is
torchvggish's output). `vggish.postprocess: true` applies the AudioSet release's PCA (with whitening),
clipping to [-2, 2] and 8-bit quantisation (0..255), from the PCA params file.

Alignment, as openl3's (avfusion/extractors/openl3.py): example windows are centred on the grid of
`vggish.rate` per second and each frame takes the nearest one, or with rate 0 one example is centred on
every frame. An example centred at c covers [c - 0.4875 s, c + 0.4875 s) (96 rows of 25 ms windows
every 10 ms: 15 600 samples); audio outside the signal is zeros. A frame is valid when its timestamp
falls inside the audio. Audio is decoded at 16 kHz by ffmpeg (vggish_input.py resamples with resampy).

Weights: `random` (seeded, the offline default), `official` (harritaylor/torchvggish release v0.1:
vggish-10086976.pth, the TensorFlow checkpoint ported, Apache 2.0; pinned by SHA-256), or the path of
a state dict in that layout (with `vggish_pca_params.pth` beside it for `postprocess`). The .pth files
are loaded with torch.load(weights_only=True); the PCA file's numpy arrays are allowed by name only.
"""
from __future__ import annotations

import glob
import math
import os

import numpy as np
import torch
from torch import nn

from avfusion.errors import WeightsError
from avfusion.extraction.base import DeviceParams, Extractor, Video, register, weights_param
from avfusion.extraction.framewise import SAMPLE_RATE, frame_audio
from avfusion.extraction.weights import Download, copy_user_file, fetch
from avfusion.params import integer, number

WINDOW, HOP, N_FFT = 400, 160, 512          # 25 ms, 10 ms, 2 ** ceil(log2(400))
N_MELS, MEL_LOW, MEL_HIGH = 64, 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE = 96                                # log-mel rows per example (0.96 s)
EMBEDDING = 128
QUANTIZE = (-2.0, 2.0)
PAD = 50 * HOP                              # zeros each side (0.5 s): every example inside the audio is whole
BLOCK = 6000                                # windows per FFT call

RELEASE = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
WEIGHTS = Download(RELEASE + "vggish-10086976.pth", "10086976245803799d9194e9a73d9b6c1549c71d1b80106f5cade5608a561f4b")
PCA = Download(RELEASE + "vggish_pca_params-970ea276.pth", "")     # full SHA-256 not found: not downloaded
FILE, PCA_FILE = "vggish.pth", "vggish_pca_params.pth"
CHANNELS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")       # torchvggish.make_layers


def hertz_to_mel(hz):
    return 1127.0 * np.log(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_matrix() -> np.ndarray:
    """[257, 64] mel_features.spectrogram_to_mel_matrix(64, 257, 16000, 125, 7500)."""
    bins = hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1))
    edges = np.linspace(hertz_to_mel(MEL_LOW), hertz_to_mel(MEL_HIGH), N_MELS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(0.0, np.minimum((bins[:, None] - lower) / (centre - lower),
                                         (upper - bins[:, None]) / (upper - centre)))
    weights[0] = 0.0                        # HTK leaves out the DC bin
    return weights


class LogMel:
    """mel_features.log_mel_spectrogram with VGGish's settings, in torch float64."""

    def __init__(self):
        self.window = 0.5 - 0.5 * torch.cos(2 * math.pi / WINDOW * torch.arange(WINDOW, dtype=torch.float64))
        self.mel = torch.from_numpy(mel_matrix())

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """[rows, 64] for windows starting every 160 samples (whole windows only)."""
        audio = torch.from_numpy(np.asarray(samples, np.float64))
        if len(audio) < WINDOW:
            return np.zeros((0, N_MELS))
        rows = [torch.log(torch.fft.rfft(block * self.window, n=N_FFT).abs() @ self.mel + LOG_OFFSET)
                for block in audio.unfold(0, WINDOW, HOP).split(BLOCK)]
        return torch.cat(rows).numpy()


class VGGish(nn.Module):
    """Examples [B, 1, 96, 64] -> embeddings [B, 128] (before PCA); parameters named as torchvggish's."""

    def __init__(self):
        super().__init__()
        layers, c_in = [], 1
        for v in CHANNELS:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=True)]
                c_in = v
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True), nn.Linear(4096, 4096),
                                        nn.ReLU(True), nn.Linear(4096, EMBEDDING))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)                                   # [B, 512, 6, 4]
        return self.embeddings(x.permute(0, 2, 3, 1).flatten(1))   # TensorFlow's (time, freq, channel) order


def postprocess(embeddings: torch.Tensor, eigen_vectors: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """The AudioSet release's PCA (with whitening), clip to [-2, 2], 8-bit quantisation (vggish_postprocess.py)."""
    pca = (embeddings - means.reshape(1, -1)) @ eigen_vectors.T
    low, high = QUANTIZE
    return torch.round((pca.clamp(low, high) - low) * (255.0 / (high - low)))


def _numpy_globals() -> list:
    """What torch.load(weights_only=True) must allow to read a dict of plain numpy arrays (the PCA file)."""
    reconstruct = np._core.multiarray._reconstruct
    return [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
            *(type(np.dtype(c)) for c in ("float32", "float64"))]


def load_state(path: str, expected: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """A .pth of plain tensors / numpy arrays with exactly the `expected` names and shapes."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"vggish.weights: {path}: refused: not a plain tensor state dict ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"vggish.weights: {path}: refused: expected a dict of tensors")
    state = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in state.items()}
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if {k: shapes.get(k) for k in expected} != {k: tuple(s) for k, s in expected.items()}:
        wrong = sorted(k for k in expected if shapes.get(k) != tuple(expected[k]))
        raise WeightsError(f"vggish.weights: {path}: not a VGGish file in torchvggish's layout ({wrong[0]}: "
                           f"{shapes.get(wrong[0])} instead of {tuple(expected[wrong[0]])})")
    return state


def network_shapes() -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in VGGish().state_dict().items()}


PCA_SHAPES = {"pca_eigen_vectors": (EMBEDDING, EMBEDDING), "pca_means": (EMBEDDING,)}


def write_random_weights(directory: str, seed: int, pca: bool) -> None:
    """Seeded He-normal weights in torchvggish's layout, and with `pca` a random rotation as the PCA."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in network_shapes().items():
        if key.endswith("bias"):
            state[key] = torch.zeros(shape)
        else:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)
    torch.save(state, os.path.join(directory, FILE))
    if pca:
        rotation, _ = torch.linalg.qr(torch.randn(EMBEDDING, EMBEDDING, generator=generator, dtype=torch.float64))
        torch.save({"pca_eigen_vectors": rotation.numpy(), "pca_means": torch.randn(EMBEDDING, generator=generator).numpy()},
                   os.path.join(directory, PCA_FILE))


class Params(DeviceParams):
    weights: weights_param("random", "official") = "random"
    seed: integer(ge=0) = 0
    postprocess: bool = False             # the AudioSet release's PCA, clipping and 8-bit quantisation
    rate: number(ge=0) = 5                # examples per second (0 = one centred on every video frame)
    batch_size: integer(ge=1) = 64


class Embedder:
    """The network and front end, built once; `frames(path, times)` per video."""

    def __init__(self, directory: str, postprocess: bool, rate: float, device: str = "cpu", batch_size: int = 64):
        self.model = VGGish().eval()
        self.model.load_state_dict(load_state(os.path.join(directory, FILE), network_shapes()))
        self.model = self.model.to(device, memory_format=torch.channels_last)
        self.pca = None
        if postprocess:
            pca = load_state(os.path.join(directory, PCA_FILE), PCA_SHAPES)
            self.pca = pca["pca_eigen_vectors"].to(device), pca["pca_means"].to(device)
        self.log_mel, self.rate, self.device, self.batch_size = LogMel(), rate, device, batch_size
        self.examples = 0

    def examples_at(self, samples: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """[len(centres), 96, 64] log-mel examples centred on sample positions `centres`."""
        rows = self.log_mel(np.concatenate([np.zeros(PAD), samples, np.zeros(PAD)]))
        # rows j0 .. j0+95 span samples [160 j0, 160 j0 + 15600) of the padded signal: centre 160 j0 + 7800
        first = np.round((np.asarray(centres, np.float64) + PAD - (HOP * (EXAMPLE - 1) + WINDOW) / 2) / HOP).astype(np.int64)
        first = np.clip(first, 0, max(len(rows) - EXAMPLE, 0))
        if len(rows) < EXAMPLE:
            rows = np.concatenate([rows, np.full((EXAMPLE - len(rows), N_MELS), np.log(LOG_OFFSET))])
        return np.lib.stride_tricks.sliding_window_view(rows, (EXAMPLE, N_MELS))[first, 0]

    @torch.inference_mode()
    def embed(self, examples: np.ndarray) -> np.ndarray:
        out = np.empty((len(examples), EMBEDDING), np.float32)
        for lo in range(0, len(examples), self.batch_size):
            x = torch.from_numpy(examples[lo:lo + self.batch_size].astype(np.float32))[:, None].to(self.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.startswith("cuda")):
                e = self.model(x.contiguous(memory_format=torch.channels_last)).float()
            if self.pca is not None:
                e = postprocess(e, *self.pca)
            out[lo:lo + len(x)] = e.cpu().numpy()
        self.examples += len(examples)
        return out

    def frames(self, path: str, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        times = np.asarray(times, np.float64)
        samples, start, valid = frame_audio(path, times)
        out = np.zeros((len(times), EMBEDDING), np.float32)
        # each valid frame's example: its own, or the nearest point of the `rate` grid
        slot = np.round(times * self.rate).astype(np.int64) if self.rate else np.arange(len(times))
        slots, row_of = np.unique(slot[valid], return_inverse=True)
        if len(slots):
            centres = (slots / self.rate if self.rate else times[slots]) - start
            out[valid] = self.embed(self.examples_at(samples, centres * SAMPLE_RATE))[row_of]
        return out, valid


@register
class VGGishExtractor(Extractor):
    """VGGish on the 0.96 s around each frame: 128 columns (`vggish.emb_000` ...)."""

    name, version = "vggish", "vggish-torch/1"
    Params = Params
    weight_names = ("random", "official")
    output_params = ("postprocess", "rate")
    per_file = True

    def __init__(self, params: dict, device: str = "cpu"):
        super().__init__(params, device)
        self.names = [f"emb_{i:03d}" for i in range(EMBEDDING)]
        self.dim = EMBEDDING
        self.precision = "bf16" if device.startswith("cuda") else "fp32"

    @classmethod
    def weight_files(cls, params: dict) -> list[str]:
        return [FILE, PCA_FILE] if params["postprocess"] else [FILE]

    @classmethod
    def weights_spec(cls, params: dict) -> dict:
        return {**super().weights_spec(params), "postprocess": params["postprocess"]}

    @classmethod
    def make_weights(cls, params: dict, directory: str) -> None:
        value, pca = params["weights"], params["postprocess"]
        if value == "random":
            write_random_weights(directory, params["seed"], pca)
        elif value == "official":
            if pca and not PCA.sha256:
                raise WeightsError(f"vggish.postprocess: {PCA.url} has no pinned SHA-256, so it is not downloaded; "
                                   f"download it and {WEIGHTS.url} into one folder and set vggish.weights to the latter's path")
            fetch(WEIGHTS, os.path.join(directory, FILE), "vggish.weights")
            if pca:
                fetch(PCA, os.path.join(directory, PCA_FILE), "vggish.weights")
        else:
            copy_user_file(value, os.path.join(directory, FILE), "vggish.weights")
            if pca:
                beside = sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(value)), "vggish_pca_params*.pth")))
                if not beside:
                    raise WeightsError("vggish.weights: postprocess needs the PCA params file "
                                       "(vggish_pca_params*.pth) beside the weights file")
                copy_user_file(beside[0], os.path.join(directory, PCA_FILE), "vggish.weights")
        load_state(os.path.join(directory, FILE), network_shapes())        # refuse a wrong file now
        if pca:
            load_state(os.path.join(directory, PCA_FILE), PCA_SHAPES)

    def load(self) -> None:
        p = self.params
        self.embedder = Embedder(self.weights_dir, p["postprocess"], p["rate"], self.device, p["batch_size"])

    def rows(self, video: Video) -> dict[str, np.ndarray]:
        embedding, valid = self.embedder.frames(video.path, video.times)
        return {"embedding": embedding, "valid": valid, "time": video.times}
