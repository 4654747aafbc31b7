"""`irse50`: LFAN's visual backbone (Zhang et al. 2021, "Continuous emotion recognition with audio-visual
leader-follower attentive fusion", github.com/sucv/ABAW2) on the face of each frame that the facenet
stage found: the ArcFace IR-ResNet50 (`model/arcface_model.py`, Backbone(50, mode='ir')) that the
authors trained on FER+, as their model `my_2d1d` uses it: a 512-d L2-normalised embedding per face.

- input, as their data pipeline makes it: the face resized to 48 x 48 with PIL (`preprocessing.py`:
  `Image.resize((48, 48))`, PIL's default bicubic filter) and, at evaluation, centre-cropped to 40 x 40
  (`GroupCenterCrop(40)`), RGB, x / 255, then (x - 0.5) / 0.5 (`GroupNormalize`). Their faces are
  Aff-Wild2's 112 x 112 aligned crops; here the face is the facenet stage's box
  (`frame[y1:y2, x1:x2]` of the box cast to int, clipped to the frame), not aligned;
- network: a 3x3 stem (64 channels, batch norm, PReLU), 24 IR bottlenecks (3, 4, 14, 3 units of 64,
  128, 256, 512 channels; batch norm, 3x3 conv, PReLU, strided 3x3 conv, batch norm, plus a 1x1-conv
  or identity shortcut), then batch norm, flatten and a linear layer from 512 x 5 x 5 (the size a
  40-px face leaves: `my_res50` replaces ArcFace's 7 x 7 layer) to 512 with batch norm, L2-normalised;
  batched, under fp16 autocast on CUDA.

Weights: their FER+ backbone is not downloadable from a pinned place (a Google Drive link in their
README), so `irse50.weights` is `random` (seeded, the offline default) or the path of a state dict:
safetensors, or a torch file of plain tensors (read with weights_only), with Backbone's keys or
`my_res50`'s (`backbone.` prefix; its `logits` head is dropped).
"""
from __future__ import annotations

import functools
import os

import numpy as np

from avfusion.errors import WeightsError
from avfusion.extraction.base import DeviceParams, Video, register, weights_param
from avfusion.extraction.faces import FaceExtractor, pixel_box, settle_batch_norms
from avfusion.extraction.weights import check_state_dict
from avfusion.params import integer

FILE = "irse50.safetensors"
FACE_SIZE, CROP_SIZE = 48, 40
EMBEDDING_DIM = 512
UNITS = ((64, 3), (128, 4), (256, 14), (512, 3))     # get_blocks(50): (depth, units); the first stage keeps the size
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def face_input(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Their input for the face in `box` of an RGB uint8 frame: float32 [3, 40, 40] in [-1, 1]."""
    import torch
    from PIL import Image
    x1, y1, x2, y2 = pixel_box(box, frame.shape[1], frame.shape[0])
    face = np.asarray(Image.fromarray(frame[y1:y2, x1:x2]).resize((FACE_SIZE, FACE_SIZE), Image.Resampling.BICUBIC))
    top = int(round((FACE_SIZE - CROP_SIZE) / 2.0))                                 # torchvision's CenterCrop
    face = torch.from_numpy(np.ascontiguousarray(face[top:top + CROP_SIZE, top:top + CROP_SIZE]))
    face = face.permute(2, 0, 1).float().div(255)                                   # ToTorchFormatTensor
    return ((face - 0.5) / 0.5).contiguous().numpy()                                # Normalize


def backbone():
    """Backbone(50, drop_ratio, mode='ir') with my_res50's 5 x 5 output layer, module for module (so their
    state dicts load as they are); dropout is left out: it is the identity at evaluation."""
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, c_in: int, depth: int, stride: int):
            super().__init__()
            self.shortcut_layer = nn.MaxPool2d(1, stride) if c_in == depth else nn.Sequential(
                nn.Conv2d(c_in, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
            self.res_layer = nn.Sequential(
                nn.BatchNorm2d(c_in), nn.Conv2d(c_in, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
                nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth))

        def forward(self, x):
            return self.res_layer(x) + self.shortcut_layer(x)

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
            units, c_in = [], 64
            for stage, (depth, count) in enumerate(UNITS):
                for unit in range(count):
                    units.append(Bottleneck(c_in, depth, 2 if unit == 0 and stage > 0 else 1))
                    c_in = depth
            self.body = nn.Sequential(*units)
            side = CROP_SIZE // 2 ** (len(UNITS) - 1)
            self.output_layer = nn.Sequential(nn.BatchNorm2d(EMBEDDING_DIM), nn.Identity(), nn.Flatten(),
                                              nn.Linear(EMBEDDING_DIM * side * side, EMBEDDING_DIM),
                                              nn.BatchNorm1d(EMBEDDING_DIM))

        def forward(self, x):
            x = self.output_layer(self.body(self.input_layer(x)))
            return x / x.norm(2, 1, True)                                           # l2_norm

    return Backbone()


def read_state(path: str) -> dict:
    """A state dict file (safetensors, or torch plain tensors) with Backbone's keys; raises WeightsError."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            state = load_file(path)
        except Exception as exc:
            raise WeightsError(f"irse50.weights: refused: {path} is not a safetensors file ({type(exc).__name__})") from None
    else:
        import torch
        check_state_dict(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    if any(k.startswith("backbone.") for k in state):                              # my_res50's state dict
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


def load_backbone(state: dict):
    network = backbone()
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"irse50.weights: refused: not the IR-50 backbone of LFAN "
                           f"({str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc})") from None
    return network.eval()


@functools.lru_cache(maxsize=2)
def _load(path: str, mtime_ns: int, device: str):
    from safetensors.torch import load_file
    return load_backbone(load_file(path)).to(device)


def write_random_weights(path: str, seed: int) -> None:
    """Seeded random weights (torch's initialisation, batch norms measured on seeded noise) as safetensors."""
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(seed)
    network = backbone()
    settle_batch_norms(network, CROP_SIZE, *HALF, seed)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, path)


class Params(DeviceParams):
    weights: weights_param("random") = "random"
    seed: integer(ge=0) = 0
    batch_size: integer(ge=1) = 64


@register
class IrSe50Extractor(FaceExtractor):
    """LFAN's IR-50 face embedding: 512 numbered columns, L2-normalised."""

    name, version = "irse50", "lfan-ir50-embedding/1"
    Params = Params
    weight_names = ("random",)
    output_params = ("batch_size",)             # CPU kernels round differently per batch shape

    def __init__(self, params: dict, device: str = "cpu"):
        super().__init__(params, device)
        self.dim = EMBEDDING_DIM
        self.precision = "float32" if device == "cpu" else "cuda-fp16"

    @classmethod
    def weight_files(cls, params: dict) -> list[str]:
        return [FILE]

    @classmethod
    def make_weights(cls, params: dict, directory: str) -> None:
        out, spec = os.path.join(directory, FILE), params["weights"]
        if spec == "random":
            write_random_weights(out, params["seed"])
            return
        if not os.path.isfile(spec):
            raise WeightsError(f"irse50.weights: {spec!r} is neither random nor an existing file")
        from safetensors.torch import save_file
        state = read_state(spec)
        load_backbone(state)                    # refuses another network before anything is written
        save_file({k: v.contiguous() for k, v in state.items()}, out)

    def load(self) -> None:
        path = os.path.abspath(self.weight_path())
        self.network = _load(path, os.stat(path).st_mtime_ns, self.device)

    def prepare(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        return face_input(frame, box)

    def encode(self, faces: np.ndarray) -> np.ndarray:
        import torch
        with torch.inference_mode(), torch.autocast("cuda", enabled=self.device.startswith("cuda")):
            return self.network(torch.from_numpy(faces).to(self.device)).float().cpu().numpy()

    def on_faces(self, video: Video, faces: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.encode_faces(video, faces, self.prepare, self.encode, self.params["batch_size"])
