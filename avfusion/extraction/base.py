"""What every extractor declares, and the video it is given.

An extractor is one module under avfusion/extractors/ holding one `Extractor` subclass registered with
`@register`. The class says what it is and needs; the runner (avfusion/extraction/runner.py) does the
rest the same way for all: the per-video loop, stores, resume, skip-on-error, the process pool and
torchrun ranks, its weight files. The same class, built with the same settings, computes the features
of a new video in `avfusion predict` and `avfusion features` (avfusion/app/).

- `name`: its params section, DVC stage, store directory data/features/<name> and weights directory
  data/weights/<name>. `version`: recorded in its stores; bump it when the code changes stored values,
  and the stores rebuild instead of resuming.
- `Params`: its params section, a pydantic model beside the class (`ExtractorParams` gives `stores`,
  `workers`, `on_error`); `output_params`: the keys that change stored values (recorded in the stores'
  provenance; the other keys change speed or layout only).
- `reads_faces`: it reads the facenet store's face of each frame (`face_columns`): its stage is
  faces@<name> (`features.faces`), after the facenet stage. `backbone`: it has a stage of its own in
  dvc.yaml (facenet, openl3) instead of being listed in `features`.
- weights: `weight_files(params)` names its files; `make_weights(params, directory)` writes them there
  (seeded random, a pinned download through `extraction.weights.fetch`, or the user's file).
- rows: `dim` embedding columns named `names` (None: numbered), extra per-row `columns`, `row_sets`;
  `rows(video)` gives one row per decoded frame of the video.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from avfusion import paths
from avfusion.extraction.registry import REGISTERED
from avfusion.params import Device, OnError, Section, constrained, integer


def weights_param(*named: str):
    """A `weights` key: one of the named weights or a file's path (checked when the files are made:
    the extraction stages read the copy in data/weights/, which a teammate may have pulled)."""
    return constrained(str, f"{', '.join(named)} or the path of an existing file", lambda v: bool(v.strip()))


class ExtractorParams(Section):
    """The keys every extractor section has."""
    stores: integer(ge=1) = 4            # videos are spread over this many Zarr stores (one writer each)
    workers: integer(ge=1) = 1           # parallel extraction processes (one per store at most)
    on_error: OnError = "fail"           # bad media: fail (one line) | skip (record in reports/skipped_<name>.json)


class DeviceParams(ExtractorParams):
    """Extractors that run a network: `device` (auto: cuda when there is one)."""
    device: Device = "auto"


@dataclass
class Video:
    """One trial of the manifest (a person in a media file), as an extractor sees it."""
    id: str
    path: str
    times: np.ndarray                    # the timestamps of its decoded frames (data/frame_times): one row each
    person: str = ""                     # left | right (Aff-Wild2 two-person trials) | ""
    media: str = ""                      # the media file's key: trials sharing it share per-file rows
    faces: dict[str, np.ndarray] | None = None   # the facenet rows of this trial (extractors that read faces)


def register(cls):
    """Class decorator: make an extractor findable by its name (avfusion/extraction/registry.py)."""
    module = cls.__module__.rsplit(".", 1)[-1]
    if cls.name != module:
        raise RuntimeError(f"extractor {cls.name!r} must live in avfusion/extractors/{cls.name}.py, not {module}.py")
    REGISTERED[cls.name] = cls
    return cls


class Extractor:
    """One kind of per-frame features. `__init__` is cheap (no model yet: the runner builds one per
    process to compute the provenance); `load` builds the models, only when there is work."""

    name: ClassVar[str]
    version: ClassVar[str]
    Params: ClassVar[type[ExtractorParams]] = ExtractorParams
    output_params: ClassVar[tuple[str, ...]] = ()
    reads_faces: ClassVar[bool] = False
    face_columns: ClassVar[tuple[str, ...]] = ("valid", "box")
    backbone: ClassVar[bool] = False
    weight_names: ClassVar[tuple[str, ...]] = ()   # the named values of its `weights` key (random, official ones)
    per_file: ClassVar[bool] = False     # trials of one file share its rows (`file_rows`), each taking its own (`trial_rows`)
    row_sets: dict[str, dict[str, tuple[tuple[int, ...], str]]] = {}

    def __init__(self, params: dict, device: str = "cpu"):
        self.params, self.device = params, device
        self.dim = 0
        self.names: list[str] | None = None      # embedding column names; None: numbered
        self.columns: dict[str, tuple[tuple[int, ...], str]] = {}   # extra per-row columns
        self.precision = "float32"               # CPU and GPU values differ: never mixed in one store
        self.weights_dir = paths.weights_dir(self.name)
        self.loaded = False

    # ---------------------------------------------------------------- weights

    @classmethod
    def weight_files(cls, params: dict) -> list[str]:
        """The file names under data/weights/<name>/ this extractor reads (none by default)."""
        return []

    @classmethod
    def make_weights(cls, params: dict, directory: str) -> None:
        """Write `weight_files(params)` into `directory`."""

    @classmethod
    def weights_spec(cls, params: dict) -> dict:
        """The params that decide the weight files: when they change, the files are made again."""
        return {key: params[key] for key in ("weights", "seed") if key in params}

    def weight_path(self, file: str | None = None) -> str:
        files = self.weight_files(self.params)
        return os.path.join(self.weights_dir, file or files[0])

    @classmethod
    def available(cls) -> str | None:
        """Why this extractor cannot run here (an optional package missing), or None."""
        return None

    # ---------------------------------------------------------------- rows

    def load(self) -> None:
        """Build the models (once, before the first video this process extracts)."""

    def ensure_loaded(self) -> None:
        if not self.loaded:
            self.load()
            self.loaded = True

    def rows(self, video: Video) -> dict[str, np.ndarray]:
        """One trial's features, one row per decoded frame: `embedding` [n, dim], `valid` [n], `time`
        [n] and the extra `columns` (the runner adds `frame`). Raises MediaError for bad input."""
        raise NotImplementedError

    def file_rows(self, video: Video) -> dict:
        """What the trials of one media file share (`per_file`): by default the rows themselves."""
        return self.rows(video)

    def trial_rows(self, shared: dict, video: Video) -> dict[str, np.ndarray]:
        """One trial's rows from its file's `file_rows`."""
        return shared

    def provenance(self) -> dict:
        """What the stored values depend on besides the videos; a store resumes only when it is equal."""
        files = self.weight_files(self.params)
        hashes = {f: paths.file_sha256(os.path.join(self.weights_dir, f)) for f in files}
        weights = {"weights_sha256": hashes[files[0]] if len(files) == 1 else hashes} if files else {}
        return {"extractor": self.version, "params": {k: self.params[k] for k in self.output_params},
                "precision": self.precision, **weights,
                **({"columns": list(self.names)} if self.names is not None else {})}

    @classmethod
    def settings(cls, provenance: dict) -> dict:
        """The params to build this extractor as it wrote a store with `provenance`: the section's
        defaults with the recorded output params (`avfusion predict` computes a new video's features so)."""
        defaults = {key: field.get_default() for key, field in cls.Params.model_fields.items()
                    if not field.is_required()}
        return {**defaults, **provenance["params"]}
