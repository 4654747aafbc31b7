"""Parallel experiments: `dvc exp run --queue` + `dvc queue start -j 2` over fusion types.

Queued runs execute in a temporary copy of the git tree (git-ignored files are not copied), so they
only work when every input is git-tracked or a DVC output restored from the cache; then they reuse
the cached features and run only train and evaluate.
"""
import json
import re
import time

import pytest

from conftest import dvc, stages_run

EXTRACTION = ("demo", "dataset", "facenet", "openl3", "extract@vad")
FUSIONS = ("concat", "visual_only")
DEADLINE_S = 900


def queue_status(repo: str) -> dict[str, str]:
    """{experiment name: status} from `dvc queue status` (its table has no JSON form)."""
    out = dvc("queue", "status", cwd=repo).stdout
    return {m.group(1): m.group(2) for m in re.finditer(r"^[0-9a-f]{7}\s+(\S+)\s.*?(\w+)\s*$", out, re.M)}


@pytest.mark.slow
def test_queued_fusion_experiments_run_in_parallel_on_cached_features(extracted_pipeline):
    repo = extracted_pipeline
    tasks = {fusion: f"queued-{fusion.replace('_', '-')}" for fusion in FUSIONS}
    for fusion, name in tasks.items():
        queued = dvc("exp", "run", "--queue", "-n", name, "-S", f"fusion.type={fusion}", cwd=repo)
        assert f"Queued experiment '{name}'" in queued.stdout, queued.stdout

    dvc("queue", "start", "-j", "2", cwd=repo)      # returns at once: workers run in the background
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            status = queue_status(repo)
            if all(status.get(t) in ("Success", "Failed") for t in tasks.values()):
                break
            assert time.monotonic() < deadline, f"queue not done after {DEADLINE_S}s: {status}"
            time.sleep(2)
    finally:
        dvc("queue", "stop", "--kill", cwd=repo, check=False)   # idle workers linger ~10 s otherwise

    for fusion, task in tasks.items():
        logs = dvc("queue", "logs", task, cwd=repo).stdout
        assert status[task] == "Success", f"{fusion} failed:\n{logs}"
        assert stages_run(logs) == {"train", "evaluate"}, f"{fusion} ran {stages_run(logs)}:\n{logs}"

    table = json.loads(dvc("exp", "show", "--json", cwd=repo).stdout)
    found = {}
    for baseline in table:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                fusion = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("fusion", {}).get("type")
                metrics = data.get("metrics", {}).get("reports/metrics.json", {}).get("data", {})
                if fusion in FUSIONS and metrics:
                    found[fusion] = metrics
    assert set(found) == set(FUSIONS), json.dumps(table)[:2000]
    for metrics in found.values():
        assert -1 <= metrics["test"]["ccc_mean"] <= 1
