"""`avfusion results`: docs/results.md generated from the project's experiments (`dvc exp show --json`).

The experiments are those of `EXPERIMENTS` (benchmarks/run_results.py runs them with `dvc exp run`):
the default pipeline and one change each, in three tables (feature sets, training recipes, fusion
types), every one trained with `SEEDS`. Each row shows, per dimension, the mean ± std over the seeds of
each seed's own test CCC, the test CCC of their ensemble (the seeds' mean prediction) with its 95%
bootstrap interval over the test videos, and the paired difference of mean CCC to the default
(`avfusion compare`). A row whose experiment has not run (or ran with fewer than three seeds) says so.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from avfusion import paths
from avfusion.app.compare import CompareError, compare
from avfusion.errors import UserError
from avfusion.params import FUSION_TYPES

SEEDS = [0, 1, 2]
# every experiment extracts these, so the feature-set rows read the same stores as the others
EXTRACTORS = {"features.extractors": ["vad", "mfcc", "logmel", "egemaps"], "features.faces": ["landmarks"]}
DEFAULT = {"fusion.visual": ["facenet"], "fusion.audio": ["openl3"], "fusion.type": "jca", "train.recipe": "default"}
TABLES = {
    "Feature sets": [
        ("facenet + openl3 (default)", {}),
        ("facenet + mfcc", {"fusion.audio": ["mfcc"]}),
        ("facenet + logmel", {"fusion.audio": ["logmel"]}),
        ("facenet + egemaps", {"fusion.audio": ["egemaps"]}),
        ("facenet + openl3, egemaps", {"fusion.audio": ["openl3", "egemaps"]}),
        ("facenet, landmarks + openl3", {"fusion.visual": ["facenet", "landmarks"]}),
    ],
    "Training recipes": [  # each paper's recipe on its own model, against the default recipe on it
        ("jca, default", {}),
        ("jca, jca_paper", {"train.recipe": "jca_paper"}),
        ("lfan, default", {"fusion.type": "lfan"}),
        ("lfan, lfan_paper", {"fusion.type": "lfan", "train.recipe": "lfan_paper"}),
    ],
    "Fusion types": [(name, {"fusion.type": name}) for name in FUSION_TYPES],
}
NOTES = {
    "Feature sets": "visual + audio extractors (`fusion.visual`, `fusion.audio`), JCA, default recipe.",
    "Training recipes": "`fusion.type`, `train.recipe` (avfusion/learning/recipes.py): each paper's set-up on "
                        "its model, facenet + openl3. The demo's videos (120 frames) are shorter than the "
                        "papers' windows (256, 300 frames).",
    "Fusion types": "`fusion.type`, default recipe, facenet + openl3. `ridge` does not depend on the seed "
                    "(a closed-form fit): its spread is 0 by construction.",
}
# Measured by hand (issue 23): a fresh clone on an AVX2 CPU without AVX-512, same demo videos byte for
# byte, against the numbers committed on main from an AVX-512 machine; one seed each. The face
# embeddings differ by ~6e-8 between the instruction sets and training amplifies it.
CROSS_MACHINE = {"avx2": {"valence": 0.744, "arousal": 0.933, "mean": 0.839},
                 "avx512": {"valence": 0.720, "arousal": 0.932, "mean": 0.826}}
DIMENSIONS = ("valence", "arousal", "mean")


def settings(overrides: dict) -> dict:
    return {**DEFAULT, **overrides}


def experiment_name(overrides: dict) -> str:
    """dvc experiment name of a table row: `default`, or its changes, e.g. `audio-openl3-egemaps`."""
    changes = {k: v for k, v in overrides.items() if DEFAULT[k] != v}
    if not changes:
        return "default"
    parts = []
    for key, value in changes.items():
        words = "-".join(value) if isinstance(value, list) else value
        parts.append(f"{key.split('.')[-1]}-{words}".replace("_", "-"))
    return "-".join(parts)


def experiments() -> list[tuple[str, dict]]:
    """(name, params to set) of every experiment the tables need, each once: the default first, then the
    tables with the fewest rows (so that, when time runs short, finished tables are whole)."""
    runs: dict[str, dict] = {"default": {**EXTRACTORS, **DEFAULT, "train.seeds": SEEDS}}
    for rows in sorted(TABLES.values(), key=len):
        for _, overrides in rows:
            runs.setdefault(experiment_name(overrides), {**EXTRACTORS, **settings(overrides), "train.seeds": SEEDS})
    return list(runs.items())


def set_arguments(values: dict) -> list[str]:
    """`dvc exp run -S` arguments for params (lists as [a,b], Hydra's override syntax)."""
    out = []
    for key, value in values.items():
        text = f"[{','.join(map(str, value))}]" if isinstance(value, list) else str(value)
        out += ["-S", f"{key}={text}"]
    return out


def flatten(node, found: list) -> list:
    """Every revision record ({rev, name, data: {params, metrics, ...}}) of `dvc exp show --json`."""
    if isinstance(node, list):
        for item in node:
            flatten(item, found)
    elif isinstance(node, dict):
        if isinstance(node.get("data"), dict) and "params" in node["data"]:
            found.append(node)
        for value in node.values():
            if isinstance(value, (list, dict)):
                flatten(value, found)
    return found


def shown_experiments(root: str) -> list[dict]:
    """{name, rev, timestamp, params (dotted keys), test (metrics)} of each experiment, newest first."""
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=root, capture_output=True, text=True)
    if shown.returncode != 0:
        raise UserError(f"dvc exp show failed in {root}: {(shown.stderr.strip().splitlines() or ['?'])[-1]}")
    out = []
    for record in flatten(json.loads(shown.stdout), []):
        data = record["data"]
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        metrics = ((data.get("metrics") or {}).get("reports/metrics.json") or {}).get("data") or {}
        if not record.get("name") or "test" not in metrics:
            continue
        dotted = {f"{section}.{key}": value for section, values in params.items() if isinstance(values, dict)
                  for key, value in values.items()}
        out.append({"name": record["name"], "rev": record["rev"], "timestamp": data.get("timestamp") or "",
                    "params": dotted, "metrics": metrics})
    return sorted(out, key=lambda e: e["timestamp"], reverse=True)


def matching(found: list[dict], overrides: dict) -> dict | None:
    """The newest experiment with a row's settings and at least three seeds."""
    wanted = settings(overrides)
    for experiment in found:
        if all(experiment["params"].get(k) == v for k, v in wanted.items()) and \
                len(experiment["params"].get("train.seeds") or []) >= 3:
            return experiment
    return None


def cell(test: dict, name: str) -> str:
    value, low, high = (test.get(f"ccc_{name}{s}") for s in ("", "_low", "_high"))
    mean, std = test.get(f"ccc_{name}_seed_mean"), test.get(f"ccc_{name}_seed_std")
    spread = f"{mean:.3f} ± {std:.3f}" if mean is not None and std is not None else "n/a"
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{spread} | {value:.3f}{interval}" if value is not None else f"{spread} | n/a"


def table(title: str, rows: list, found: list[dict], root: str) -> tuple[list[str], int]:
    """The markdown lines of one table and how many of its rows are missing."""
    lines = [f"## {title}", "", NOTES[title], "",
             "| | seeds | valence: seeds mean ± std | valence: ensemble [95%] | arousal: seeds | arousal: ensemble "
             "| mean: seeds | mean: ensemble | Δ mean vs default [95%] | experiment |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    default = matching(found, {})
    missing = 0
    for label, overrides in rows:
        experiment = matching(found, overrides)
        if experiment is None:
            missing += 1
            lines.append(f"| {label} | not run | | | | | | | | `{experiment_name(overrides)}` |")
            continue
        test = experiment["metrics"]["test"]
        versus = ""
        if default is not None and experiment is not default:
            try:
                d = compare(experiment["rev"], default["rev"], root=root)["mean"]
                versus = f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]" + (" *" if d[1] > 0 or d[2] < 0 else "")
            except CompareError as exc:
                versus = f"n/a ({exc})"
        lines.append(f"| {label} | {len(experiment['params']['train.seeds'])} | "
                     + " | ".join(cell(test, name) for name in DIMENSIONS)
                     + f" | {versus} | `{experiment['name']}` {experiment['rev'][:7]} |")
    return lines + [""], missing


def report_lines(root: str) -> list[str]:
    """What the benchmark reports measured, a line each (those that were run)."""
    lines = []
    threads = os.path.join(root, "reports", "threads.json")
    if os.path.isfile(threads):
        t = json.load(open(threads))
        lines.append(f"- CPU training threads (reports/threads.json, benchmarks/bench_threads.py): one seed trains in "
                     f"{t['seconds']['threads_1']:.1f} s on 1 thread, {t['seconds']['threads_0']:.1f} s on all "
                     f"{t['cpu_count']} cores ({t['speedup']:.2f}x; largest weight difference between two runs "
                     f"{t['max_weight_diff']['threads_1_rerun']:.1e} on 1 thread, {t['max_weight_diff']['threads_0_rerun']:.1e} "
                     f"on all cores, {t['max_weight_diff']['threads_1_vs_0']:.1e} between the two); "
                     f"three seeds train in {t['seconds']['three_seeds']:.1f} s ({t['three_seeds_ratio']:.2f}x one) and "
                     f"evaluate in {t['seconds']['evaluate_three_seeds']:.1f} s vs {t['seconds']['evaluate_one_seed']:.1f} s "
                     f"(load average {t['load_average']:.1f} on {t['cpu_count']} cores"
                     + ("" if t["speedup"] >= 1 else ": where other processes hold the cores, more threads wait on "
                        "each other and all cores is slower") + ").")
    runs = os.path.join(root, "reports", "results_runs.json")
    if os.path.isfile(runs):
        names = {name for name, _ in experiments()}
        seconds = sorted(r["seconds"] for name, r in json.load(open(runs)).items()
                         if name in names and r["returncode"] == 0)
        if seconds:
            lines.append(f"- The experiments above (reports/results_runs.json): {len(seconds)} `dvc exp run`s of "
                         f"{len(SEEDS)} seeds each (train and evaluate), median {seconds[len(seconds) // 2]:.0f} s, "
                         f"longest {seconds[-1]:.0f} s.")
    bootstrap = os.path.join(root, "reports", "bootstrap.json")
    if os.path.isfile(bootstrap):
        b = json.load(open(bootstrap))
        lines.append(f"- Bootstrap at Aff-Wild2 size (reports/bootstrap.json, benchmarks/bench_bootstrap.py): "
                     f"{b['frames'] / 1e6:.1f} M frames in {b['videos']} videos, {b['resamples']} resamples: "
                     f"moments {b['seconds']['moments']:.2f} s, resamples {b['seconds']['resamples']:.2f} s "
                     f"(concatenating frames per resample: {b['seconds']['concatenate_per_resample']:.2f} s each, "
                     f"{b['seconds']['concatenate_per_resample'] * b['resamples'] / 60:.0f} min for all).")
    return lines


def speed_lines(root: str) -> list[str]:
    """One table of the extractors' speed on the 1080p clip, from the benchmarks that measured them."""
    rows = []
    frame_times = os.path.join(root, "reports", "frame_times.json")
    if os.path.isfile(frame_times):
        for name, r in json.load(open(frame_times))["extractors"].items():
            rows.append((name, r["frames_per_s_after"], r["cpu_s_per_frame_after"], "reports/frame_times.json"))
    for report in ("face_encoders.json", "voice_encoders.json"):
        path = os.path.join(root, "reports", report)
        if os.path.isfile(path):
            for name, r in json.load(open(path))["encoders"].items():
                rows.append((name, r["frames_per_s"], r["cpu_seconds_per_frame"], f"reports/{report}"))
    if not rows:
        return []
    return ["## Extractor speed", "",
            "A 1080p25 street clip on 2 CPU cores, decoding included, seeded random weights of the real sizes "
            "(the face encoders: on facenet's boxes; facenet itself finds them). The machine was shared while "
            "some were measured (each report gives its load average): compare within a report, and run the "
            "benchmark (`--device cuda` on a GPU) before relying on one number.", "",
            "| extractor | frames/s | CPU s per frame | measured by |", "|---|---|---|---|",
            *(f"| `{name}` | {fps:.1f} | {cpu:.4f} | {source} |" for name, fps, cpu, source in rows), ""]


def cross_machine(found: list[dict]) -> list[str]:
    a, b = CROSS_MACHINE["avx2"], CROSS_MACHINE["avx512"]
    gap = {n: a[n] - b[n] for n in DIMENSIONS}
    lines = ["## Across machines", "",
             "A fresh clone on an AVX2 CPU (no AVX-512), with byte-identical demo videos, gave test CCC "
             f"{a['valence']:.3f} / {a['arousal']:.3f} / {a['mean']:.3f} (valence / arousal / mean) for the "
             f"default pipeline, one seed, against {b['valence']:.3f} / {b['arousal']:.3f} / {b['mean']:.3f} "
             "committed from an AVX-512 machine: the face embeddings differ by about 6e-8 between the "
             "instruction sets and training amplifies that. Differences: "
             + " / ".join(f"{gap[n]:+.3f}" for n in DIMENSIONS) + "."]
    default = matching(found, {})
    if default is not None:
        test = default["metrics"]["test"]
        std = {n: test.get(f"ccc_{n}_seed_std") for n in DIMENSIONS}
        if all(v is not None for v in std.values()):
            ratios = " / ".join(f"{abs(gap[n]) / std[n]:.1f}" if std[n] else "inf" for n in DIMENSIONS)
            lines.append("")
            lines.append(f"The seed spread of the default pipeline here is {' / '.join(f'{std[n]:.3f}' for n in DIMENSIONS)} "
                         f"(std over {len(default['params']['train.seeds'])} seeds): the machine difference is "
                         f"{ratios} of those stds, i.e. of the size of changing the seed. Differences between "
                         "rows smaller than the seed spread are not findings.")
    return lines + [""]


def write_results(root: str | None = None, out: str | None = None) -> dict[str, int]:
    """Write docs/results.md; returns the number of missing rows per table."""
    root = root or paths.root()
    out = out or os.path.join(root, "docs", "results.md")
    found = shown_experiments(root)
    lines = ["# Results on the demo", "",
             f"Generated by `avfusion results` from `dvc exp show` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); "
             "do not edit by hand. The experiments are run by `benchmarks/run_results.py` "
             f"(`dvc exp run -S train.seeds=[{','.join(map(str, SEEDS))}] ...`, one per row).", "",
             "The demo is synthetic: 24 videos of 8 s, seeded-random backbones, **4 test videos**. Scores are test "
             "CCC (valence, arousal, their mean) over all test frames pooled, as ABAW scores them. *seeds*: mean ± "
             "std (n - 1) over the seeds of each seed's own model; *ensemble*: the seeds' mean prediction, with "
             "its 95% bootstrap interval over test videos (`eval.bootstrap` resamples). With 4 test videos the "
             "intervals are wide, and rough: 4 videos allow only 35 distinct resamples, so the percentile interval "
             "is coarse and tends to be too narrow; read it, and the seed spread beside it, before any difference. "
             "*Δ mean vs default*: the paired bootstrap difference of the ensembles' mean CCC "
             "(`avfusion compare <row> default`); * marks an interval that excludes 0.", ""]
    missing = {}
    for title, rows in TABLES.items():
        body, missing[title] = table(title, rows, found, root)
        lines += body
        if missing[title]:
            lines += [f"*Incomplete: {missing[title]} of {len(rows)} rows not run yet.*", ""]
    lines += cross_machine(found)
    lines += speed_lines(root)
    measured = report_lines(root)
    if measured:
        lines += ["## Costs", "", *measured, ""]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    return missing
