"""Shared test fixtures: a shrunken copy of the real pipeline in a temporary git repository."""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")

# The real params.yaml, shrunk so a whole `dvc repro` takes about a minute on 2 cores.
SMALL = {
    "demo": {"videos": 6, "seconds": 3, "fps": 10},
    "train": {"epochs": 3, "window": 16, "hop": 8, "batch_size": 8},
}


def tree_digest(directory: str) -> dict[str, str]:
    """SHA-256 of every file under directory, by relative path: equal dicts mean byte-identical trees."""
    return {os.path.relpath(p, directory): hashlib.sha256(open(p, "rb").read()).hexdigest()
            for p in sorted(glob.glob(os.path.join(directory, "**"), recursive=True)) if os.path.isfile(p)}


def write_manifest(path: str, trials: list[dict]) -> None:
    """A manifest for hand-made trials (video_id and path at least): `media` and `sha256` computed as the
    dataset stage computes them, the other columns defaulting to a training video of unknown length."""
    import csv

    from avfusion.dataset import media_key
    from avfusion.manifest import COLUMNS
    from avfusion.store import file_sha256
    defaults = {"split": "train", "fps": 10, "frames": 0, "labels": "", "label_frames": 0, "person": ""}
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for t in trials:
            sha256 = file_sha256(t["path"]) if os.path.isfile(t["path"]) else "missing"
            writer.writerow({**defaults, "media": media_key(t["path"]), "sha256": sha256, **t})


def tool_env() -> dict:
    """Environment for dvc/git subprocesses: this venv's `python` first, a git identity, no analytics."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com")
    return env


def run(cmd: list[str], cwd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(*args: str, cwd: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=check)


def shrink(params: dict, overrides: dict) -> dict:
    for section, values in overrides.items():
        params[section].update(values)
    return params


def make_pipeline_repo(dest: str, overrides: dict | None = None) -> str:
    """Copy the project's pipeline into `dest` as a fresh git + DVC repo with one commit."""
    os.makedirs(dest, exist_ok=True)
    for name in ("avfusion", "stages", "dvc.yaml", "pyproject.toml", ".dvc/config", ".dvcignore", ".gitignore"):
        src = os.path.join(REPO, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, name), ignore=shutil.ignore_patterns("__pycache__"))
        elif os.path.exists(src):
            os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
            shutil.copy(src, os.path.join(dest, name))
    for keep in ("reports", "data"):
        os.makedirs(os.path.join(dest, keep), exist_ok=True)
    with open(os.path.join(REPO, "params.yaml")) as f:
        params = shrink(yaml.safe_load(f), {**SMALL, **(overrides or {})})
    with open(os.path.join(dest, "params.yaml"), "w") as f:
        yaml.safe_dump(params, f, sort_keys=False)
    run(["git", "init", "-q", "-b", "main"], cwd=dest)
    run(["git", "add", "-A"], cwd=dest)
    run(["git", "commit", "-qm", "pipeline"], cwd=dest)   # dvclive needs a commit to exist
    return dest


@pytest.fixture
def pipeline_repo(tmp_path):
    return make_pipeline_repo(str(tmp_path / "repo"))


@pytest.fixture
def shared_media():
    path = os.path.join(SHARED, "media")
    if not os.path.isdir(path):
        pytest.skip("../shared/media is not present on this machine")
    return path


@pytest.fixture(scope="session")
def extracted_pipeline(tmp_path_factory):
    """The shrunken pipeline run once (`dvc repro`) and committed with its dvc.lock, shared by the
    remote and queue tests so CI extracts features once. Tests may add commits and experiments."""
    repo = make_pipeline_repo(str(tmp_path_factory.mktemp("extracted") / "a"))
    dvc("repro", cwd=repo)
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "-qm", "extracted features"], cwd=repo)
    return repo
