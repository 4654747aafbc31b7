"""The benchmark scripts keep up with the library: each imports (every name it takes from avfusion
exists), builds its command line and offers a `--quick` mode (a runner of experiments: `--dry-run`); the two quickest run in it (slow tier).

The benchmarks are not timed here (speed numbers belong in benchmarks/ and reports/): the slow tests
check only that a quick run completes and writes a report with its measurements in it."""
from __future__ import annotations

import contextlib
import glob
import importlib.util
import io
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = sorted(glob.glob(os.path.join(REPO, "benchmarks", "*.py")))


def load_script(path: str):
    """A benchmark script imported as a module (its `main` not run)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", SCRIPTS, ids=os.path.basename)
def test_benchmark_imports_and_has_a_quick_mode(path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))        # the scripts put benchmarks/ on it
    module = load_script(path)
    monkeypatch.setattr(sys, "argv", [path, "--help"])
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit) as done:
        module.main()                                        # argparse prints the usage and stops
    assert done.value.code == 0
    assert "--quick" in help_text.getvalue() or "--dry-run" in help_text.getvalue()   # a runner: its commands only


def test_every_benchmark_is_checked():
    assert {os.path.basename(p) for p in SCRIPTS} >= {
        "bench.py", "bench_audio.py", "bench_extractors.py", "bench_frame_times.py", "bench_scale.py",
        "bench_store_scale.py", "bench_visual.py", "people_street.py", "report_audio_signals.py"}


def quick(script: str, *args: str) -> None:
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), "--quick", *args],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_audio_network_benchmark_runs_quick(tmp_path):
    out = tmp_path / "bench_audio.json"
    quick("bench_audio.py", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["windows"] == 4
    assert result["gflop_per_window"] > 1 and result["network_gflops"] > 0 and result["matmul_gflops"] > 0


@pytest.mark.slow
def test_store_scale_benchmark_runs_quick(tmp_path):
    quick("bench_store_scale.py", "--out", str(tmp_path / "store_scale"))
    report = json.loads((tmp_path / "store_scale.json").read_text())
    assert report["videos"] == 20
    (result,) = report["results"]
    assert result["stores"] == 4 and result["files"] > 0 and result["window"]["reads"] == 20
    assert "| 4 |" in (tmp_path / "store_scale.md").read_text()
