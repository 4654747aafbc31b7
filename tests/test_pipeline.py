"""End to end: the real pipeline on a shrunken demo in a temporary git repo, driven by real DVC."""
import csv
import glob
import io
import json
import math
import os

import pytest

from conftest import dvc, stages_run

EXTRACTION = ("demo", "dataset", "facenet", "openl3", "extract@vad")   # features.extractors: [vad]


@pytest.mark.slow
def test_repro_then_noop_then_experiment_skips_extraction(pipeline_repo):
    first = dvc("repro", cwd=pipeline_repo)
    assert stages_run(first.stdout) == {*EXTRACTION, "featureset", "train", "evaluate"}

    with open(os.path.join(pipeline_repo, "reports", "metrics.json")) as f:
        metrics = json.load(f)
    for dim in ("ccc_valence", "ccc_arousal", "ccc_mean"):
        assert math.isfinite(metrics["test"][dim]) and -1 <= metrics["test"][dim] <= 1
    stores = glob.glob(os.path.join(pipeline_repo, "data", "features", "*", "store-*.zarr"))
    assert stores, "no feature stores were written"

    again = dvc("repro", cwd=pipeline_repo)
    assert stages_run(again.stdout) == set()
    assert "up to date" in again.stdout

    exp = dvc("exp", "run", "-S", "fusion.type=concat", cwd=pipeline_repo)
    assert stages_run(exp.stdout) == {"train", "evaluate"}
    table = list(csv.DictReader(io.StringIO(dvc("exp", "show", "--csv", cwd=pipeline_repo).stdout)))
    concat = [row for row in table if row["typ"] != "baseline" and row["fusion.type"] == "concat"]
    assert concat and math.isfinite(float(concat[0]["test.ccc_mean"]))

    # nothing committed yet: the diff against HEAD lists the experiment's metrics as new values
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=pipeline_repo).stdout)
    with open(os.path.join(pipeline_repo, "reports", "metrics.json")) as f:
        assert diff["reports/metrics.json"]["test.ccc_mean"]["new"] == json.load(f)["test"]["ccc_mean"]
