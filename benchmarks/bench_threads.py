"""CPU training threads and seeds on the demo: `python benchmarks/bench_threads.py --project DIR`.

DIR is a project whose pipeline ran (`dvc repro`: its stores, manifest and feature set). In a copy of
its data, with its params.yaml: the train stage's `run` for one seed on one thread (`train.threads: 1`,
bitwise repeatable) twice and on all cores (`threads: 0`) twice, the largest weight difference between
the runs of each and between the two settings; then three seeds on one thread; evaluation of one and
of three seeds. Writes reports/threads.json: seconds, the all-cores speed-up, and three seeds' cost
relative to one. On a machine other processes share, all cores can be slower than one (record
`load_average`).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from avfusion import paths  # noqa: E402
from avfusion.learning import evaluate, train  # noqa: E402
from avfusion.params import load_params  # noqa: E402


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return round(time.perf_counter() - started, 2)


def largest(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--out", help="default: reports/threads.json; --quick: a temporary directory")
    parser.add_argument("--quick", action="store_true", help="2 epochs per training (a smoke check)")
    args = parser.parse_args()
    args.out = args.out or (os.path.join(tempfile.gettempdir(), "avfusion-bench-quick", "threads.json")
                            if args.quick else os.path.join(REPO, "reports", "threads.json"))
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        shutil.copy(os.path.join(args.project, "params.yaml"), tmp)
        shutil.copytree(os.path.join(args.project, "data"), os.path.join(tmp, "data"),
                        ignore=shutil.ignore_patterns("weights", "frame_times"))
        paths.set_root(tmp)
        fusion, params, eval_params = load_params("fusion"), load_params("train"), load_params("eval")
        if args.quick:
            params = {**params, "epochs": 2}
        seconds = {}
        weights = {}
        for threads in (1, 0):
            for again in (0, 1):
                name = f"threads_{threads}" + ("_again" if again else "")
                seconds[name] = timed(train.run, fusion, {**params, "seeds": [0], "threads": threads})
                weights[name] = torch.load(os.path.join(tmp, "models", "fold-0", "model.pt"), weights_only=True)
                if (threads, again) == (1, 0):
                    seconds["evaluate_one_seed"] = timed(evaluate.run, eval_params)
        seconds["three_seeds"] = timed(train.run, fusion, {**params, "seeds": [0, 1, 2], "threads": 1})
        seconds["evaluate_three_seeds"] = timed(evaluate.run, eval_params)
    report = {"cpu_count": os.cpu_count(), "all_cores_threads": torch.get_num_threads(),
              "load_average": os.getloadavg()[0], "fusion_type": fusion["type"], "seconds": seconds,
              "speedup": round(seconds["threads_1"] / seconds["threads_0"], 3),
              "three_seeds_ratio": round(seconds["three_seeds"] / seconds["threads_1"], 3),
              "max_weight_diff": {"threads_1_rerun": largest(weights["threads_1"], weights["threads_1_again"]),
                                  "threads_0_rerun": largest(weights["threads_0"], weights["threads_0_again"]),
                                  "threads_1_vs_0": largest(weights["threads_1"], weights["threads_0"])}}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
