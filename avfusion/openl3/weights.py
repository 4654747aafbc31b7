"""OpenL3's official Keras HDF5 weight files: loading them into the PyTorch network, the seeded-random
stand-in in the same layout, and building a network once per file and device."""
from __future__ import annotations

import functools
import math
import os

import numpy as np
import torch

from avfusion.errors import WeightsError
from avfusion.extraction.keras import fold_norm, read_layers, write_layers
from avfusion.openl3.network import CHANNELS, OpenL3, _check


def load_weights(model: OpenL3, path: str) -> OpenL3:
    """Fill `model` from an official-layout Keras HDF5 file, matching layers by order, not by name
    (names differ between Keras versions). Conv kernels are (kh, kw, in, out); batch norms are
    (gamma, beta, moving_mean, moving_variance)."""
    norms, convs = [], []
    for _, arrays in read_layers(path):
        if len(arrays) == 4 and all(a.ndim == 1 for a in arrays):
            norms.append(arrays)
        elif len(arrays) == 2 and arrays[0].ndim == 4 and arrays[0].shape[:2] == (3, 3):
            convs.append(arrays)
        # anything else is a fixed front-end kernel of old kapre versions, recomputed here
    expected = [(3, 3, c_in, c_out) for c_in, c_out in zip((1,) + CHANNELS[:-1], CHANNELS)]
    if [k.shape for k, _ in convs] != expected or len(norms) != len(CHANNELS):
        raise WeightsError(f"{path}: not an OpenL3 audio weight file (found {len(convs)} conv and {len(norms)} "
                         f"batch-norm layers with shapes {[k.shape for k, _ in convs]})")

    scale, shift = fold_norm(*norms[0])
    model.input_scale.fill_(float(scale[0]))
    model.input_shift.fill_(float(shift[0]))
    post_conv_norms = norms[1:] + [None]        # the embedding layer has no batch norm after it
    with torch.no_grad():
        for conv, (kernel, bias), norm in zip(model.convs, convs, post_conv_norms):
            weight, bias = kernel.transpose(3, 2, 0, 1).astype(np.float64), bias.astype(np.float64)
            if norm is not None:
                scale, shift = fold_norm(*norm)
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
    write_layers(path, layers)
