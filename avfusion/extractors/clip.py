"""`clip`: the image encoder of CLIP (Radford et al. 2021) on the face of each frame that the facenet stage
found, with open_clip (`open-clip-torch`).

- input: the face box cut from the RGB frame (`frame[y1:y2, x1:x2]` of the box cast to int, clipped to
  the frame), then open_clip's own evaluation transform for the model's pretrained config (for OpenAI's
  ViT-B/16: the shortest side resized to 224 px, bicubic, a 224 px centre crop, CLIP's mean and std);
- network: open_clip's vision tower of `model` (ViT-B/16 with QuickGELU: `ViT-B-16-quickgelu`, the
  architecture of OpenAI's weights); batched, under fp16 autocast on CUDA;
- output: its image embedding, `encode_image(normalize=False)`: the projected class token (512
  numbered columns), not L2-normalised.

Weights (safetensors, open_clip's key names): `random` (seeded, the vision tower only: the offline
default), `official` (OpenAI's weights as the timm/open_clip Hugging Face repository holds them, pinned
revision and SHA-256; MIT licence), or the path of such a file (the whole model or its `visual.` keys).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from avfusion.errors import WeightsError
from avfusion.extraction.base import DeviceParams, Video, register, weights_param
from avfusion.extraction.faces import FaceExtractor, pixel_box
from avfusion.extraction.weights import Download, copy_user_file, fetch
from avfusion.params import integer

FILE = "open_clip_model.safetensors"
TOWER = "visual."                         # open_clip's prefix of the vision tower's keys


@dataclass(frozen=True)
class Model:
    architecture: str                     # open_clip's model config
    pretrained: str                       # open_clip's pretrained tag: its preprocessing config
    download: Download


MODELS = {
    "ViT-B-16": Model("ViT-B-16-quickgelu", "openai", Download(
        "https://huggingface.co/timm/vit_base_patch16_clip_224.openai/resolve/"
        "977e3dd0ec55ab8da155f2fbeb6b5f54948b6e3d/open_clip_model.safetensors",
        "4b8699299b1e8997753c64b052ba32031449d5d853f55a039148560ee02b820f")),
}


def vision_tower(architecture: str):
    """open_clip's vision tower of `architecture`, untrained (no text tower is built)."""
    import open_clip
    from open_clip.model import _build_vision_tower
    config = open_clip.get_model_config(architecture)
    return _build_vision_tower(config["embed_dim"], config["vision_cfg"], quick_gelu=config.get("quick_gelu", False))


def embedding_dim(architecture: str) -> int:
    import open_clip
    return open_clip.get_model_config(architecture)["embed_dim"]


def preprocess(model: Model):
    """open_clip's evaluation transform of the model's pretrained config (PIL image -> [3, 224, 224])."""
    import open_clip
    config = open_clip.get_pretrained_cfg(model.architecture, model.pretrained)
    size = open_clip.get_model_config(model.architecture)["vision_cfg"]["image_size"]
    return open_clip.image_transform(size, is_train=False, mean=config["mean"], std=config["std"],
                                     resize_mode=config["resize_mode"], interpolation=config["interpolation"])


def read_tower(path: str, architecture: str):
    """The vision tower with the `visual.` weights of a safetensors file; raises ValueError."""
    from safetensors.torch import load_file
    try:
        state = load_file(path)
    except Exception as exc:       # not a safetensors file
        raise ValueError(f"not a safetensors file ({type(exc).__name__})") from None
    tower = vision_tower(architecture)
    visual = {k[len(TOWER):]: v for k, v in state.items() if k.startswith(TOWER)}
    try:
        missing, unexpected = tower.load_state_dict(visual, strict=False)
    except RuntimeError as exc:    # a tensor of another shape
        raise ValueError(f"not {architecture}'s vision tower ({str(exc).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise ValueError(f"not {architecture}'s vision tower ({len(missing)} missing, {len(unexpected)} unexpected keys"
                         f"{', e.g. ' + (missing or unexpected)[0] if missing or unexpected else ''})")
    return tower.eval()


@functools.lru_cache(maxsize=2)
def _load(path: str, mtime_ns: int, architecture: str, device: str):
    return read_tower(path, architecture).to(device)


def write_random_weights(path: str, architecture: str, seed: int) -> None:
    """Seeded random weights of the vision tower (open_clip's initialisation), in open_clip's layout."""
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(seed)
    tower = vision_tower(architecture)
    save_file({TOWER + k: v.contiguous() for k, v in tower.state_dict().items()}, path)


class Params(DeviceParams):
    model: Literal[tuple(MODELS)] = "ViT-B-16"
    weights: weights_param("random", "official") = "random"
    seed: integer(ge=0) = 0
    batch_size: integer(ge=1) = 32


@register
class ClipExtractor(FaceExtractor):
    """The face's CLIP image embedding: 512 numbered columns (ViT-B/16)."""

    name, version = "clip", "open-clip-image-embedding/1"
    Params = Params
    weight_names = ("random", "official")
    output_params = ("model", "batch_size")     # CPU kernels round differently per batch shape

    def __init__(self, params: dict, device: str = "cpu"):
        super().__init__(params, device)
        self.model = MODELS[params["model"]]
        self.dim = embedding_dim(self.model.architecture)
        self.precision = "float32" if device == "cpu" else "cuda-fp16"

    @classmethod
    def weight_files(cls, params: dict) -> list[str]:
        return [FILE]

    @classmethod
    def weights_spec(cls, params: dict) -> dict:
        return {key: params[key] for key in ("model", "weights", "seed")}

    @classmethod
    def make_weights(cls, params: dict, directory: str) -> None:
        out, spec, model = os.path.join(directory, FILE), params["weights"], MODELS[params["model"]]
        if spec == "random":
            write_random_weights(out, model.architecture, params["seed"])
        elif spec == "official":
            fetch(model.download, out, "clip.weights")
        else:
            copy_user_file(spec, out, "clip.weights")
        try:
            read_tower(out, model.architecture)
        except ValueError as exc:
            os.remove(out)
            raise WeightsError(f"clip.weights: refused: {exc}") from None

    def load(self) -> None:
        path = os.path.abspath(self.weight_path())
        self.tower = _load(path, os.stat(path).st_mtime_ns, self.model.architecture, self.device)
        self.transform = preprocess(self.model)

    def prepare(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        from PIL import Image
        x1, y1, x2, y2 = pixel_box(box, frame.shape[1], frame.shape[0])
        return self.transform(Image.fromarray(frame[y1:y2, x1:x2])).numpy()

    def encode(self, faces: np.ndarray) -> np.ndarray:
        import torch
        with torch.inference_mode(), torch.autocast("cuda", enabled=self.device.startswith("cuda")):
            return self.tower(torch.from_numpy(faces).to(self.device)).float().cpu().numpy()

    def on_faces(self, video: Video, faces: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.encode_faces(video, faces, self.prepare, self.encode, self.params["batch_size"])
