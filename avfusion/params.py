"""params.yaml: each stage reads its own section(s), checked against a typed schema before any work.

Each section is a pydantic model in strict mode with unknown keys forbidden: the pipeline's own
sections are below, and every extractor declares its section beside its class (`Extractor.Params`,
avfusion/extraction/base.py), found by name through the registry. A key's annotation says what it
allows (`Allowed`, a `Literal`, or `bool`), its default is the library's own, and keys marked `ABSENT`
stay out of the result when not given (they are read by one data source only). A bad value is a
`ParamsError` whose one line names the key and what is allowed, e.g.
`params.yaml: train.window must be an integer >= 1, not 0`; rules between keys of one section
(`train.hop <= train.window`) are the models' `after` validators and read the same way.
"""
from __future__ import annotations

import functools
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator

from avfusion import paths
from avfusion.errors import DeviceError, ParamsError
from avfusion.extraction.registry import names as extractor_names


@dataclass(frozen=True)
class Allowed:
    """A key's constraint beyond its type, and how error messages say what the key allows."""
    text: str
    test: Callable[[Any], bool] = lambda v: True

    def __call__(self, value):
        if not self.test(value):
            raise ValueError(self.text)
        return value


class ABSENT:
    """Marks an optional key that stays absent when not given (read only by some sources)."""


def constrained(kind, text: str, test: Callable[[Any], bool]):
    rule = Allowed(text, test)
    return Annotated[kind, rule, AfterValidator(rule)]


def _bounds(ge=None, gt=None, le=None, lt=None) -> tuple[str, Callable[[Any], bool]]:
    """(" >= 0 and < 1", its test) for the bounds given."""
    checks = [(sign, bound, test) for sign, bound, test in (
        (">=", ge, lambda v, b: v >= b), (">", gt, lambda v, b: v > b),
        ("<=", le, lambda v, b: v <= b), ("<", lt, lambda v, b: v < b)) if bound is not None]
    words = " and ".join(f"{sign} {bound}" for sign, bound, _ in checks)
    return (" " + words if words else ""), lambda v: all(test(v, bound) for _, bound, test in checks)


def integer(ge=None, gt=None, le=None, lt=None):
    text, within = _bounds(ge, gt, le, lt)
    return constrained(int, "an integer" + text, within)


def number(ge=None, gt=None, le=None, lt=None):
    # int | float: an integer in the file stays an integer (provenance records values as written)
    text, within = _bounds(ge, gt, le, lt)
    return constrained(int | float, "a number" + text, lambda v: math.isfinite(v) and within(v))


def numbers(gt=None):
    text, within = _bounds(gt=gt)
    return constrained(list[int | float], "a non-empty list of numbers" + text,
                        lambda v: bool(v) and all(math.isfinite(x) and within(x) for x in v))


Seeds = constrained(list[int], "a non-empty list of distinct integers >= 0",
                    lambda v: bool(v) and len(set(v)) == len(v) and all(s >= 0 for s in v))
Text = constrained(str, "a non-empty string", lambda v: bool(v.strip()))
Device = constrained(str, "auto, cpu, cuda or cuda:<index>", lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None)
OnError = Literal["fail", "skip"]                 # bad media: stop with one line, or leave the video out
DataPath = Literal["auto", "memory", "stores"]    # avfusion/learning/outofcore.py: where splits live
MemoryBudget = number(gt=0)                       # GB of embeddings `auto` keeps in memory
SplitShare = Annotated[number(ge=0, lt=1) | None, ABSENT]


def extractor_list(non_empty: bool):
    known = ", ".join(extractor_names())
    return constrained(list[str], f"a {'non-empty ' if non_empty else ''}list of distinct extractor names ({known})",
                        lambda v: (bool(v) or not non_empty) and len(set(v)) == len(v)
                        and all(n in extractor_names() for n in v))


def ByRecipe(kind):
    """A key `train.recipe` fills in when it is null or absent (avfusion/learning/recipes.py); a value set wins."""
    return kind | None


class Section(BaseModel):
    """One params.yaml section: strict types (YAML `true` is not 1, "512" is not 512), no unknown keys,
    and `rule`: a check between its keys (None when they agree, else what is wrong, in one line)."""
    model_config = ConfigDict(strict=True, extra="forbid")

    @classmethod
    def rule(cls, values: dict) -> str | None:
        return None

    @model_validator(mode="after")
    def keys_agree(self):
        problem = type(self).rule(self.model_dump())
        if problem:
            raise ValueError(problem)
        return self


class Demo(Section):
    videos: integer(ge=5)                    # one video of each split at least (demo.SPLIT_CYCLE)
    seconds: number(ge=2)                    # a one-second annotator gap must fit inside a video
    fps: integer(ge=1)
    size: constrained(int, "an even integer >= 32", lambda v: v >= 32 and v % 2 == 0)   # H.264 4:2:0
    seed: integer(ge=0)


class Data(Section):
    source: Literal["demo", "affwild2", "folder"]
    root: Text
    validation: SplitShare = None           # folder source only
    test: SplitShare = None
    annotations: Annotated[Text | None, ABSENT] = None   # affwild2 only: folders under root, when not the official ones
    videos: Annotated[Text | None, ABSENT] = None
    on_error: OnError = "fail"

    @classmethod
    def rule(cls, p: dict) -> str | None:
        if p["source"] == "folder":
            for key in ("validation", "test"):
                if p.get(key) is None:
                    return f"data.{key} is missing (the folder source splits by it: {allowed('data', key)})"
            if p["validation"] + p["test"] >= 1:
                return (f"data.validation + data.test must be < 1 (the rest is for training), "
                        f"not {p['validation']} + {p['test']}")
        return None


class Features(Section):
    """Which plug-in extractors run (one DVC stage each): `extractors` read each video (extract@<name>),
    `faces` read each video at the faces the facenet stage found (faces@<name>)."""
    extractors: extractor_list(non_empty=False)
    faces: extractor_list(non_empty=False) = []


FUSION_TYPES = ("jca", "lfan", "cross_attention", "concat", "late", "audio_only", "visual_only", "ridge")


class Fusion(Section):
    type: Literal[FUSION_TYPES]                                       # learning.fusion.TYPES
    dim: integer(ge=1) = 128
    hidden: integer(ge=1) = 32
    dropout: number(ge=0, lt=1) = 0.6
    tcn_kernel: integer(ge=1) = 5
    tcn_dropout: number(ge=0, lt=1) = 0.1
    output: ByRecipe(Literal["tanh", "linear"]) = None
    tcn_dropout_kind: ByRecipe(Literal["element", "channel"]) = None
    ridge_alphas: numbers(gt=0) = [1, 10, 100, 1000, 10000, 100000]
    visual: extractor_list(non_empty=True) = ["facenet"]             # the model's feature set (learning/featuresets.py)
    audio: extractor_list(non_empty=True) = ["openl3"]


class Train(Section):
    recipe: Literal["default", "jca_paper", "lfan_paper"] = "default"   # recipes.RECIPES
    seeds: Seeds = [0]                     # one model per seed (and fold); evaluation averages them
    device: Device = "auto"
    threads: integer(ge=0) = 1             # CPU threads: 1 bitwise-repeatable, 0 all cores (repeatable to ~1e-6)
    folds: integer(ge=1) = 1
    window: ByRecipe(integer(ge=1)) = None
    hop: ByRecipe(integer(ge=1)) = None
    last_window: ByRecipe(Literal["pad", "shift"]) = None
    per_dimension: ByRecipe(bool) = None
    loss: ByRecipe(Literal["batch_ccc", "window_ccc"]) = None
    batch_size: ByRecipe(integer(ge=1)) = None
    epochs: ByRecipe(integer(ge=1)) = None
    patience: ByRecipe(integer(ge=1)) = None
    optimizer: ByRecipe(Literal["adamw", "adam"]) = None
    lr: ByRecipe(number(gt=0)) = None
    weight_decay: ByRecipe(number(ge=0)) = None
    scheduler: ByRecipe(Literal["cosine", "constant", "step", "plateau"]) = None
    lr_factor: ByRecipe(number(gt=0)) = None
    lr_patience: ByRecipe(integer(ge=0)) = None
    lr_every: ByRecipe(integer(ge=1)) = None
    lr_after: ByRecipe(integer(ge=0)) = None
    min_lr: ByRecipe(number(ge=0)) = None
    grad_clip: ByRecipe(number(ge=0)) = None                          # 0: off
    data: DataPath = "auto"
    memory_budget_gb: MemoryBudget = 2

    @classmethod
    def rule(cls, p: dict) -> str | None:
        if p.get("hop") is not None and p.get("window") is not None and p["hop"] > p["window"]:
            return f"train.hop must be <= train.window (windows must cover every frame), not {p['hop']} > {p['window']}"
        return None


class Eval(Section):
    clip: bool
    smooth_valence: ByRecipe(integer(ge=0)) = None
    smooth_arousal: ByRecipe(integer(ge=0)) = None
    smooth_mode: ByRecipe(Literal["nearest", "constant"]) = None
    smooth_order: ByRecipe(Literal["smooth_then_clip", "clip_then_smooth"]) = None
    plot_videos: integer(ge=0)
    bootstrap: integer(ge=0) = 1000        # resamples of the videos for each CCC's 95% interval (0: none)
    bootstrap_seed: integer(ge=0) = 0
    device: Device = "auto"
    data: DataPath = "auto"
    memory_budget_gb: MemoryBudget = 2


SECTIONS: dict[str, type[Section]] = {"demo": Demo, "data": Data, "features": Features, "fusion": Fusion,
                                      "train": Train, "eval": Eval}


def schema(section: str) -> type[Section]:
    """The model of a section: the pipeline's own, or the params of the extractor of that name."""
    if section in SECTIONS:
        return SECTIONS[section]
    if section in extractor_names():
        from avfusion.extraction.registry import get
        return get(section).Params
    raise ParamsError(f"no params section '{section}' (sections: {', '.join([*SECTIONS, *extractor_names()])})")


def _rules(annotation) -> list:
    """The `Allowed`, `Literal` and `bool` parts of an annotation, looking through Optional and Annotated."""
    found = []
    if typing.get_origin(annotation) is Annotated:
        base, *meta = typing.get_args(annotation)
        return [m for m in meta if isinstance(m, Allowed)] or _rules(base)
    if typing.get_origin(annotation) is Literal:
        return [annotation]
    if annotation is bool:
        return [bool]
    for arg in typing.get_args(annotation):
        found += _rules(arg)
    return found


def _describe(rule) -> str:
    if isinstance(rule, Allowed):
        return rule.text
    if rule is bool:
        return "true or false"
    return "one of " + ", ".join(map(str, typing.get_args(rule)))


def allowed(section: str, key: str) -> str:
    """What `section.key` allows, as error messages say it."""
    field = schema(section).model_fields[key]
    rules = _rules(field.annotation) + [m for m in field.metadata if isinstance(m, Allowed)]
    return _describe(rules[0]) if rules else "a value"


def _is_absent(model: type[Section], key: str) -> bool:
    annotation = model.model_fields[key].annotation
    return typing.get_origin(annotation) is Annotated and ABSENT in typing.get_args(annotation)[1:] or \
        any(a is ABSENT for a in model.model_fields[key].metadata)


def invalid(section: str, key: str, value, path: str | None = None) -> ParamsError:
    return ParamsError(f"{path or 'params.yaml'}: {section}.{key} must be {allowed(section, key)}, not {value!r}")


def validate(section: str, values, path: str | None = None) -> dict:
    """A section checked against its model, with the defaults of absent optional keys filled in: the
    file's keys in the file's order, then the defaults."""
    where = path or "params.yaml"
    if not isinstance(values, dict):
        raise ParamsError(f"{where}: '{section}' must be a mapping of keys to values, not {values!r}")
    model = schema(section)
    try:
        checked = model.model_validate(values)
    except ValidationError as exc:
        raise _one_line(exc, section, values, model, where) from None
    out = {key: getattr(checked, key) for key in values}
    out.update({key: getattr(checked, key) for key in model.model_fields
                if key not in out and not _is_absent(model, key)})
    return out


def _one_line(exc: ValidationError, section: str, values: dict, model: type[Section], where: str) -> ParamsError:
    error = exc.errors()[0]
    key = str(error["loc"][0]) if error["loc"] else None
    if error["type"] == "extra_forbidden":
        return ParamsError(f"{where}: {section}.{key} is not a known key (known: {', '.join(model.model_fields)})")
    if error["type"] == "missing":
        return ParamsError(f"{where}: {section}.{key} is missing ({allowed(section, key)})")
    if key is None:                                   # a rule between keys: its own message
        return ParamsError(f"{where}: {error['ctx']['error'] if 'ctx' in error else error['msg']}")
    return invalid(section, key, values[key], where)


def check_value(section: str, key: str, value, path: str | None = None):
    """The value if `section.key` allows it; raises ParamsError otherwise."""
    try:
        _adapter(section, key).validate_python(value, strict=True)
    except ValidationError:
        raise invalid(section, key, value, path) from None
    return value


def check_rules(section: str, values: dict, path: str | None = None) -> None:
    """The rule between keys of a section (e.g. train.hop <= train.window); raises ParamsError."""
    problem = schema(section).rule(values)
    if problem:
        raise ParamsError(f"{path or 'params.yaml'}: {problem}")


@functools.cache
def _adapter(section: str, key: str) -> TypeAdapter:
    return TypeAdapter(schema(section).model_fields[key].annotation)


def read_params(path: str | None = None) -> dict:
    """The whole params.yaml (default: the project's, avfusion/paths.py)."""
    path = path or paths.params_file()
    try:
        with open(path) as f:
            params = yaml.safe_load(f)
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the project's root, or avfusion.paths.set_root)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}: not valid YAML{where} ({getattr(exc, 'problem', None) or exc})") from None
    return params if isinstance(params, dict) else {}


def load_params(section: str, path: str | None = None) -> dict:
    """One section of params.yaml, validated (see `validate`)."""
    params = read_params(path)
    if section not in params:
        raise ParamsError(f"{path or 'params.yaml'}: no '{section}' section")
    return validate(section, params[section], path)


def resolve_device(name: str = "auto") -> str:
    """The torch device for a `device` param or `--device` flag (auto: cuda when there is one)."""
    import torch
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(name)):
        raise DeviceError(f"device must be auto, cpu, cuda or cuda:<index>, not {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device '{name}' requested but no CUDA device is available")
    return name
