"""Issue 7: `kill -9` during `facenet`, `openl3` and `train` (real subprocesses in a copy of the extracted
pipeline), then `dvc repro`: extraction resumes from the last committed video and ends byte-identical
to the uninterrupted run, training restarts cleanly to the same model, and `dvc status` is clean.
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import dvc, stages_run, tool_env, tree_digest

DEADLINE = 180     # seconds a stage may take to reach the point where it is killed


def start(repo, stage):
    """`python -m stages.<stage>` (e.g. "extract facenet"), as dvc runs it."""
    return subprocess.Popen([sys.executable, "-m", *f"stages.{stage}".split()], cwd=repo, env=tool_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_when(proc, ready, what):
    """Poll `ready()` until it is true (waiting on the process itself between polls), then SIGKILL."""
    deadline = time.monotonic() + DEADLINE
    while not ready():
        try:
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"no {what} within {DEADLINE} s")
            continue
        pytest.fail(f"the stage ended (exit {proc.returncode}) before {what}:\n{proc.stderr.read()}")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def committed_videos(directory):
    """Videos committed so far over all stores, read from the commit records (zarr.json attributes)."""
    total = 0
    for meta in glob.glob(os.path.join(directory, "store-*.zarr", "zarr.json")):
        try:
            with open(meta) as f:
                total += len(json.load(f)["attributes"].get("videos", []))
        except (OSError, ValueError, KeyError):   # being created: not committed yet
            pass
    return total


def manifest_size(repo):
    with open(os.path.join(repo, "data", "manifest.csv")) as f:
        return sum(1 for _ in f) - 1


@pytest.mark.slow
def test_kill_during_extraction_resumes_byte_identical(pipeline_copy):
    repo, videos = pipeline_copy, manifest_size(pipeline_copy)
    features = {m: os.path.join(repo, "data", "features", m) for m in ("facenet", "openl3")}
    reference = {m: tree_digest(d) for m, d in features.items()}
    for name, directory in features.items():
        shutil.rmtree(directory)
        proc = start(repo, f"extract {name}")
        kill_when(proc, lambda directory=directory: committed_videos(directory) >= 1, f"committed {name} video")
        assert 1 <= committed_videos(directory) < videos     # killed part-way, with work left to resume
    status = dvc("status", cwd=repo).stdout
    assert "facenet" in status and "openl3" in status

    again = dvc("repro", cwd=repo)
    assert stages_run(again.stdout) == {"facenet", "openl3"}   # identical stores: training is not re-run
    assert "up to date" in dvc("status", cwd=repo).stdout
    for name, directory in features.items():
        assert tree_digest(directory) == reference[name], name


@pytest.mark.slow
def test_kill_during_training_restarts_cleanly(pipeline_copy):
    repo = pipeline_copy
    reference = tree_digest(os.path.join(repo, "models"))
    with open(os.path.join(repo, "reports", "metrics.json")) as f:
        metrics = json.load(f)
    # Kill a long run after its first epoch is logged, so the kill surely lands mid-training.
    params_path = os.path.join(repo, "params.yaml")
    original = open(params_path).read()
    params = yaml.safe_load(original)
    params["train"].update(epochs=1000, patience=1000)
    with open(params_path, "w") as f:
        yaml.safe_dump(params, f, sort_keys=False)
    shutil.rmtree(os.path.join(repo, "reports", "train"))
    proc = start(repo, "train")
    kill_when(proc, lambda: any(len(open(p).read().splitlines()) >= 2 for p in glob.glob(
        os.path.join(repo, "reports", "train", "plots", "metrics", "**", "*.tsv"), recursive=True)),
        "logged epoch")
    assert not glob.glob(os.path.join(repo, "models", "fold-*", "model.pt"))   # nothing half-saved left behind
    with open(params_path, "w") as f:
        f.write(original)

    # What a user runs: the lock still names the old models, so DVC restores them from its cache.
    dvc("repro", cwd=repo)
    assert "up to date" in dvc("status", cwd=repo).stdout
    assert tree_digest(os.path.join(repo, "models")) == reference
    # Training itself restarts cleanly: forced, it rebuilds the very same model from scratch.
    retrain = dvc("repro", "--force", "--single-item", "train", cwd=repo)
    assert "Running stage 'train'" in retrain.stdout
    dvc("repro", cwd=repo)                       # evaluate picks up the new training curves
    assert "up to date" in dvc("status", cwd=repo).stdout
    assert tree_digest(os.path.join(repo, "models")) == reference    # the same model as never interrupted
    with open(os.path.join(repo, "reports", "metrics.json")) as f:
        assert json.load(f) == metrics
