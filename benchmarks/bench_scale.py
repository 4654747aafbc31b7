"""Aff-Wild2-sized training and evaluation on cached features (run on demand, not part of the suite):

    .venv/bin/python benchmarks/bench_scale.py [--videos 600] [--frames 2800000] [--wide-frames 300000 900000] [--quick]

Synthesises a project's stores directly in the store format (`StoreWriter`, no extraction): videos with
lengths spread like Aff-Wild2's (log-normal, a few tens of thousands of frames long), labels with `-5`
runs, frames without a face or a voice, 512-d facenet and openl3 embeddings (the default feature set);
then runs the real `featureset`, `train` (1 epoch) and `evaluate` stages on them, each in its own
process so its peak RSS is its own. Then
`dvc add` / `dvc status` / `dvc push` / `dvc pull` of the stores (local-directory remote, hardlinked
cache; the pull is a fresh clone's). Then training throughput out of core vs in memory, side by side
on a subset that fits in memory. Then 6144-d audio at two sizes (train and evaluate only: peak RSS must
not grow with the size). Results: the `affwild2_scale` key of reports/bench.json (other keys kept) and
reports/scale.md. Everything temporary goes under --tmp and is deleted. `--quick`: a few thousand
frames, no DVC, into a temporary directory unless --out is given (a smoke check of a few tens of seconds).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np
import torch
import yaml
from scipy.signal import lfilter

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

from bench import Trainer, load, med, merge_into_report, r
from bench_store_scale import dvc, files_and_bytes, sh

from avfusion.learning.metrics import INVALID
from avfusion.learning.outofcore import choose_data, open_split
from avfusion.learning.recipes import resolve
from avfusion.learning.windows import window_starts
from avfusion.sources.annotations import write_labels
from avfusion.sources.manifest import COLUMNS
from avfusion.store.layout import bucket_of, store_path
from avfusion.store.writer import StoreWriter

SPLITS = {"train": 0.6, "validation": 0.13, "test": 0.27}   # about Aff-Wild2's VA set shares of videos
FPS = 30
STORES = 4   # README: about videos / 150
BACKBONES = ("facenet", "openl3")   # the default feature set: fusion.visual, fusion.audio


def lengths(videos: int, frames: int, seed: int = 0) -> list[int]:
    """Log-normal lengths (Aff-Wild2: a few hundred to tens of thousands of frames), summing to `frames`."""
    raw = np.random.default_rng(seed).lognormal(0.0, 0.85, videos)
    n = np.maximum(200, np.round(raw / raw.sum() * frames)).astype(int)
    n[np.argmax(n)] += frames - n.sum()
    return n.tolist()


def runs(rng, n: int, share: float) -> np.ndarray:
    """A mask with runs of True (up to 30 s) covering about `share` of n frames."""
    mask = np.zeros(n, bool)
    while mask.mean() < share:
        start, length = rng.integers(n), rng.integers(1, max(2, min(n // 10, 30 * FPS)))
        mask[start:start + length] = True
    return mask


def synthetic_video(video_id: str, n: int, dim_visual: int, dim_audio: int):
    """Labels (smooth, -5 runs), per-extractor (embedding, valid); invalid rows are zero as extraction writes."""
    rng = np.random.default_rng(zlib.crc32(video_id.encode()))
    drift = lfilter([0.045], [1, -0.999], rng.standard_normal((n, 2)), axis=0)   # AR(1), std about 1
    labels = np.tanh(0.6 * drift).astype(np.float32)
    labels[runs(rng, n, 0.05)] = INVALID
    features = {}
    for name, dim, absent in (("facenet", dim_visual, 0.1), ("openl3", dim_audio, 0.25)):
        valid = ~runs(rng, n, absent)
        embedding = rng.standard_normal((n, dim), dtype=np.float32)
        embedding[~valid] = 0
        features[name] = (embedding, valid)
    return labels, features


def make_project(root: str, videos: int, frames: int, dim_visual: int, dim_audio: int) -> dict:
    """Manifest, label files and the facenet and openl3 stores under root/data, as the stages would leave them."""
    ids = [f"video-{i:04d}" for i in range(videos)]
    sizes = dict(zip(ids, lengths(videos, frames)))
    split_of = {}
    order = np.random.default_rng(1).permutation(videos)
    bounds = np.cumsum([round(share * videos) for share in SPLITS.values()])
    bounds[-1] = videos   # rounding must leave no video out
    for rank, i in enumerate(order):
        split_of[ids[i]] = list(SPLITS)[int(np.searchsorted(bounds, rank, side="right"))]
    os.makedirs(os.path.join(root, "data/labels"))
    writers = {}
    for name, dim in (("facenet", dim_visual), ("openl3", dim_audio)):
        directory = os.path.join(root, "data/features", name)
        os.makedirs(directory)
        for b in range(STORES):
            plan = [v for v in ids if bucket_of(v, STORES) == b]
            writers[name, b] = StoreWriter(store_path(directory, b), dim, {"extractor": f"synthetic-{name}/1"}, plan)
    began = time.perf_counter()
    rows = []
    for vid in ids:
        n = sizes[vid]
        labels, features = synthetic_video(vid, n, dim_visual, dim_audio)
        write_labels(os.path.join(root, "data/labels", f"{vid}.txt"), labels)
        for name, (embedding, valid) in features.items():
            writers[name, bucket_of(vid, STORES)].append(vid, embedding=embedding, valid=valid,
                                                          frame=np.arange(n), time=np.arange(n) / FPS)
        # no media file: train and evaluate read the stores only (`media` groups cross-validation folds)
        rows.append({"video_id": vid, "path": f"videos/{vid}.mp4", "split": split_of[vid], "fps": FPS, "frames": n,
                     "labels": os.path.join(root, "data/labels", f"{vid}.txt"), "label_frames": n, "person": "",
                     "media": vid, "sha256": "synthetic"})
    with open(os.path.join(root, "data/manifest.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    n = np.array(list(sizes.values()))
    return {"videos": videos, "frames": int(n.sum()), "dim_visual": dim_visual, "dim_audio": dim_audio,
            "split_videos": {s: sum(1 for v in split_of.values() if v == s) for s in SPLITS},
            "split_frames": {s: int(sum(sizes[v] for v in ids if split_of[v] == s)) for s in SPLITS},
            "length_min_median_max": [int(n.min()), int(np.median(n)), int(n.max())],
            "store_bytes": files_and_bytes(os.path.join(root, "data/features"))[1],
            "write_s": round(time.perf_counter() - began, 1)}


def write_params(root: str, hop: int, data: str) -> dict:
    with open(os.path.join(REPO, "params.yaml")) as f:
        params = yaml.safe_load(f)
    params["train"].update(epochs=1, hop=hop, device="cpu", data=data)
    params["eval"].update(device="cpu", data=data)
    with open(os.path.join(root, "params.yaml"), "w") as f:
        yaml.safe_dump(params, f, sort_keys=False)
    return resolved(params)


def resolved(params: dict) -> dict:
    """The params as the train stage sees them: the recipe's values in place of nulls (window, hop, ...)."""
    fusion, train, _ = resolve(params["fusion"], params["train"])
    return {**params, "fusion": fusion, "train": train}


# A stage in its own process: the real entry point, then that process's own peak RSS.
STAGE = ("import json, resource, runpy, sys\n"
         "runpy.run_module(sys.argv[1], run_name='__main__')\n"
         "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")


def run_stage(name: str, root: str) -> dict:
    env = {**os.environ, "PYTHONPATH": REPO, "DVC_NO_ANALYTICS": "1", "TQDM_DISABLE": "1"}
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", STAGE, f"stages.{name}"], cwd=root, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if proc.returncode:
        raise SystemExit(f"stage {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    kb = int(proc.stdout.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    print(f"  {name}: {seconds:.0f} s, peak RSS {kb / 2**20:.2f} GB", flush=True)
    return {"wall_s": round(seconds, 1), "peak_rss_gb": round(kb / 2**20, 3),
            "output": proc.stdout.rsplit("PEAK_RSS_KB", 1)[0].strip().splitlines()[-4:]}


def train_and_evaluate(root: str, hop: int, data: str) -> dict:
    params = write_params(root, hop, data)
    window = params["train"]["window"]
    run_stage("featureset", root)
    train = run_stage("train", root)
    with open(os.path.join(root, "reports/train/metrics.json")) as f:
        fold = json.load(f)["fold-0"]["best"]
    with open(os.path.join(root, "data/manifest.csv")) as f:
        entries = list(csv.DictReader(f))
    dirs = [os.path.join(root, "data/features", name) for name in BACKBONES]
    chosen = choose_data(params["train"], [e for e in entries if e["split"] in ("train", "validation")], *dirs)
    windows = sum(len(window_starts(int(e["frames"]), window, hop)) for e in entries if e["split"] == "train")
    train.update(epoch_s=fold["seconds"], windows=windows, windows_per_s=round(windows / fold["seconds"], 1))
    evaluate = run_stage("evaluate", root)
    with open(os.path.join(root, "reports/metrics.json")) as f:
        evaluate["videos_scored"] = sum(m["videos"] for m in json.load(f).values() if isinstance(m, dict))
    return {"window": window, "hop": hop, "batch_size": params["train"]["batch_size"],
            "fusion": params["fusion"]["type"], "data": data, "chosen": chosen, "train": train, "evaluate": evaluate}


def dvc_times(root: str) -> dict:
    """add / status / push in the project, then a fresh clone's pull; the project's own copy is deleted
    before the pull, so the disk holds at most two copies (workspace + cache are hardlinks)."""
    remote, clone = root + "-remote", root + "-clone"
    sh(["git", "init", "-q", "-b", "main"], root)
    sh(["git", "add", "-A", "data/manifest.csv", "params.yaml"], root)
    sh(["git", "commit", "-qm", "project"], root)
    dvc("init", "-q", cwd=root)
    dvc("config", "cache.type", "hardlink,symlink", cwd=root)
    dvc("remote", "add", "-d", "local", remote, cwd=root)
    sh(["git", "add", "-A", ".dvc"], root)
    sh(["git", "commit", "-qm", "dvc"], root)
    out = {"cache_type": "hardlink,symlink", "remote": "local directory, same disk",
           "files": files_and_bytes(os.path.join(root, "data/features"))[0]}
    stores = [f"data/features/{name}" for name in BACKBONES]
    out["dvc_add_s"] = round(dvc("add", "-q", *stores, cwd=root), 1)
    sh(["git", "add", *(f"{s}.dvc" for s in stores), "data/features/.gitignore"], root)
    sh(["git", "commit", "-qm", "features"], root)
    out["dvc_status_s"] = round(dvc("status", "-q", cwd=root), 1)
    out["dvc_push_s"] = round(dvc("push", "-q", cwd=root), 1)
    out["dvc_status_cloud_s"] = round(dvc("status", "-c", "-q", cwd=root), 1)
    sh(["git", "clone", "-q", root, clone], os.path.dirname(root))
    shutil.rmtree(os.path.join(root, ".dvc", "cache"))
    shutil.rmtree(os.path.join(root, "data", "features"))
    out["dvc_pull_s"] = round(dvc("pull", "-q", cwd=clone), 1)
    out["pulled_bytes"] = sum(files_and_bytes(os.path.join(clone, s))[1] for s in stores)
    out["clone_dvc_status_s"] = round(dvc("status", "-q", cwd=clone), 1)
    shutil.rmtree(clone)
    shutil.rmtree(remote)
    return out


def throughput(root: str, frames: int, hop: int, steps: int, reps: int) -> dict:
    """Training windows/s on the same videos, in memory vs out of core, alternating within each rep."""
    with open(os.path.join(root, "data/manifest.csv")) as f:
        entries = [e for e in csv.DictReader(f) if e["split"] == "train"]
    subset, total = [], 0
    for e in entries:
        if total + int(e["frames"]) <= frames:
            subset.append(e)
            total += int(e["frames"])
    with open(os.path.join(root, "params.yaml")) as f:
        params = resolved(yaml.safe_load(f))
    dirs = [os.path.join(root, "data/features", name) for name in BACKBONES]
    trainers = {data: Trainer(params["fusion"]["type"], open_split(subset, *dirs, "cpu", data),
                              {**params["train"], "hop": hop}, params["fusion"]) for data in ("memory", "stores")}
    for trainer in trainers.values():   # the page cache is warm for both: loading in memory read every row
        trainer.steps(2)
    before, rates = load(), {data: [] for data in trainers}
    for rep in range(reps):
        for data in (("memory", "stores") if rep % 2 == 0 else ("stores", "memory")):
            began = time.perf_counter()
            n = trainers[data].steps(steps)
            rates[data].append(n / (time.perf_counter() - began))
    ratios = [s / m for s, m in zip(rates["stores"], rates["memory"])]
    return {"videos": len(subset), "frames": total, "steps_per_rep": steps, "reps": reps,
            "load_before": before, "load_after": load(),
            "windows_per_s": {data: [r(x, 1) for x in v] for data, v in rates.items()},
            "ratio_per_rep": [r(x) for x in ratios], "ratio_median": r(med(ratios))}


def bench_main(args, work: str) -> dict:
    """512-d facenet and openl3 at full size: the stages, throughput side by side, then DVC."""
    out = {"inputs": {"videos": args.videos, "frames": args.frames, "dims": [512, 512], "stores": STORES,
                      "epochs": 1, "hop": args.hop, "device": "cpu"}, "load_before": load()}
    root = os.path.join(work, "project")
    dataset = make_project(root, args.videos, args.frames, 512, 512)
    print(" ", dataset, flush=True)
    out["run"] = {"dataset": dataset, **train_and_evaluate(root, args.hop, "auto")}
    print("== throughput, in memory vs out of core", flush=True)
    out["throughput"] = throughput(root, args.throughput_frames, args.hop, args.steps, args.reps)
    print(" ", out["throughput"], flush=True)
    if not args.skip_dvc:
        print("== dvc", flush=True)
        out["dvc"] = dvc_times(root)
        print(" ", out["dvc"], flush=True)
    shutil.rmtree(root)
    return out


def bench_wide(args, work: str) -> dict:
    """Wide openl3 embeddings at growing sizes: train and evaluate only (peak RSS must not grow)."""
    out = {"inputs": {"dim_audio": args.wide_dim, "frames": args.wide_frames, "hop": args.hop},
           "load_before": load(), "runs": []}
    for frames in args.wide_frames:
        print(f"== {args.wide_dim}-d audio, {frames} frames (load {load()})", flush=True)
        root = os.path.join(work, f"wide-{frames}")
        videos = max(4, round(args.videos * frames / args.frames))
        dataset = make_project(root, videos, frames, 512, args.wide_dim)
        out["runs"].append({"dataset": dataset, **train_and_evaluate(root, args.hop, "auto")})
        shutil.rmtree(root)
    return out


def bench_throughput(args, work: str) -> dict:
    """The out-of-core vs in-memory comparison alone, on a project of --throughput-frames frames."""
    root = os.path.join(work, "throughput")
    videos = max(4, round(args.videos * args.throughput_frames / args.frames / SPLITS["train"]))
    make_project(root, videos, round(args.throughput_frames / SPLITS["train"]), 512, 512)
    write_params(root, args.hop, "auto")
    out = throughput(root, args.throughput_frames, args.hop, args.steps, args.reps)
    shutil.rmtree(root)
    return out


SECTIONS = {"main": bench_main, "wide": bench_wide, "throughput": bench_throughput}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=["main", "wide"],
                        help="run these sections; the report keeps the other's last results")
    parser.add_argument("--videos", type=int, default=600)
    parser.add_argument("--frames", type=int, default=2_800_000)
    parser.add_argument("--hop", type=int, default=64, help="training hop, at most the window (params.yaml's, 64)")
    parser.add_argument("--wide-frames", type=int, nargs="*", default=[300_000, 900_000])
    parser.add_argument("--wide-dim", type=int, default=6144)
    parser.add_argument("--throughput-frames", type=int, default=250_000)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--skip-dvc", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a few thousand frames, no DVC: a smoke check")
    parser.add_argument("--tmp", default=tempfile.gettempdir())
    parser.add_argument("--out", help="folder of bench.json and scale.md (default: reports; --quick: a temporary one)")
    args = parser.parse_args()
    if args.quick:
        args.videos, args.frames, args.wide_frames, args.throughput_frames = 10, 6000, [3000], 2000
        args.steps, args.reps, args.skip_dvc = 2, 2, True
    args.out = args.out or (os.path.join(tempfile.gettempdir(), "avfusion-bench-quick") if args.quick
                            else os.path.join(REPO, "reports"))
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(os.cpu_count())
    for name in args.only:
        print(f"== {name} (load {load()})", flush=True)
        began = time.perf_counter()
        work = tempfile.mkdtemp(prefix="bench-scale-", dir=args.tmp)
        try:
            result = SECTIONS[name](args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        result.update(load_after=load(), seconds=round(time.perf_counter() - began),
                      finished=datetime.datetime.now().isoformat(timespec="seconds"), cores=os.cpu_count())
        print(json.dumps({k: v for k, v in result.items() if k in ("ratio_median", "windows_per_s")}), flush=True)
        record(args.out, name, result)


def record(out: str, name: str, result: dict) -> None:
    """Set one section of `affwild2_scale`, re-read just before writing so that the sections another
    invocation wrote meanwhile are kept, and recompute the metrics over all sections."""
    path = os.path.join(out, "bench.json")
    report = {}
    if os.path.exists(path):
        with open(path) as f:
            report = json.load(f).get("affwild2_scale", {})
    report[name] = result
    runs = ([report["main"]["run"]] if "main" in report else []) + report.get("wide", {}).get("runs", [])
    peaks = [x[stage]["peak_rss_gb"] for x in runs for stage in ("train", "evaluate")]
    report["metrics"] = {"peak_rss_gb": max(peaks)} if peaks else {}
    tp = report.get("throughput") or report.get("main", {}).get("throughput")
    if tp:
        # repeats of the section on a noisy machine (kept under throughput_repeats): the median of the runs
        ratios = [x["ratio_median"] for x in [tp, *report.get("throughput_repeats", [])]]
        report["metrics"]["out_of_core_vs_in_memory_throughput"] = r(med(ratios))
        report["metrics"]["out_of_core_vs_in_memory_throughput_runs"] = ratios
    write(report, out)


def write(report: dict, out: str) -> None:
    """The `affwild2_scale` key of bench.json (its other keys kept) and scale.md."""
    merge_into_report(os.path.join(out, "bench.json"), "affwild2_scale", report)
    with open(os.path.join(out, "scale.md"), "w") as f:
        f.write(markdown(report))
    print(f"wrote {os.path.join(out, 'bench.json')} (affwild2_scale) and {os.path.join(out, 'scale.md')}", flush=True)


def gb(x: float) -> str:
    return f"{x / 1e9:.1f} GB"


def stage_rows(x: dict) -> list[str]:
    d, t, e = x["dataset"], x["train"], x["evaluate"]
    name = f"{d['frames']:,} frames, {d['dim_visual']}+{d['dim_audio']}-d, {gb(d['store_bytes'])}, hop {x['hop']}"
    return [f"| {name} | train (`{x['chosen']}`) | {t['wall_s']} | {t['peak_rss_gb']} | {t['epoch_s']} | "
            f"{t['windows']:,} | {t['windows_per_s']} |",
            f"| {name} | evaluate | {e['wall_s']} | {e['peak_rss_gb']} | | | |"]


def markdown(report: dict) -> str:
    main, wide = report.get("main"), report.get("wide")
    ratio = report["metrics"].get("out_of_core_vs_in_memory_throughput")
    runs = report["metrics"].get("out_of_core_vs_in_memory_throughput_runs", [ratio])
    throughput = (f"Out of core vs in memory, training throughput (median of per-rep ratios; median over "
                  f"{len(runs)} run(s) {runs}): **{ratio}** (target ≥ 0.7).\n" if ratio else "")
    lines = ["# Aff-Wild2-sized training and evaluation", "",
             "Produced by `benchmarks/bench_scale.py` on the CPU. Synthetic stores written by `StoreWriter` in "
             "the real format (no extraction; random embeddings: speed and memory do not depend on their values); "
             "the real `train` (1 epoch) and `evaluate` stages, each in its own process (peak RSS: that "
             "process's `ru_maxrss`). Labels have 5 % of frames in `-5` runs; 10 % of frames have no face and "
             "25 % no voice (zero embeddings, valid false), in runs of up to 30 s.", "",
             f"Largest peak RSS over these runs: **{report['metrics'].get('peak_rss_gb', 'none run')} GB** (bound: 6 GB).", "",
             throughput,
             "| run | stage | wall s | peak RSS GB | epoch s (incl. validation scoring) | training windows | "
             "windows/s |", "|---|---|---|---|---|---|---|"]
    for x in ([main["run"]] if main else []) + (wide["runs"] if wide else []):
        lines += stage_rows(x)
    if main:
        d, run, tp = main["run"]["dataset"], main["run"], main["throughput"]
        lines += ["", f"## {d['frames']:,} frames, 512-d facenet and openl3", "",
                  f"{main['finished'][:16]}, {main['cores']} cores shared with other jobs (load "
                  f"{main['load_before']} → {main['load_after']}), {main['seconds']} s in all.", "",
                  f"{d['videos']} videos, lengths min / median / max "
                  f"{' / '.join(f'{x:,}' for x in d['length_min_median_max'])} frames; train / validation / test "
                  f"{' / '.join(str(d['split_videos'][s]) for s in SPLITS)} videos, "
                  f"{' / '.join(f'{n:,}' for n in d['split_frames'].values())} frames; "
                  f"{gb(d['store_bytes'])} of stores ({STORES} per modality), written in {d['write_s']} s.", "",
                  f"Training: `{run['fusion']}`, window {run['window']}, **hop {run['hop']}** (no overlap: the "
                  f"demo's hop 8 would make the epoch 8× longer), batch {run['batch_size']}, `train.data: "
                  f"{run['data']}` chose `{run['chosen']}`. Evaluate predicts every frame of every split.", "",
                  "### Out of core vs in memory", "",
                  f"The same {tp['videos']} training videos ({tp['frames']:,} frames), the train stage's step "
                  f"(`{run['fusion']}`, AdamW, batch {run['batch_size']}) on identical random batches, {tp['reps']} "
                  f"reps of {tp['steps_per_rep']} steps alternating between the two (page cache warm; load "
                  f"{tp['load_before']} → {tp['load_after']}):", "",
                  f"- in memory: {tp['windows_per_s']['memory']} windows/s",
                  f"- out of core: {tp['windows_per_s']['stores']} windows/s",
                  f"- ratio per rep {tp['ratio_per_rep']}, median **{tp['ratio_median']}**"]
        if "dvc" in main:
            v = main["dvc"]
            lines += ["", "### DVC", "",
                      f"Both stores directories ({v['files']} files, {gb(d['store_bytes'])}), cache type "
                      f"`{v['cache_type']}`, remote: {v['remote']}; the pull is a fresh `git clone`'s "
                      f"({gb(v['pulled_bytes'])} pulled).", "",
                      "| dvc add | dvc status | dvc push | dvc status -c | dvc pull | dvc status (clone) |",
                      "|---|---|---|---|---|---|",
                      f"| {v['dvc_add_s']} s | {v['dvc_status_s']} s | {v['dvc_push_s']} s | "
                      f"{v['dvc_status_cloud_s']} s | {v['dvc_pull_s']} s | {v['clone_dvc_status_s']} s |"]
    if wide:
        lines += ["", f"## {wide['inputs']['dim_audio']}-d audio", "",
                  f"{wide['finished'][:16]}, load {wide['load_before']} → {wide['load_after']}. 512-d facenet, "
                  f"{wide['inputs']['dim_audio']}-d openl3 (`openl3.embedding_size: 6144`) at "
                  f"{' and '.join(f'{f:,}' for f in wide['inputs']['frames'])} frames (videos in proportion), "
                  f"training hop {wide['inputs']['hop']}."]
    tp = report.get("throughput")
    if tp:
        lines += ["", "## Out of core vs in memory, on its own", "",
                  f"{tp['finished'][:16]}: a fresh project, the same {tp['videos']} training videos "
                  f"({tp['frames']:,} frames, 512-d) both ways, {tp['reps']} reps of {tp['steps_per_rep']} steps "
                  f"alternating (load {tp['load_before']} → {tp['load_after']}):", "",
                  f"- in memory: {tp['windows_per_s']['memory']} windows/s",
                  f"- out of core: {tp['windows_per_s']['stores']} windows/s",
                  f"- ratio per rep {tp['ratio_per_rep']}, median **{tp['ratio_median']}**"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
