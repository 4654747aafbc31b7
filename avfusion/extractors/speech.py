"""`speech`: self-supervised speech encoders (wav2vec 2.0, HuBERT, WavLM; transformers' own model code) on
each video frame, and audEERING's dimensional emotion model with its arousal / dominance / valence.

Models (`speech.model`), weights from a pinned Hugging Face revision, safetensors only (no pickled .bin,
no remote code), each file checked against its SHA-256:
- `wavlm-base-plus` (microsoft/wavlm-base-plus, default), `wav2vec2-base` (facebook/wav2vec2-base),
  `hubert-base` (facebook/hubert-base-ls960): 12 transformer layers of 768;
- `wav2vec2-large-robust-12-ft-emotion-msp-dim` (audeering): wav2vec2-large-robust pruned to 12 layers of
  1024 and fine-tuned on MSP-Podcast, with a regression head (Wagner et al. 2023). Its licence is
  CC BY-NC-SA 4.0: research and non-commercial use only, share-alike.
`speech.weights`: `random` (seeded, a tiny configuration of the chosen family: the offline default),
`official` (the pinned download), or the path of a model.safetensors with the model's config.json and
preprocessor_config.json beside it (a Hugging Face snapshot folder).

Time base (measured in tests/test_speech.py): the convolutional front end (kernels 10,3,3,3,3,2,2,
strides 5,2,2,2,2,2,2) has a receptive field of 400 samples and a stride of 320 at 16 kHz, with no
padding: encoder frame k sees samples [320k, 320k + 400), centred at (320k + 200) / 16000 s, and stands
for the 20 ms [320k + 40, 320k + 360). A video frame's row is the mean of those 20 ms rows over the
frame's interval, weighted by overlap (avfusion/extraction/framewise.py), as for the other audio
descriptors. `speech.layer`: a hidden state index (0 = the transformer's input, as transformers'
`hidden_states[0]`; the model's last layer is its number of layers) or `mean` (of all hidden states).

The audio is normalised as each model's preprocessor config says (`do_normalize`: zero mean, unit
variance over the whole signal, as Wav2Vec2FeatureExtractor does), then encoded in chunks of `chunk`
seconds with `context` seconds of audio on each side whose frames are dropped: memory stays bounded on
long videos and each kept frame sees at least `context` seconds around it (attention spans the whole
input, so chunked rows equal whole-signal rows to a tolerance, tested). Chunks of equal length run
`batch_size` at a time, under bf16 autocast on CUDA.

The emotion model's head (its model card's `RegressionHead`: dense, tanh, out) reads the mean of the
last layer over an utterance; here over `emotion_window` seconds centred on each frame, giving
`arousal`, `dominance`, `valence` (about 0..1) after the embedding columns.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from avfusion.errors import WeightsError
from avfusion.extraction.base import DeviceParams, Extractor, Video, register, weights_param
from avfusion.extraction.framewise import SAMPLE_RATE, frame_audio, frame_intervals, interval_mean
from avfusion.extraction.weights import Download, fetch
from avfusion.params import constrained, integer, number

RECEPTIVE_FIELD, STRIDE = 400, 320          # samples, at 16 kHz (measured: tests/test_speech.py)
STEP = STRIDE / SAMPLE_RATE                 # 20 ms per encoder frame
EMOTIONS = ("arousal", "dominance", "valence")   # the head's output order (audeering's model card)
FILES = ("config.json", "preprocessor_config.json", "model.safetensors")
HF = "https://huggingface.co/{repo}/resolve/{revision}/{file}"
MISSING = "the speech extractor needs transformers: pip install -e '.[speech]'"


@dataclass(frozen=True)
class Model:
    repo: str
    revision: str
    family: str                      # wav2vec2 | hubert | wavlm: transformers' model_type
    sha256: dict                     # file -> SHA-256 of the download ("" when not known: not downloaded)
    emotion: bool = False
    stable_layer_norm: bool = False  # the large (pre-norm) layout


# SHA-256 digests not confirmed are left empty: `fetch` then refuses the download with one line, and a
# user who downloaded the snapshot sets speech.weights to its model.safetensors. The wav2vec2-base and
# hubert-base revisions are the known 8-hex prefixes of their safetensors commits: pin the full commit
# with the digests. audEERING's digests are those a public project pinned for this revision (the 8-hex
# prefix of the weights' SHA-256 on the model page was not found to cross-check).
MODELS = {
    "wavlm-base-plus": Model("microsoft/wavlm-base-plus", "98fd61b9c652129c839c0a25a05987d8f59256a4", "wavlm",
                             dict.fromkeys(FILES, "")),
    "wav2vec2-base": Model("facebook/wav2vec2-base", "9f0eb264", "wav2vec2", dict.fromkeys(FILES, "")),
    "hubert-base": Model("facebook/hubert-base-ls960", "af46f65f", "hubert", dict.fromkeys(FILES, "")),
    "wav2vec2-large-robust-12-ft-emotion-msp-dim": Model(
        "audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim", "6eba34a2485ea31cb03600241787c3a5edab8626", "wav2vec2",
        {"config.json": "c0962c3d1f065972bbebbba0bbffb8016ef4e9aae4a9b07e5fec22f770d2cddb",
         "preprocessor_config.json": "60ca5a31e13f69ee2fbf147504c8676db5f6398fd7a6b12294341dff838edfcf",
         "model.safetensors": "efa5ac1a13b2d2f42182738e44794b1eb4c0cdd221a8b4ae11304c3a5f5fae95"},
        emotion=True, stable_layer_norm=True),
}
OFFICIAL_LAYERS = 12
# The offline stand-in: the chosen family's layout, shrunk so the demo stays fast.
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
        "conv_dim": (32,) * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}


def _config_class(family: str):
    from transformers import HubertConfig, Wav2Vec2Config, WavLMConfig
    return {"wav2vec2": Wav2Vec2Config, "hubert": HubertConfig, "wavlm": WavLMConfig}[family]


class RegressionHead(nn.Module):
    """audEERING's head (model card of wav2vec2-large-robust-12-ft-emotion-msp-dim): dropout, dense,
    tanh, dropout, out_proj; dropout is inactive at inference."""

    def __init__(self, hidden: int, labels: int = len(EMOTIONS)):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_proj(torch.tanh(self.dense(pooled)))


def _rule(p: dict) -> str | None:
    layers = TINY["num_hidden_layers"] if p["weights"] == "random" else OFFICIAL_LAYERS
    if p["layer"] != "mean" and p["layer"] > layers:
        return f"speech.layer must be mean or an integer from 0 to {layers} for these weights, not {p['layer']}"
    return None


class Params(DeviceParams):
    model: Literal[tuple(MODELS)] = "wavlm-base-plus"
    weights: weights_param("random", "official") = "random"
    seed: integer(ge=0) = 0
    layer: constrained(int | str, "mean or a hidden layer index >= 0",
                       lambda v: v == "mean" or (isinstance(v, int) and v >= 0)) = "mean"
    chunk: number(gt=0) = 30              # seconds encoded at once (memory bound on long videos) ...
    context: number(ge=0) = 3             # ... with this much audio each side, whose frames are dropped
    emotion_window: number(gt=0) = 2      # the emotion model: seconds averaged for the head, centred on the frame
    batch_size: integer(ge=1) = 4         # chunks per forward pass

    @classmethod
    def rule(cls, values: dict) -> str | None:
        return _rule(values)


# The official models' sizes (transformers' defaults are the base layout), for benchmarks on random weights.
LARGE = {"hidden_size": 1024, "num_hidden_layers": 12, "num_attention_heads": 16, "intermediate_size": 4096}


def write_random_weights(directory: str, name: str, seed: int, size: dict | None = None) -> None:
    """A seeded model of `name`'s family in the Hugging Face layout (config.json, model.safetensors with
    the emotion head under `classifier.` as audEERING's file has it, preprocessor_config.json): TINY, or
    `size` (e.g. {} for the base layout, LARGE)."""
    from safetensors.torch import save_file
    from transformers import AutoModel
    spec = MODELS[name]
    layout = {"feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True} if spec.stable_layer_norm else {}
    config = _config_class(spec.family)(**(TINY if size is None else size), **layout,
                                        **({"num_labels": len(EMOTIONS)} if spec.emotion else {}))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        encoder = AutoModel.from_config(config)
        head = RegressionHead(config.hidden_size) if spec.emotion else None
    prefix = "wav2vec2." if spec.emotion else ""
    state = {prefix + k: v.contiguous() for k, v in encoder.state_dict().items()}
    if head is not None:
        state.update({f"classifier.{k}": v.contiguous() for k, v in head.state_dict().items()})
    save_file(state, os.path.join(directory, "model.safetensors"))
    config.to_json_file(os.path.join(directory, "config.json"))
    with open(os.path.join(directory, "preprocessor_config.json"), "w") as f:
        json.dump({"do_normalize": True, "feature_size": 1, "sampling_rate": SAMPLE_RATE, "padding_value": 0.0}, f)


def load_encoder(directory: str, emotion: bool, device: str) -> tuple[nn.Module, RegressionHead | None, bool]:
    """(encoder, emotion head or None, do_normalize) from a folder of config.json, model.safetensors and
    preprocessor_config.json, through transformers' safetensors loader (no remote code)."""
    from safetensors import safe_open
    from transformers import AutoModel
    with open(os.path.join(directory, "preprocessor_config.json")) as f:
        normalize = bool(json.load(f).get("do_normalize", False))
    from transformers.utils import logging
    logging.set_verbosity_error()               # its load report lists the head's keys, read below
    logging.disable_progress_bar()
    try:
        encoder, info = AutoModel.from_pretrained(directory, use_safetensors=True, local_files_only=True,
                                                  trust_remote_code=False, output_loading_info=True)
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsError(f"speech.weights: {directory}: not a speech encoder ({type(exc).__name__}: {exc})") from None
    if info["missing_keys"]:                    # transformers would initialise them at random
        raise WeightsError(f"speech.weights: the file lacks {len(info['missing_keys'])} of the encoder's tensors "
                           f"(e.g. {sorted(info['missing_keys'])[0]})")
    encoder.eval()
    head = None
    if emotion:
        head = RegressionHead(encoder.config.hidden_size)
        with safe_open(os.path.join(directory, "model.safetensors"), "pt") as f:
            keys = [k for k in f.keys() if k.startswith("classifier.")]
            if sorted(keys) != sorted(f"classifier.{k}" for k in head.state_dict()):
                raise WeightsError("speech.weights: the emotion model's file has no classifier.dense / classifier.out_proj head")
            head.load_state_dict({k.removeprefix("classifier."): f.get_tensor(k) for k in keys})
        head = head.eval().to(device)
    return encoder.to(device), head, normalize


def encoder_frames(samples: int) -> int:
    """Encoder frames of `samples` samples: whole receptive fields every STRIDE samples."""
    return 0 if samples < RECEPTIVE_FIELD else (samples - RECEPTIVE_FIELD) // STRIDE + 1


# encoder frame k stands for samples [320k + 40, 320k + 360): 20 ms centred on its receptive field
FIRST_STEP = (RECEPTIVE_FIELD - STRIDE) / 2 / SAMPLE_RATE


def to_video_frames(steps: np.ndarray, start: float, times: np.ndarray) -> np.ndarray:
    """Encoder rows [m, D] of audio whose sample 0 is at `start` (video clock) -> the overlap-weighted
    mean over each video frame's interval [n, D]."""
    return interval_mean(steps, start + FIRST_STEP, STEP, *frame_intervals(times))


class SpeechEncoder:
    """A loaded encoder: `states(audio)` gives its 20 ms rows, `frames(path, times)` the video rows."""

    def __init__(self, directory: str, emotion: bool, layer: int | str, device: str = "cpu", chunk: float = 30,
                 context: float = 3, batch_size: int = 4, emotion_window: float = 2):
        self.encoder, self.head, self.normalize = load_encoder(directory, emotion, device)
        self.layer, self.device, self.batch_size = layer, device, batch_size
        self.chunk_frames = max(1, round(chunk / STEP))
        self.context_frames = round(context / STEP)
        self.emotion_window = emotion_window
        self.frames_encoded = 0

    def plan(self, m: int) -> list[tuple[int, int, int, int]]:
        """Chunks of `m` encoder frames: (first input frame, input frames, first kept, kept frames)."""
        out = []
        for keep in range(0, m, self.chunk_frames):
            kept = min(self.chunk_frames, m - keep)
            lo, hi = max(0, keep - self.context_frames), min(m, keep + kept + self.context_frames)
            out.append((lo, hi - lo, keep - lo, kept))
        return out

    def _forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the chosen hidden state [B, T, D], the last layer [B, T, D]) in float32."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.startswith("cuda")):
            out = self.encoder(batch, output_hidden_states=True)
        hidden = out.hidden_states
        chosen = sum(h.float() for h in hidden) / len(hidden) if self.layer == "mean" else hidden[self.layer].float()
        return chosen, out.last_hidden_state.float()

    @staticmethod
    def chunk_end(lo: int, length: int, m: int, samples: int) -> int:
        """The sample after a chunk's input: the last chunk takes the signal's tail too (the front end's
        group norm, over time, sees it in a whole-signal pass)."""
        return samples if lo + length == m else (lo + length - 1) * STRIDE + RECEPTIVE_FIELD

    @torch.inference_mode()
    def states(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(chosen-layer rows [m, D], last-layer rows [m, D]) of 16 kHz mono audio, chunk by chunk."""
        x = np.asarray(audio, np.float32)
        if self.normalize:       # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm, over the whole signal
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        m = encoder_frames(len(x))
        dim = self.encoder.config.hidden_size
        chosen, last = np.zeros((m, dim), np.float32), np.zeros((m, dim), np.float32)
        by_length: dict[tuple[int, bool], list] = {}
        for chunk in self.plan(m):          # equal input lengths batch together (no padding, no mask)
            by_length.setdefault((chunk[1], chunk[0] + chunk[1] == m), []).append(chunk)
        for (length, _), chunks in by_length.items():
            for b in range(0, len(chunks), self.batch_size):
                group = chunks[b:b + self.batch_size]
                batch = np.stack([x[lo * STRIDE:self.chunk_end(lo, length, m, len(x))] for lo, *_ in group])
                rows, final = self._forward(torch.from_numpy(batch).to(self.device))
                for i, (lo, _, skip, kept) in enumerate(group):
                    chosen[lo + skip:lo + skip + kept] = rows[i, skip:skip + kept].cpu().numpy()
                    last[lo + skip:lo + skip + kept] = final[i, skip:skip + kept].cpu().numpy()
        self.frames_encoded += m
        return chosen, last

    @torch.inference_mode()
    def emotions(self, last: np.ndarray, t0: float, times: np.ndarray) -> np.ndarray:
        """The head on the last layer averaged over `emotion_window` seconds centred on each frame."""
        half = self.emotion_window / 2
        pooled = interval_mean(last, t0, STEP, times - half, times + half)
        logits = self.head(torch.from_numpy(pooled.astype(np.float32)).to(self.device))
        return logits.float().cpu().numpy()

    def frames(self, path: str, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows [n, D (+3)] float32, valid [n]) for the frames at `times` (video clock)."""
        samples, start, valid = frame_audio(path, times)
        dim = self.encoder.config.hidden_size + (len(EMOTIONS) if self.head is not None else 0)
        out = np.zeros((len(times), dim), np.float32)
        if not valid.any() or len(samples) < RECEPTIVE_FIELD:
            return out, np.zeros(len(times), bool) if len(samples) < RECEPTIVE_FIELD else valid
        chosen, last = self.states(samples)
        rows = to_video_frames(chosen, start, times)
        if self.head is not None:
            rows = np.concatenate([rows, self.emotions(last, start + FIRST_STEP, np.asarray(times, np.float64))], axis=1)
        out[valid] = rows[valid]
        return out, valid


@register
class SpeechExtractor(Extractor):
    """A speech encoder's hidden layer on each frame (`speech.emb_0000` ...), and for the emotion model
    its `arousal`, `dominance`, `valence`; valid where the frame lies inside the audio."""

    name, version = "speech", "speech-transformers/1"
    Params = Params
    weight_names = ("random", "official")
    # weights: the random stand-in is narrower than the official models (predict rebuilds the columns from it)
    output_params = ("model", "weights", "layer", "chunk", "context", "emotion_window")
    per_file = True

    def __init__(self, params: dict, device: str = "cpu"):
        super().__init__(params, device)
        spec = MODELS[params["model"]]
        width = TINY["hidden_size"] if params["weights"] == "random" else (1024 if spec.stable_layer_norm else 768)
        self.names = [f"emb_{i:04d}" for i in range(width)] + (list(EMOTIONS) if spec.emotion else [])
        self.dim = len(self.names)
        self.precision = "bf16" if device.startswith("cuda") else "fp32"

    @classmethod
    def available(cls) -> str | None:
        import importlib.util
        return None if importlib.util.find_spec("transformers") else MISSING

    @classmethod
    def weight_files(cls, params: dict) -> list[str]:
        return list(FILES)

    @classmethod
    def weights_spec(cls, params: dict) -> dict:
        return {**super().weights_spec(params), "model": params["model"]}

    @classmethod
    def make_weights(cls, params: dict, directory: str) -> None:
        spec, value = MODELS[params["model"]], params["weights"]
        if value == "random":
            write_random_weights(directory, params["model"], params["seed"])
        elif value == "official":
            for file in FILES:
                url = HF.format(repo=spec.repo, revision=spec.revision, file=file)
                fetch(Download(url, spec.sha256[file]), os.path.join(directory, file), "speech.weights")
        else:
            source = os.path.dirname(os.path.abspath(value))
            missing = [f for f in FILES[:2] if not os.path.isfile(os.path.join(source, f))]
            if not value.endswith(".safetensors") or missing:
                raise WeightsError(f"speech.weights: {value!r} must be a model.safetensors with "
                                   f"{' and '.join(FILES[:2])} beside it (a Hugging Face snapshot folder)")
            import shutil
            for file, src in zip(FILES, [os.path.join(source, f) for f in FILES[:2]] + [value]):
                shutil.copyfile(src, os.path.join(directory, file))
        config = json.load(open(os.path.join(directory, "config.json")))
        if config.get("model_type") != spec.family:
            raise WeightsError(f"speech.weights: a {config.get('model_type')!r} model, not the {spec.family} of {params['model']}")
        load_encoder(directory, spec.emotion, "cpu")          # refuse a wrong file now

    def load(self) -> None:
        p = self.params
        self.encoder = SpeechEncoder(self.weights_dir, MODELS[p["model"]].emotion, p["layer"], self.device, p["chunk"],
                                     p["context"], p["batch_size"], p["emotion_window"])
        width = self.encoder.encoder.config.hidden_size + (len(EMOTIONS) if self.encoder.head is not None else 0)
        if width != self.dim:
            raise WeightsError(f"speech.weights: a model of width {width}, not the {self.dim} of {p['model']}")

    def rows(self, video: Video) -> dict[str, np.ndarray]:
        embedding, valid = self.encoder.frames(video.path, video.times)
        return {"embedding": embedding, "valid": valid, "time": video.times}
