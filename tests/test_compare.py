"""`avfusion compare` and `avfusion results` on real experiments of the shrunken demo pipeline."""
import os
import sys

import pytest

from avfusion.app.results import shown_experiments

from conftest import dvc, run, tool_env


def avfusion(*args: str, cwd: str, check: bool = True):
    return run([sys.executable, "-m", "avfusion.app.cli", *args], cwd=cwd, check=check,
               env={**tool_env(), "PYTHONPATH": cwd})


@pytest.mark.slow
def test_compare_and_results_on_two_real_experiments(pipeline_copy):
    repo = pipeline_copy
    dvc("exp", "run", "-n", "three-seeds", "-S", "train.seeds=[0,1,2]", cwd=repo)
    dvc("exp", "run", "-n", "seed-4", "-S", "train.seeds=[4]", cwd=repo)
    tests = {e["name"]: e["metrics"]["test"] for e in shown_experiments(repo)}
    assert "ccc_valence_seed_std" in tests["three-seeds"] and "ccc_valence_seed_std" not in tests["seed-4"]
    assert "ccc_valence_low" in tests["seed-4"]

    out = avfusion("compare", "three-seeds", "seed-4", cwd=repo).stdout
    lines = out.splitlines()
    assert f"on {tests['seed-4']['videos']} test video" in lines[0] and len(lines) == 4
    for line, name in zip(lines[1:], ("valence", "arousal", "mean")):
        words = line.split()
        # the difference on all test videos is that of the two experiments' own metrics
        expected = tests["three-seeds"][f"ccc_{name}"] - tests["seed-4"][f"ccc_{name}"]
        assert words[0] == name and float(words[1]) == pytest.approx(expected, abs=1e-4) and expected != 0
        low, high = float(words[2].strip("[,")), float(words[3].strip("]"))
        assert low <= float(words[1]) <= high and ("excludes 0" in line) == (low > 0 or high < 0)
    # an experiment against itself: a difference of exactly 0
    same = avfusion("compare", "seed-4", "seed-4", cwd=repo).stdout
    assert all(line.split()[1:4] == ["+0.0000", "[+0.0000,", "+0.0000]"] for line in same.splitlines()[1:])

    # a revision that was never evaluated, and one that does not exist: one line each
    first = run(["git", "rev-list", "--max-parents=0", "HEAD"], cwd=repo).stdout.strip()
    for rev, message in ((first, "has no reports/test_videos.json"), ("no-such-exp", "not an experiment")):
        failed = avfusion("compare", rev, "seed-4", cwd=repo, check=False)
        assert failed.returncode == 1 and message in failed.stderr and len(failed.stderr.splitlines()) == 1

    # the results page: the default row is the three-seed experiment, the others are marked not run
    avfusion("results", "--out", os.path.join(repo, "results.md"), cwd=repo)
    page = open(os.path.join(repo, "results.md")).read()
    default_row = next(line for line in page.splitlines() if line.startswith("| facenet + openl3 (default) | 3 |"))
    assert "`three-seeds`" in default_row and " ± " in default_row
    assert "| jca, jca_paper | not run |" in page and "Incomplete" in page


def test_every_table_row_is_one_experiment_that_sets_every_varied_param():
    from avfusion.app.results import DEFAULT, SEEDS, TABLES, experiment_name, experiments, set_arguments
    from avfusion.params import validate
    runs = dict(experiments())
    rows = {experiment_name(overrides) for table in TABLES.values() for _, overrides in table}
    assert set(runs) == rows and next(iter(runs)) == "default" and len(SEEDS) >= 3
    for values in runs.values():
        assert set(DEFAULT) | {"train.seeds"} <= set(values)
        validate("fusion", {"type": values["fusion.type"], "visual": values["fusion.visual"],
                            "audio": values["fusion.audio"]})
    assert set_arguments({"fusion.audio": ["openl3", "egemaps"], "train.seeds": [0, 1, 2]}) == [
        "-S", "fusion.audio=[openl3,egemaps]", "-S", "train.seeds=[0,1,2]"]
