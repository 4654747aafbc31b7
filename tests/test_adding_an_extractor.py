"""docs/adding-an-extractor.md, followed word for word in a copy of the extracted pipeline: the module and
the params section from the page, the name in features.extractors, then real dvc and the real command."""
from __future__ import annotations

import csv
import os
import re
import sys

import numpy as np
import pytest
import yaml

from conftest import REPO, dvc, run, stages_run, tool_env

GUIDE = os.path.join(REPO, "docs", "adding-an-extractor.md")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", open(GUIDE).read(), re.S)


def test_the_guide_holds_one_module_and_one_params_section():
    module, = blocks("python")
    params, = blocks("yaml")
    assert "@register" in module and 'name, version = "rms"' in module
    assert params.startswith("rms:")
    compile(module, "rms.py", "exec")


@pytest.mark.slow
def test_following_the_guide_adds_an_extractor_that_runs_alone(pipeline_copy):
    repo = pipeline_copy
    module, = blocks("python")
    params, = blocks("yaml")
    with open(os.path.join(repo, "avfusion", "extractors", "rms.py"), "w") as f:
        f.write(module)
    with open(os.path.join(repo, "params.yaml")) as f:
        config = yaml.safe_load(f)
    config["features"]["extractors"].append("rms")
    config.update(yaml.safe_load(params))
    with open(os.path.join(repo, "params.yaml"), "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    changed = run(["git", "status", "--porcelain"], cwd=repo).stdout.split("\n")
    assert sorted(line[3:] for line in changed if line) == ["avfusion/extractors/rms.py", "params.yaml"]
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "-qm", "rms extractor"], cwd=repo)

    repro = dvc("repro", cwd=repo)
    assert stages_run(repro.stdout) == {"extract@rms", "featureset"}, repro.stdout
    assert "up to date" in dvc("status", cwd=repo).stdout

    from avfusion.store.reader import FeatureReader
    store = FeatureReader(os.path.join(repo, "data", "features", "rms"))
    assert store.provenance["columns"] == ["db"] and store.provenance["extractor"] == "rms-db/1"
    with open(os.path.join(repo, "data", "manifest.csv")) as f:
        manifest = list(csv.DictReader(f))
    assert store.videos == sorted(r["video_id"] for r in manifest)
    row = manifest[0]
    stored = store.rows(row["video_id"], ("embedding", "valid"))
    assert stored["valid"].any() and np.isfinite(stored["embedding"]).all()

    out = os.path.join(repo, "rms.csv")
    exported = run([sys.executable, "-m", "avfusion.app.cli", "features", row["path"], "--extractors", "rms",
                    "--out", out], cwd=repo, env={**tool_env(), "PYTHONPATH": repo})
    assert "rms" in exported.stderr
    with open(out) as f:
        header, *lines = list(csv.reader(f))
    assert header == ["frame", "time", "rms.valid", "rms.db"]
    table = np.array(lines, dtype=np.float64)
    np.testing.assert_array_equal(table[:, 2], stored["valid"])
    np.testing.assert_allclose(table[:, 3], stored["embedding"][:, 0], rtol=1e-6)   # 7 significant digits
