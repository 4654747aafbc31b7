"""Issue 24: experiments travel through git. Clone A runs two experiments and `dvc exp push`es them to a
bare git remote, their data to the team's S3 remote (moto's server, test_s3); clone B `dvc exp pull`s
them, sees both in `dvc exp show`, applies one, pulls its models and predicts exactly what A predicted.
"""
import json
import os
import sys

import pytest
from test_s3 import add_s3_remote, assert_credentials_only_local, give_credentials, s3  # noqa: F401 (s3: the fixture)

from conftest import dvc, run, stages_run, tree_digest

EXPERIMENTS = ("lfan", "concat")


def experiments(repo: str) -> dict[str, dict]:
    """`dvc exp show --json`: each experiment's name -> its fusion params and metrics files."""
    found = {}
    for row in json.loads(dvc("exp", "show", "--json", cwd=repo).stdout):
        for group in row.get("experiments") or []:
            for rev in group["revs"]:
                data = rev["data"]
                found[rev["name"]] = {"fusion": data["params"]["params.yaml"]["data"]["fusion"],
                                      "metrics": data["metrics"]}
    return found


def predict(repo: str, video: str, out: str) -> bytes:
    run([sys.executable, "-m", "avfusion.app.cli", "predict", video, "--out", out, "--device", "cpu"], cwd=repo)
    return open(out, "rb").read()


@pytest.mark.slow
def test_experiments_pushed_by_one_clone_are_shown_applied_and_predict_alike_in_another(pipeline_copy, s3, tmp_path):
    a, origin, b = pipeline_copy, str(tmp_path / "origin.git"), str(tmp_path / "b")
    run(["git", "init", "-q", "--bare", "-b", "main", origin], cwd=str(tmp_path))
    run(["git", "checkout", "-qB", "main"], cwd=a)          # pipeline_copy leaves HEAD detached
    add_s3_remote(a, s3, "experiments")
    run(["git", "remote", "add", "origin", origin], cwd=a)
    run(["git", "push", "-q", "origin", "main"], cwd=a)
    dvc("push", cwd=a)
    video = os.path.join(a, "data", "demo", "videos", "demo-00.mp4")

    models, predictions = {}, {}
    for name in EXPERIMENTS:
        exp = dvc("exp", "run", "-n", name, "-S", f"fusion.type={name}", cwd=a)
        assert stages_run(exp.stdout) == {"train", "evaluate"}, exp.stdout
        models[name] = tree_digest(os.path.join(a, "models"))
        if name == "lfan":
            predictions[name] = predict(a, video, str(tmp_path / "a-lfan.csv"))
    assert models["lfan"] != models["concat"]
    shown_in_a = experiments(a)
    assert set(shown_in_a) == set(EXPERIMENTS)
    pushed = dvc("exp", "push", "origin", cwd=a)
    assert "Pushed experiment" in pushed.stdout, pushed.stdout

    run(["git", "clone", "-q", origin, b], cwd=str(tmp_path))
    give_credentials(b, s3)
    dvc("exp", "pull", "origin", cwd=b)
    shown_in_b = experiments(b)
    assert shown_in_b == shown_in_a                    # names, params and every metric
    for name in EXPERIMENTS:
        assert shown_in_b[name]["fusion"]["type"] == name
        assert shown_in_b[name]["metrics"]["reports/metrics.json"]["data"]["test"]["ccc_mean"] is not None

    dvc("exp", "apply", "lfan", cwd=b)
    dvc("pull", cwd=b)
    assert tree_digest(os.path.join(b, "models")) == models["lfan"]
    assert "up to date" in dvc("status", cwd=b).stdout
    assert predict(b, video.replace(a, b), str(tmp_path / "b-lfan.csv")) == predictions["lfan"]

    for repo in (a, b):
        assert_credentials_only_local(repo, s3)
    assert_credentials_only_local(origin, s3, git_dir=origin)
