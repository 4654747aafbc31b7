"""`emotieff`: EmotiEffLib's facial expression models (Savchenko 2022-2023, ex-HSEmotion: EfficientNet-B0/B2
and MobileFaceNet trained on AffectNet) on the face of each frame that the facenet stage found.

Their ONNX files run with onnxruntime, as EmotiEffLib's ONNX branch runs them
(`emotiefflib/facial_analysis.py`, EmotiEffLibRecognizerOnnx), without the emotiefflib package:
- input: the face as the library's examples cut it from the RGB frame, `frame[y1:y2, x1:x2]` of the
  detector's box cast to int (here clipped to the frame, where the library's slice would wrap around),
  then its `_preprocess`: cv2.resize to `size` x `size` (INTER_LINEAR on uint8, bit for bit:
  extraction/opencv.py; the aspect ratio is not kept), / 255, minus `mean`, over `std` per RGB channel,
  CHW float32 (224 px and ImageNet statistics for the B0 models, 260 px for B2, 112 px and 0.5 / 0.5 for
  MobileFaceNet);
- outputs: the final Gemm's scores, softmax over the 8 AffectNet classes in the library's order
  (`classify_emotions(..., logits=False)`); the `_va_mtl` models' last two scores are valence and
  arousal (`scores[:, -2]`, `scores[:, -1]` in its ABAW notebooks), kept raw as the library does (a
  linear output, not bounded to [-1, 1]); and the penultimate embedding: the Gemm's input, which the
  library takes as its features, exposed here as a second graph output of the same file.
Faces run in batches; with `device: cuda` onnxruntime's CUDA provider runs them (fp32: autocast is
torch's) when onnxruntime-gpu is installed, otherwise the CPU does, and the stores record which.

Weights: `random` (the offline default: seeded random weights of the same architecture, timm's
tf_efficientnet_b0 / b2 or MobileFaceNet, exported by the project to an ONNX file with the official
files' input `input` and final Gemm), `official` (the library's file for `model`, pinned by SHA-256),
or the path of an ONNX file. The official weights are trained on AffectNet, whose licence allows
research use only; EmotiEffLib's code is Apache-2.0.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from avfusion.errors import WeightsError
from avfusion.extraction.base import DeviceParams, Video, register, weights_param
from avfusion.extraction.faces import FaceExtractor, pixel_box, settle_batch_norms
from avfusion.extraction.opencv import resize_uint8
from avfusion.extraction.weights import Download, copy_user_file, fetch
from avfusion.params import integer

CLASSES = ("anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")   # idx_to_emotion_class
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
# EmotiEffLib's files are the same blobs at every commit since they were added (2022, 2024)
RELEASE = "https://github.com/sb-ai-lab/EmotiEffLib/raw/f1df0e8548c666d268826e50b7de107fd5553e9d/models/affectnet_emotions/onnx/"


@dataclass(frozen=True)
class Model:
    size: int                               # input side, pixels
    normalisation: tuple                    # (mean, std) per RGB channel
    features: int                           # the penultimate embedding's width
    valence_arousal: bool                   # _va_mtl: two more outputs after the 8 classes
    architecture: str                       # what the random weights are
    sha256: str

    def download(self, name: str) -> Download:
        return Download(f"{RELEASE}{name}.onnx", self.sha256)


MODELS = {
    "enet_b0_8_va_mtl": Model(224, IMAGENET, 1280, True, "tf_efficientnet_b0",
                              "c43e056ad388d4a8dc911832b8291435b2af537f967e5870ebd731574ec7e812"),
    "enet_b0_8_best_vgaf": Model(224, IMAGENET, 1280, False, "tf_efficientnet_b0",
                                 "fa07e841fd06c7a67ee651ea4e6e4a3a2bb5695f47b37a7da50492526f59c898"),
    "enet_b2_8": Model(260, IMAGENET, 1408, False, "tf_efficientnet_b2",
                       "180a9d4845b59393de4511598a0d1d34b705034691ea32959ce5009db7cf52b7"),
    "mbf_va_mtl": Model(112, HALF, 512, True, "mobilefacenet",
                        "0323ace52ea6dbe9aa4a909d20933f7b8629c3fb41249e338f4316abf2a4828c"),
}
INPUT = "input"                             # the input name the library feeds


# ---------------------------------------------------------------- input

def face_input(frame: np.ndarray, box: np.ndarray, model: Model) -> np.ndarray:
    """The library's input for the face in `box` of an RGB uint8 frame: float32 [3, size, size]."""
    x1, y1, x2, y2 = pixel_box(box, frame.shape[1], frame.shape[0])
    face = resize_uint8(frame[y1:y2, x1:x2], model.size, model.size) / 255   # float64, as in the library
    mean, std = model.normalisation
    face = (face - np.asarray(mean)) / np.asarray(std)
    return np.ascontiguousarray(face.transpose(2, 0, 1), dtype=np.float32)


def probabilities(scores: np.ndarray) -> np.ndarray:
    """classify_emotions(logits=False): softmax over the classes, in float32; valence, arousal stay."""
    out = scores.astype(np.float32).copy()
    logits = out[:, :len(CLASSES)]
    e = np.exp(logits - np.max(logits, axis=1)[:, None])
    out[:, :len(CLASSES)] = e / e.sum(axis=1)[:, None]
    return out


# ---------------------------------------------------------------- the ONNX file

def classifier(graph, model: Model):
    """The file's final Gemm (the library's `nodes[-1]`), checked against `model`; raises ValueError."""
    if not graph.node or graph.node[-1].op_type != "Gemm" or len(graph.node[-1].input) < 3:
        raise ValueError("its last node is not the classifier's Gemm (weight and bias)")
    gemm = graph.node[-1]
    weight = next((t for t in graph.initializer if t.name == gemm.input[1]), None)
    if not any(t.name == gemm.input[2] for t in graph.initializer):
        raise ValueError("its classifier's bias is not a stored tensor")
    outputs = len(CLASSES) + 2 * model.valence_arousal
    if weight is None or tuple(weight.dims) != (outputs, model.features):
        raise ValueError(f"its classifier is not {outputs} outputs of {model.features} features "
                         f"({tuple(weight.dims) if weight is not None else 'no weight'})")
    if [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}] != [INPUT]:
        raise ValueError(f"its input is not one tensor named {INPUT!r}")
    return gemm


def with_features(path: str, model: Model):
    """The ONNX model of `path` with the classifier's input (the penultimate embedding) as a second output."""
    import onnx
    from onnx import TensorProto, helper
    proto = onnx.load(path)
    gemm = classifier(proto.graph, model)
    proto.graph.output.append(helper.make_tensor_value_info(gemm.input[0], TensorProto.FLOAT, [None, model.features]))
    return proto


def onnx_session(path: str, model: Model, device: str):
    import onnxruntime as ort
    import torch
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()    # the runner's share of the cores
    ort.set_default_logger_severity(3)
    providers = ["CPUExecutionProvider"]
    if cuda_provider(device):
        index = int(device.split(":")[1]) if ":" in device else 0
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    return ort.InferenceSession(with_features(path, model).SerializeToString(), options, providers=providers)


def cuda_provider(device: str) -> bool:
    """onnxruntime runs on the GPU only with its CUDA build (onnxruntime-gpu); otherwise on the CPU."""
    import onnxruntime as ort
    return device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers()


# ---------------------------------------------------------------- random weights of the same architecture

def _mobilefacenet():
    """MobileFaceNet as EmotiEffLib's `backbones/mobilefacenet.py` builds it (get_mbf(False, 512): blocks
    (1, 4, 6, 2), scale 2; adapted from cavaface), with the `fc` classifier the library takes off."""
    from torch import nn

    def conv(c_in, c_out, kernel=1, stride=1, padding=0, groups=1, activation=True):
        layers = [nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
        return nn.Sequential(*layers, nn.PReLU(c_out)) if activation else nn.Sequential(*layers)

    class DepthWise(nn.Module):
        def __init__(self, c_in, c_out, groups, stride, residual):
            super().__init__()
            self.residual = residual
            self.layers = nn.Sequential(conv(c_in, groups), conv(groups, groups, 3, stride, 1, groups),
                                        conv(groups, c_out, activation=False))

        def forward(self, x):
            return x + self.layers(x) if self.residual else self.layers(x)

    def residual(c, blocks, groups):
        return nn.Sequential(*(DepthWise(c, c, groups, 1, True) for _ in range(blocks)))

    class MobileFaceNet(nn.Module):
        def __init__(self, classes: int):
            super().__init__()
            self.body = nn.Sequential(
                conv(3, 128, 3, 2, 1), conv(128, 128, 3, 1, 1, groups=64),
                DepthWise(128, 128, 128, 2, False), residual(128, 4, 128),
                DepthWise(128, 256, 256, 2, False), residual(256, 6, 256),
                DepthWise(256, 256, 512, 2, False), residual(256, 2, 256),
                conv(256, 512),
                conv(512, 512, 7, groups=512, activation=False), nn.Flatten(),    # GDC
                nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512))
            self.fc = nn.Linear(512, classes)

        def forward(self, x):
            return self.fc(self.body(x))

    return MobileFaceNet


def write_random_weights(path: str, name: str, seed: int) -> None:
    """Seeded random weights of `name`'s architecture as an ONNX file laid out like the official one."""
    import timm
    import torch
    model = MODELS[name]
    classes = len(CLASSES) + 2 * model.valence_arousal
    torch.manual_seed(seed)
    if model.architecture == "mobilefacenet":
        network = _mobilefacenet()(classes)
    else:
        network = timm.create_model(model.architecture, pretrained=False, num_classes=classes)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                # not zeros: the exporter would share one zero tensor between biases, and the library
                # reads the classifier's bias from the file's initializers
                module.bias.normal_(0.0, 0.1)
    settle_batch_norms(network, model.size, *model.normalisation, seed)
    torch.onnx.export(network, torch.zeros(1, 3, model.size, model.size), path, input_names=[INPUT],
                      output_names=["output"], dynamic_axes={INPUT: {0: "batch"}, "output": {0: "batch"}},
                      opset_version=17, dynamo=False)


# ---------------------------------------------------------------- the extractor

class Params(DeviceParams):
    model: Literal[tuple(MODELS)] = "enet_b0_8_va_mtl"
    weights: weights_param("random", "official") = "random"
    seed: integer(ge=0) = 0
    batch_size: integer(ge=1) = 32


@register
class EmotiEffExtractor(FaceExtractor):
    """8 class probabilities (`anger` ... `surprise`), `valence` and `arousal` (the _va_mtl models, raw),
    then the penultimate embedding (`feature_0000` ...: 1280 for B0, 1408 for B2, 512 for MobileFaceNet)."""

    name, version = "emotieff", "emotiefflib-onnx/1"
    Params = Params
    weight_names = ("random", "official")
    output_params = ("model", "batch_size")     # CPU kernels round differently per batch shape

    def __init__(self, params: dict, device: str = "cpu"):
        super().__init__(params, device)
        self.model = MODELS[params["model"]]
        self.names = [*CLASSES, *(("valence", "arousal") if self.model.valence_arousal else ()),
                      *(f"feature_{i:04d}" for i in range(self.model.features))]
        self.dim = len(self.names)
        self.precision = "cuda-fp32" if cuda_provider(device) else "float32"

    @classmethod
    def weight_files(cls, params: dict) -> list[str]:
        return [f"{params['model']}.onnx"]

    @classmethod
    def weights_spec(cls, params: dict) -> dict:
        return {key: params[key] for key in ("model", "weights", "seed")}

    @classmethod
    def make_weights(cls, params: dict, directory: str) -> None:
        name, spec = params["model"], params["weights"]
        out = os.path.join(directory, f"{name}.onnx")
        if spec == "random":
            write_random_weights(out, name, params["seed"])
        elif spec == "official":
            fetch(MODELS[name].download(name), out, "emotieff.weights")
        else:
            copy_user_file(spec, out, "emotieff.weights")
        try:
            with_features(out, MODELS[name])
        except Exception as exc:       # not ONNX at all, or another network
            os.remove(out)
            raise WeightsError(f"emotieff.weights: refused: {os.path.basename(out)} is not EmotiEffLib's {name} "
                               f"ONNX file: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

    def load(self) -> None:
        self.session = onnx_session(self.weight_path(), self.model, self.device)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def prepare(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        return face_input(frame, box, self.model)

    def encode(self, faces: np.ndarray) -> np.ndarray:
        scores, features = self.session.run(self.outputs, {INPUT: faces})
        return np.concatenate([probabilities(scores), features], axis=1)

    def on_faces(self, video: Video, faces: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.encode_faces(video, faces, self.prepare, self.encode, self.params["batch_size"])
