"""params.yaml: each stage reads its own section(s), checked against one schema before any work.

`SCHEMA` lists every key of every section: what it allows and, for optional keys, the value used when
it is absent (the library's own default; `load_params` fills it in). Unknown keys are refused: a
misspelt key would otherwise be silently ignored. A bad value is a `ParamsError` whose one line names
the key and what is allowed, e.g. `params.yaml: train.window must be an integer >= 1, not 0`.
Adding a key is one line in `SCHEMA`.
"""
from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from avfusion.errors import DeviceError, ParamsError

PARAMS = "params.yaml"
REQUIRED = object()        # a key without a default must be present
ABSENT = object()          # an optional key that stays absent when not given (read only by some sources)


@dataclass(frozen=True)
class Key:
    allowed: str                        # what the key allows, as the error message says it
    ok: Callable[[Any], bool]
    default: Any = REQUIRED


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _bounds(ge=None, gt=None, le=None, lt=None) -> tuple[str, Callable[[Any], bool]]:
    """(" >= 0 and < 1", the test) for the bounds given."""
    tests = [(sign, bound, op) for sign, bound, op in ((">=", ge, operator.ge), (">", gt, operator.gt),
                                                       ("<=", le, operator.le), ("<", lt, operator.lt))
             if bound is not None]
    words = " and ".join(f"{sign} {bound}" for sign, bound, _ in tests)
    return (" " + words if words else ""), lambda v: all(op(v, bound) for _, bound, op in tests)


def integer(ge=None, gt=None, le=None, lt=None, default=REQUIRED) -> Key:
    text, within = _bounds(ge, gt, le, lt)
    return Key("an integer" + text, lambda v: _is_int(v) and within(v), default)


def number(ge=None, gt=None, le=None, lt=None, default=REQUIRED) -> Key:
    text, within = _bounds(ge, gt, le, lt)
    return Key("a number" + text, lambda v: _is_number(v) and within(v), default)


def one_of(*values, default=REQUIRED) -> Key:
    # compared with their types: YAML `true` must not pass for 1, nor "512" for 512
    return Key("one of " + ", ".join(map(str, values)),
               lambda v: any(type(v) is type(c) and v == c for c in values), default)


def boolean(default=REQUIRED) -> Key:
    return Key("true or false", lambda v: isinstance(v, bool), default)


def text(default=REQUIRED) -> Key:
    return Key("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()), default)


def by_recipe(key: Key) -> Key:
    """A key `train.recipe` fills in when it is null or absent (avfusion/recipes.py); a value set wins."""
    return Key(key.allowed, lambda v: v is None or key.ok(v), None)


def numbers(gt=None, default=REQUIRED) -> Key:
    text, within = _bounds(gt=gt)
    return Key("a non-empty list of numbers" + text,
               lambda v: isinstance(v, list) and bool(v) and all(_is_number(x) and within(x) for x in v), default)


def extractor_list(default: list[str]) -> Key:
    return Key(f"a non-empty list of distinct extractor names ({', '.join(FEATURE_SET_NAMES)})",
               lambda v: isinstance(v, list) and bool(v) and all(isinstance(n, str) and n in FEATURE_SET_NAMES
                                                                 for n in v) and len(set(v)) == len(v), default)


def weights(*named: str) -> Key:
    # Whether the file exists is checked by the weights stage (weights.check_spec), the one stage that
    # reads it: the extraction stages use its copy in data/weights/, which a teammate may have pulled.
    return Key(f"{', '.join(named)} or the path of an existing file", lambda v: isinstance(v, str) and bool(v.strip()))


DEVICE = Key("auto, cpu, cuda or cuda:<index>",
             lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None, "auto")
ON_ERROR = one_of("fail", "skip", default="fail")   # bad media: stop with one line, or leave the video out
SPLIT_SHARE = number(ge=0, lt=1, default=ABSENT)
DATA_PATH = one_of("auto", "memory", "stores", default="auto")   # avfusion/outofcore.py: where splits live
MEMORY_BUDGET = number(gt=0, default=2)                           # GB of embeddings `auto` keeps in memory
# The plug-ins a features.extractors list may name (avfusion/extractors.py; facenet and openl3 have their
# own stages, visual and audio)
EXTRACTOR_NAMES = ("vad", "egemaps", "logmel", "mfcc", "expression", "landmarks")
# What a model's feature set (fusion.visual, fusion.audio; avfusion/featuresets.py) may name: every extractor
FEATURE_SET_NAMES = ("facenet", "openl3", *EXTRACTOR_NAMES)
# The audio descriptor extractors run on the CPU, one process per store
AUDIO_DESCRIPTOR = {"stores": integer(ge=1), "workers": integer(ge=1, default=1), "on_error": ON_ERROR}

SCHEMA: dict[str, dict[str, Key]] = {
    "demo": {
        "videos": integer(ge=5),                 # one video of each split at least (demo.SPLIT_CYCLE)
        "seconds": number(ge=2),                 # a one-second annotator gap must fit inside a video
        "fps": integer(ge=1),
        "size": Key("an even integer >= 32", lambda v: _is_int(v) and v >= 32 and v % 2 == 0),   # H.264 4:2:0
        "seed": integer(ge=0),
    },
    "data": {
        "source": one_of("demo", "affwild2", "folder"),
        "root": text(),
        "validation": SPLIT_SHARE,               # folder source only
        "test": SPLIT_SHARE,
        "annotations": text(default=ABSENT),     # affwild2 only: folders under root, when not the official ones
        "videos": text(default=ABSENT),
        "on_error": ON_ERROR,
    },
    "visual": {
        "weights": weights("random", "vggface2", "casia-webface"),
        "seed": integer(ge=0),
        "detect_size": integer(ge=1),
        "min_face": integer(ge=1),
        "margin": integer(ge=0),
        "batch_size": integer(ge=1),
        "keep_pooled": boolean(),
        "detect_every": integer(ge=1),
        "people": one_of("one", "all", default="one"),   # all: every tracked face (docs/design.md §4.2)
        "device": DEVICE,
        "stores": integer(ge=1),
        "workers": integer(ge=1),
        "on_error": ON_ERROR,
    },
    "audio": {
        "weights": weights("random", "env", "music"),
        "seed": integer(ge=0),
        "input_repr": one_of("linear", "mel128", "mel256"),   # openl3.FRONT_ENDS
        "embedding_size": one_of(512, 6144),
        "rate": number(ge=0),
        "silence_db": number(le=0),
        "silence_window": number(gt=0),
        "valid_from": one_of("level", "vad", default="level"),   # the validity mask: RMS level gate or silero-vad
        "vad_threshold": number(ge=0, le=1, default=0.5),         # valid_from: vad: speech probability >= this
        "batch_size": integer(ge=1),
        "device": DEVICE,
        "stores": integer(ge=1),
        "workers": integer(ge=1),
        "on_error": ON_ERROR,
    },
    # Plug-in extractors (avfusion/extractors.py): `extract@<name>` stages for the names listed here
    "features": {
        "extractors": Key("a list of extractor names (vad, egemaps, logmel, mfcc, expression, landmarks)",
                          lambda v: isinstance(v, list) and all(n in EXTRACTOR_NAMES for n in v)
                          and len(set(v)) == len(v)),
    },
    "vad": dict(AUDIO_DESCRIPTOR),
    "egemaps": dict(AUDIO_DESCRIPTOR),
    "logmel": dict(AUDIO_DESCRIPTOR),
    "mfcc": dict(AUDIO_DESCRIPTOR),
    "expression": {
        "weights": weights("fer"),
        "batch_size": integer(ge=1, default=64),
        "device": DEVICE,
        "stores": integer(ge=1),
        "workers": integer(ge=1, default=1),
        "on_error": ON_ERROR,
    },
    # reads the visual store only (no model, no decoding): CPU, one process per store
    "landmarks": {"stores": integer(ge=1), "workers": integer(ge=1, default=1), "on_error": ON_ERROR},
    "fusion": {
        "type": one_of("jca", "lfan", "cross_attention", "concat", "late", "audio_only", "visual_only",
                       "ridge"),  # fusion.TYPES
        "dim": integer(ge=1, default=128),
        "hidden": integer(ge=1, default=32),
        "dropout": number(ge=0, lt=1, default=0.6),
        "tcn_kernel": integer(ge=1, default=5),
        "tcn_dropout": number(ge=0, lt=1, default=0.1),
        "output": by_recipe(one_of("tanh", "linear")),
        "tcn_dropout_kind": by_recipe(one_of("element", "channel")),
        "ridge_alphas": numbers(gt=0, default=[1, 10, 100, 1000, 10000, 100000]),
        "visual": extractor_list(default=["facenet"]),   # the model's feature set (avfusion/featuresets.py)
        "audio": extractor_list(default=["openl3"]),
    },
    "train": {
        "recipe": one_of("default", "jca_paper", "lfan_paper", default="default"),   # recipes.RECIPES
        "seed": integer(ge=0),
        "device": DEVICE,
        "folds": integer(ge=1, default=1),
        "window": by_recipe(integer(ge=1)),
        "hop": by_recipe(integer(ge=1)),
        "last_window": by_recipe(one_of("pad", "shift")),
        "per_dimension": by_recipe(boolean()),
        "loss": by_recipe(one_of("batch_ccc", "window_ccc")),
        "batch_size": by_recipe(integer(ge=1)),
        "epochs": by_recipe(integer(ge=1)),
        "patience": by_recipe(integer(ge=1)),
        "optimizer": by_recipe(one_of("adamw", "adam")),
        "lr": by_recipe(number(gt=0)),
        "weight_decay": by_recipe(number(ge=0)),
        "scheduler": by_recipe(one_of("cosine", "constant", "step", "plateau")),
        "lr_factor": by_recipe(number(gt=0)),
        "lr_patience": by_recipe(integer(ge=0)),
        "lr_every": by_recipe(integer(ge=1)),
        "lr_after": by_recipe(integer(ge=0)),
        "min_lr": by_recipe(number(ge=0)),
        "grad_clip": by_recipe(number(ge=0)),                 # 0: off
        "data": DATA_PATH,
        "memory_budget_gb": MEMORY_BUDGET,
    },
    "eval": {
        "clip": boolean(),
        "smooth_valence": by_recipe(integer(ge=0)),
        "smooth_arousal": by_recipe(integer(ge=0)),
        "smooth_mode": by_recipe(one_of("nearest", "constant")),
        "smooth_order": by_recipe(one_of("smooth_then_clip", "clip_then_smooth")),
        "plot_videos": integer(ge=0),
        "device": DEVICE,
        "data": DATA_PATH,
        "memory_budget_gb": MEMORY_BUDGET,
    },
}


def _data_rules(p: dict) -> str | None:
    if p["source"] == "folder":
        for key in ("validation", "test"):
            if key not in p:
                return f"data.{key} is missing (the folder source splits by it: {SPLIT_SHARE.allowed})"
        if p["validation"] + p["test"] >= 1:
            return (f"data.validation + data.test must be < 1 (the rest is for training), "
                    f"not {p['validation']} + {p['test']}")
    return None


def _visual_rules(p: dict) -> str | None:
    if p["min_face"] > p["detect_size"]:
        return (f"visual.min_face must be <= visual.detect_size (faces are looked for in that copy), "
                f"not {p['min_face']} > {p['detect_size']}")
    return None


def _train_rules(p: dict) -> str | None:
    if p["hop"] is not None and p["window"] is not None and p["hop"] > p["window"]:
        return f"train.hop must be <= train.window (windows must cover every frame), not {p['hop']} > {p['window']}"
    return None


# Rules between keys of one section, run once every key is valid: the problem in one line, or None.
RULES: dict[str, Callable[[dict], str | None]] = {"data": _data_rules, "visual": _visual_rules, "train": _train_rules}


def invalid(section: str, key: str, value, allowed: str, path: str = PARAMS) -> ParamsError:
    return ParamsError(f"{path}: {section}.{key} must be {allowed}, not {value!r}")


def check_value(section: str, key: str, value, path: str = PARAMS):
    """The value if `section.key` allows it; raises ParamsError otherwise."""
    rule = SCHEMA[section][key]
    if not rule.ok(value):
        raise invalid(section, key, value, rule.allowed, path)
    return value


def validate(section: str, values, path: str = PARAMS) -> dict:
    """A section checked against SCHEMA, with the defaults of absent optional keys filled in."""
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: '{section}' must be a mapping of keys to values, not {values!r}")
    schema = SCHEMA[section]
    unknown = sorted(set(values) - set(schema), key=str)
    if unknown:
        raise ParamsError(f"{path}: {section}.{unknown[0]} is not a known key (known: {', '.join(schema)})")
    checked = {key: check_value(section, key, value, path) for key, value in values.items()}   # the file's order
    for key, rule in schema.items():
        if key in checked:
            continue
        if rule.default is REQUIRED:
            raise ParamsError(f"{path}: {section}.{key} is missing ({rule.allowed})")
        if rule.default is not ABSENT:
            checked[key] = rule.default
    check_rules(section, checked, path)
    return checked


def check_rules(section: str, values: dict, path: str = PARAMS) -> None:
    """The rules between keys of a section (e.g. train.hop <= train.window); raises ParamsError."""
    problem = RULES[section](values) if section in RULES else None
    if problem:
        raise ParamsError(f"{path}: {problem}")


def load_params(section: str, path: str = PARAMS) -> dict:
    """One section of params.yaml, validated (see `validate`)."""
    try:
        with open(path) as f:
            params = yaml.safe_load(f)
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the project's root)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}: not valid YAML{where} ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(params, dict) or section not in params:
        raise ParamsError(f"{path}: no '{section}' section")
    return validate(section, params[section], path)


def resolve_device(name: str = "auto") -> str:
    """The torch device for a `device` param or `--device` flag (auto: cuda when there is one)."""
    import torch
    if not DEVICE.ok(name):
        raise DeviceError(f"device must be {DEVICE.allowed}, not {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device '{name}' requested but no CUDA device is available")
    return name
