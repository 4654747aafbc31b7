"""Train stage on tiny real stores: learning, checkpoints, folds, determinism, and DDP under torchrun."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from test_windows import make_dataset

from avfusion.learning.featuresets import write_description
from avfusion.learning.metrics import split_ccc
from avfusion.learning.train import fold_entries, load_model, run
from avfusion.learning.windows import load_split, predict_split
from avfusion.sources.manifest import read_manifest

from conftest import project_root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUSION = {"type": "concat", "dim": 16, "hidden": 8, "dropout": 0.1}
TRAIN = {"seeds": [0], "window": 32, "hop": 8, "batch_size": 8, "epochs": 15, "lr": 0.01,
         "weight_decay": 0.0001, "patience": 15, "device": "cpu", "folds": 1}


@pytest.fixture
def project(tmp_path):
    make_dataset(str(tmp_path))
    return str(tmp_path)


def test_training_learns_and_writes_a_loadable_checkpoint(project):
    with project_root(project):
        summary, = run(FUSION, TRAIN)
    assert summary["ccc_mean"] > 0.5
    model, config = load_model(os.path.join(project, "models/fold-0"))
    assert config["window"] == 32 and {k: config["fusion"][k] for k in FUSION} == FUSION
    assert config["train"]["recipe"] == "default" and config["train"]["scheduler"] == "cosine"
    assert config["provenance"]["facenet"]["extractor"] == "synthetic-facenet"
    assert (config["dim_visual"], config["dim_audio"]) == (12, 8)
    # the reloaded model reproduces the logged validation score
    manifest = read_manifest(os.path.join(project, "data/manifest.csv"))
    validation = load_split([e for e in manifest if e["split"] == "validation"],
                            os.path.join(project, "data/features/facenet"), os.path.join(project, "data/features/openl3"))
    pred = np.clip(predict_split(model, validation, 32, 8), -1, 1)
    assert split_ccc(pred, validation.labels_numpy())["mean"] == pytest.approx(summary["ccc_mean"], abs=1e-5)
    metrics = json.load(open(os.path.join(project, "reports/train/metrics.json")))
    assert metrics["fold-0"]["best"]["ccc_mean"] == pytest.approx(summary["ccc_mean"])
    curves = os.path.join(project, "reports/train/plots/metrics/fold-0")
    for name in ("train/loss.tsv", "validation/ccc_valence.tsv", "validation/ccc_arousal.tsv",
                 "validation/ccc_mean.tsv"):
        assert os.path.exists(os.path.join(curves, name)), name
    assert not os.path.exists(os.path.join(project, "dvc.yaml"))   # dvclive must not write one


def test_cpu_training_is_deterministic(project, tmp_path_factory):
    other = str(tmp_path_factory.mktemp("again"))
    make_dataset(other)
    params = {**TRAIN, "epochs": 3}
    fusion = {"type": "jca", "dim": 16, "hidden": 8, "dropout": 0.5}
    with project_root(project):
        run(fusion, params)
    with project_root(other):
        run(fusion, params)
    a = torch.load(os.path.join(project, "models/fold-0/model.pt"), weights_only=True)
    b = torch.load(os.path.join(other, "models/fold-0/model.pt"), weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_folds_rotate_videos_and_fold_zero_is_official(project):
    manifest = read_manifest(os.path.join(project, "data/manifest.csv"))
    folds = fold_entries(manifest, 3)
    official_val = [e["video_id"] for e in manifest if e["split"] == "validation"]
    assert [e["video_id"] for e in folds[0][1]] == official_val
    held = [sorted(e["video_id"] for e in val) for _, val in folds]
    assert len({tuple(h) for h in held}) == 3
    for train, val in folds:
        assert not {e["path"] for e in train} & {e["path"] for e in val}
        assert all(e["split"] != "test" for e in train + val)
        assert len(train) + len(val) == 6


def test_folds_keep_left_and_right_trials_of_one_video_together():
    rows = [{"video_id": f"{v}_{side}", "path": f"videos/{v}.mp4", "split": split, "person": side, "media": v}
            for v, split in (("a", "train"), ("b", "train"), ("c", "validation"), ("d", "train"))
            for side in ("left", "right")]
    for train, val in fold_entries(rows, 4):
        assert {e["path"] for e in val} and not {e["path"] for e in train} & {e["path"] for e in val}
        assert len(val) == 2 and val[0]["path"] == val[1]["path"]


def test_cross_validation_writes_one_model_per_fold(project):
    with project_root(project):
        summaries = run(FUSION, {**TRAIN, "epochs": 2, "folds": 3})
    assert len(summaries) == 3
    for fold in range(3):
        _, config = load_model(os.path.join(project, f"models/fold-{fold}"))
        assert config["fold"] == fold
    with project_root(project):
        run(FUSION, {**TRAIN, "epochs": 1})   # fewer folds: no stale models left behind
    assert sorted(os.listdir(os.path.join(project, "models"))) == ["fold-0"]


@pytest.mark.slow
def test_torchrun_ddp_with_two_cpu_processes(project):
    with open(os.path.join(REPO, "params.yaml")) as f:
        params = yaml.safe_load(f)
    params["fusion"].update(FUSION, type="lfan")
    params["train"].update(TRAIN, epochs=2)
    with open(os.path.join(project, "params.yaml"), "w") as f:
        yaml.safe_dump(params, f)
    with project_root(project):
        write_description(params["fusion"])     # the featureset stage's output, which the train stage reads
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "stages.train"], cwd=project, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("fold 0: best validation CCC") == 1   # only rank 0 reports and writes
    model, config = load_model(os.path.join(project, "models/fold-0"))
    assert config["fusion"]["type"] == "lfan"
    # what predict's demo warning reads: the data source, and the weights records of the feature set (none here)
    assert config["trained_on"] == {"data_source": "demo", "weights": {"facenet": None, "openl3": None}}
