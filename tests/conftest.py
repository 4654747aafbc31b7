"""Shared test helpers and fixtures: real encoded media, running stages and dvc as a user does, and a
shrunken copy of the real pipeline in a temporary git repository. Tests import helpers from here."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from avfusion.sources.demo import write_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# How drawn test faces look (avfusion.demo.draw_face): MTCNN finds them.
LOOK = {"background": (40, 60, 80), "stripe": (60, 80, 100), "skin": (220, 170, 130), "face_w": 0.5, "face_h": 0.65}

# The real params.yaml, shrunk so a whole `dvc repro` takes about a minute on 2 cores.
SMALL = {
    "demo": {"videos": 6, "seconds": 3, "fps": 10},
    "train": {"epochs": 3, "window": 16, "hop": 8, "batch_size": 8},
}


def tone(seconds: float, rate: int = 16000, hz: float = 220.0, amplitude: float = 0.3) -> np.ndarray:
    """A float32 mono sine: audio any stage decodes and embeds."""
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def encode_video(path, frames: list[Image.Image], audio: np.ndarray | None = None, fps: int = 10,
                 sample_rate: int = 16000) -> str:
    """A real H.264 (+ AAC when `audio` is given) file through the project's own writer; odd frame
    sizes are encoded in 4:4:4. Returns the path as a string."""
    write_video(str(path), frames, audio, fps, sample_rate)
    return str(path)


def tree_digest(directory: str) -> dict[str, str]:
    """SHA-256 of every file under directory, by relative path: equal dicts mean byte-identical trees."""
    return {os.path.relpath(p, directory): hashlib.sha256(open(p, "rb").read()).hexdigest()
            for p in sorted(glob.glob(os.path.join(directory, "**"), recursive=True)) if os.path.isfile(p)}


def write_manifest(path: str, trials: list[dict]) -> None:
    """A manifest for hand-made trials (video_id and path at least): `media`, `sha256` and the frame times
    (data/frame_times beside the manifest) computed as the dataset stage computes them, the other columns
    defaulting to a training video of unknown length. A trial may give its `times` instead: a file that
    broke after the dataset stage read it, for the extraction stages to find."""
    import csv

    from avfusion.paths import file_sha256
    from avfusion.sources.dataset import media_key
    from avfusion.sources.manifest import COLUMNS, write_frame_times
    from avfusion.sources.media import frame_times
    defaults = {"split": "train", "fps": 10, "frames": 0, "labels": "", "label_frames": 0, "person": ""}
    times_dir = os.path.join(os.path.dirname(str(path)), "frame_times")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for t in trials:
            t = dict(t)
            sha256 = file_sha256(t["path"]) if os.path.isfile(t["path"]) else "missing"
            times = t.pop("times", None)
            if times is None and os.path.isfile(t["path"]):
                times = frame_times(t["path"])
            if times is not None:
                write_frame_times(sha256, times, times_dir)
            writer.writerow({**defaults, "media": media_key(t["path"]), "sha256": sha256, **t})


def make_project(root, sections: dict, trials: list[dict] | None = None) -> str:
    """A project directory as the stages expect it: params.yaml with `sections`, a dvc.yaml marking the
    root (avfusion/paths.py), and a manifest of `trials` with their frame times."""
    root = str(root)
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    with open(os.path.join(root, "params.yaml"), "w") as f:
        yaml.safe_dump(sections, f, sort_keys=False)
    if not os.path.exists(os.path.join(root, "dvc.yaml")):
        open(os.path.join(root, "dvc.yaml"), "w").write("stages: {}\n")
    if trials is not None:
        write_manifest(os.path.join(root, "data", "manifest.csv"), trials)
    return root


def extract(root, name: str, monkeypatch):
    """Extractor `name`'s stage in project `root` (as `python -m stages.extract <name>` runs it, in this
    process): its weights, then its stores; returns a reader of them."""
    from avfusion.extraction.registry import get
    from avfusion.extraction.runner import run_stage as run_extractor
    from avfusion.params import load_params
    from avfusion.paths import ROOT_ENV
    from avfusion.store.reader import FeatureReader
    monkeypatch.chdir(root)
    monkeypatch.delenv(ROOT_ENV, raising=False)
    run_extractor(get(name), load_params(name))
    return FeatureReader(os.path.join(str(root), "data", "features", name))


@contextmanager
def project_root(path):
    """Library calls inside act on the project at `path` (avfusion/paths.py), whatever the working directory."""
    from avfusion.paths import ROOT_ENV
    before = os.environ.get(ROOT_ENV)
    os.environ[ROOT_ENV] = str(path)
    try:
        yield str(path)
    finally:
        if before is None:
            os.environ.pop(ROOT_ENV, None)
        else:
            os.environ[ROOT_ENV] = before


def tool_env() -> dict:
    """Environment for dvc/git subprocesses: this venv's `python` first, a git identity, no analytics."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com")
    return env


def run(cmd: list[str], cwd: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env or tool_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(*args: str, cwd: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=check)


def run_stage(stage: str, cwd, check: bool = False) -> subprocess.CompletedProcess:
    """`python -m stages.<stage>` in `cwd` (e.g. "dataset", "extract facenet"), as dvc runs it, with this
    checkout's code importable."""
    env = {**tool_env(), "PYTHONPATH": REPO}
    return run([sys.executable, "-m", *f"stages.{stage}".split()], cwd=str(cwd), check=check, env=env)


def stages_run(dvc_output: str) -> set[str]:
    """The stages a dvc command (repro, exp run, queue logs) ran, from its "Running stage" lines."""
    return set(re.findall(r"Running stage '([^']+)'", dvc_output))


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


END_TO_END = {"pipeline_repo", "extracted_pipeline", "pipeline_copy"}     # fixtures that run dvc on the whole pipeline


def pytest_collection_modifyitems(items):
    """The tiers hold: `pytest -m "not slow"` never runs the pipeline end to end."""
    for item in items:
        uses = END_TO_END & set(getattr(item, "fixturenames", ()))
        if uses and not item.get_closest_marker("slow"):
            raise pytest.UsageError(f"{item.nodeid} runs the pipeline end to end ({', '.join(sorted(uses))}): "
                                    "mark it @pytest.mark.slow")


def pytest_addoption(parser):
    parser.addoption("--media", default=os.path.join(os.path.dirname(REPO), "shared", "media"),
                     help="a folder of real media for the optional tests that use it")


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.fixture
def pipeline_repo(tmp_path):
    return make_pipeline_repo(str(tmp_path / "repo"))


@pytest.fixture
def shared_media(request):
    """Optional real media (`pytest --media DIR`, default ../shared/media beside the checkout)."""
    path = request.config.getoption("media")
    if not os.path.isdir(path):
        pytest.skip(f"no real media at {path} (optional: pytest --media DIR)")
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


@pytest.fixture
def pipeline_copy(extracted_pipeline, tmp_path):
    """A private copy of the session's extracted pipeline, reset to its committed, reproduced state."""
    repo = str(tmp_path / "repo")
    shutil.copytree(extracted_pipeline, repo, symlinks=True)
    # git-ignored settings other tests gave the shared repo (a remote's --local keyfile) name remotes the
    # committed config below may not have
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(repo, ".dvc", "config.local"))
    commit = run(["git", "log", "--format=%H", "--grep", "^extracted features$"], cwd=repo).stdout.split()[-1]
    run(["git", "checkout", "-qf", commit], cwd=repo)     # other tests may have run experiments there
    dvc("checkout", "--force", cwd=repo)
    assert "up to date" in dvc("status", cwd=repo).stdout
    return repo
