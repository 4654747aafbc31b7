"""Run the experiments of docs/results.md and regenerate it: `python benchmarks/run_results.py [--project DIR]`.

One `dvc exp run -n <name> -S train.seeds=[0,1,2] -S ...` per row of the tables of avfusion/app/results.py
(the default pipeline once), one after the other in the project's workspace, each setting every param
the tables vary so none leaks from the previous run. An experiment whose name exists already is kept
(a stopped runner resumes where it was). After each run `avfusion results` rewrites docs/results.md,
so the page shows what finished; reports/results_runs.json records each run's wall time.
Budget on the demo: about 60 s per seed and experiment on a quiet CPU, plus the first run's extraction.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from avfusion.app.results import experiments, set_arguments, write_results  # noqa: E402


def existing(project: str) -> set[str]:
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "list", "--name-only"], cwd=project, capture_output=True, text=True,
                           check=True)
    return {line.strip() for line in shown.stdout.splitlines() if line.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".", help="the project's root (a git + DVC repository)")
    parser.add_argument("--only", nargs="*", help="experiment names to run (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args()
    project = os.path.abspath(args.project)
    log_path = os.path.join(project, "reports", "results_runs.json")
    log = json.load(open(log_path)) if os.path.isfile(log_path) else {}
    done = set() if args.dry_run else existing(project)
    for name, values in experiments():
        if args.only and name not in args.only:
            continue
        command = [sys.executable, "-m", "dvc", "exp", "run", "-n", name, *set_arguments(values)]
        if name in done:
            print(f"{name}: exists, kept", flush=True)
            continue
        print(" ".join(command), flush=True)
        if args.dry_run:
            continue
        started = time.perf_counter()
        # the stages' `python` is this interpreter (its venv's bin first on PATH)
        env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
        run = subprocess.run(command, cwd=project, env=env)
        log[name] = {"seconds": round(time.perf_counter() - started, 1), "returncode": run.returncode,
                     "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "w") as f:
            json.dump(log, f, indent=2)
        print(f"{name}: {'done' if run.returncode == 0 else 'FAILED'} in {log[name]['seconds']:.0f} s", flush=True)
        if run.returncode == 0:
            write_results(project)
    if not args.dry_run:
        missing = write_results(project)
        print(f"docs/results.md written; rows not run: {missing}")


if __name__ == "__main__":
    main()
