"""The benchmark entry point: the pipeline's speed against the way peers do it and the machine's limits.

    .venv/bin/python benchmarks/bench.py [--only NAME ...] [--quick] [--video PATH]

Sections (NAME): store_read, extraction, training, pipeline (cached vs recompute, scaling), store_files.
`extraction` needs a real clip with faces and speech (`--video`, e.g. a 1080p street scene): without
one it is skipped.
Each measures side by side in one run (the two things compared alternate within every repetition, so a
shared machine's load hits both alike), keeps every sample, and reports medians and their ratios with
the load average before and after. Results go to reports/bench.json (merged per section, so `--only`
updates one section and keeps the others) and reports/bench.md. `--quick` shrinks inputs and
repetitions to a smoke check of a couple of minutes; its numbers are not the reported ones.

Not a test: nothing here is collected by pytest (no `test_` names). GPU rows are measured only when
CUDA is available; otherwise they read "unmeasured: no GPU".
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TQDM_DISABLE", "1")    # the stages' progress bars would drown the report

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

import av
import numpy as np
import torch
import yaml
import zarr
from bench_audio import cpu_name, network_flop
from bench_store_scale import files_and_bytes, write_stores

import stages.dataset
import stages.demo
from avfusion.extraction.base import Extractor
from avfusion.extraction.registry import get
from avfusion.extraction.runner import run_stage
from avfusion.learning.fusion import build_model
from avfusion.learning.metrics import LOSSES
from avfusion.learning.recipes import resolve
from avfusion.learning.train import make_optimizer, train_fold
from avfusion.learning.windows import Split, Video, load_labels, load_split
from avfusion.openl3.frontend import SAMPLE_RATE
from avfusion.openl3.network import WINDOW
from avfusion.params import load_params
from avfusion.paths import ROOT_ENV
from avfusion.sources.manifest import read_manifest
from avfusion.sources.media import decode_video, frame_times, probe
from avfusion.store.layout import ROWS_PER_CHUNK, ROWS_PER_SHARD
from avfusion.store.reader import FeatureReader

BACKBONES = ("facenet", "openl3")
FUSION_TYPES = ("jca", "lfan", "cross_attention", "concat", "late", "audio_only", "visual_only")
NO_GPU = "unmeasured: no GPU"
TARGETS = {   # docs/design.md / issue 9: metric -> (comparison, target)
    "cached_vs_recompute_speedup": (">=", 50),
    "zarr_vs_memmap_read_ratio": (">=", 0.5),
    "facenet_1080p_cpu_fps": (">=", 8),
    "openl3_flops_fraction_of_peak": (">=", 0.5),
}


# ---------------------------------------------------------------- helpers

def params(section: str) -> dict:
    """A section of the repository's params.yaml, checked and completed as its stage loads it."""
    return load_params(section, os.path.join(REPO, "params.yaml"))


def fusion_and_train() -> tuple[dict, dict]:
    """The fusion and train sections as the train stage sees them: the recipe's values in place of nulls."""
    fusion, train, _ = resolve(params("fusion"), params("train"))
    return fusion, train


def built(name: str, weights_dir: str, device: str = "cpu", **overrides) -> Extractor:
    """Extractor `name` as its stage builds it, from the repository's params (with `overrides`): its
    weight files made in `weights_dir` (seeded random by default: speed does not depend on the values),
    its models loaded."""
    cls = get(name)
    settings = {**params(name), **overrides}
    extractor = cls(settings, device)
    os.makedirs(weights_dir, exist_ok=True)
    cls.make_weights(settings, weights_dir)
    extractor.weights_dir = weights_dir
    extractor.ensure_loaded()
    return extractor


def load() -> float:
    return round(os.getloadavg()[0], 2)


def timed(fn, *args, **kwargs) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def med(values) -> float:
    return float(statistics.median(values))


def r(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}") if abs(x) < 10 ** digits else round(x)


def merge_into_report(path: str, key: str, value: dict) -> None:
    """Set one top-level key of a JSON report (reports/bench.json), keeping the others."""
    report = {}
    if os.path.exists(path):
        with open(path) as f:
            report = json.load(f)
    report[key] = value
    with open(path, "w") as f:
        json.dump(report, f, indent=2)


def clip(src: str, dst: str, width: int | None = None, height: int | None = None,
         frames: int | None = None) -> str:
    """Re-encode the first `frames` frames of `src` (H.264, crf 18) at width x height, with its audio over
    the same span (AAC)."""
    end = None                                    # the time of the first frame left out
    with av.open(src) as inp, av.open(dst, "w") as out:
        vin = inp.streams.video[0]
        width, height = width or vin.width, height or vin.height
        vout = out.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        vout.options = {"crf": "18"}
        ain = inp.streams.audio[0] if inp.streams.audio else None
        if ain is not None:
            aout = out.add_stream("aac", rate=ain.rate, layout="mono" if ain.layout.nb_channels == 1 else "stereo")
        for n, frame in enumerate(inp.decode(vin)):
            if frames is not None and n >= frames:
                end = frame.time
                break
            out.mux(vout.encode(frame.reformat(width, height, format="yuv420p")))
        out.mux(vout.encode())
        if ain is not None:
            inp.seek(0)
            for frame in inp.decode(ain):
                if end is not None and frame.time >= end:
                    break
                out.mux(aout.encode(frame))          # PyAV converts and re-chunks for the encoder
            out.mux(aout.encode())
    return dst


def decode_only(path: str) -> int:
    """Decode every frame to RGB (what the extractor needs at least): the frame count."""
    n = 0
    for _, frame in decode_video(path):
        frame.to_ndarray(format="rgb24")
        n += 1
    return n


# ---------------------------------------------------------------- 2. store reads

def bench_store_read(quick: bool, tmp: str) -> dict:
    """Random 300-frame windows (embedding + valid, what training reads) through FeatureReader.rows vs
    the same rows from a numpy memmap (.npy, one flat array per column, same row order)."""
    videos_n, reads, reps, window, dim, stores = (40, 100, 3, 300, 512, 4) if quick else (200, 300, 7, 300, 512, 4)
    rng = np.random.default_rng(0)
    videos = [(f"video-{i:05d}", int(n)) for i, n in enumerate(rng.integers(150, 451, videos_n))]
    directory = os.path.join(tmp, "stores")
    write_stores(directory, videos, stores, dim)
    reader = FeatureReader(directory)
    # The memmap holds every video's rows contiguously, in the stores' order.
    total = sum(n for _, n in videos)
    emb = np.lib.format.open_memmap(os.path.join(tmp, "embedding.npy"), "w+", np.float32, (total, dim))
    valid = np.lib.format.open_memmap(os.path.join(tmp, "valid.npy"), "w+", np.bool_, (total,))
    where, at = {}, 0
    for vid, n in videos:
        rows = reader.rows(vid, columns=("embedding", "valid"))
        emb[at:at + n], valid[at:at + n] = rows["embedding"], rows["valid"]
        where[vid] = (at, n)
        at += n
    emb.flush(), valid.flush()
    del emb, valid
    mm_emb = np.load(os.path.join(tmp, "embedding.npy"), mmap_mode="r")
    mm_valid = np.load(os.path.join(tmp, "valid.npy"), mmap_mode="r")
    ids = [v for v, _ in videos]
    plan = []
    for _ in range(reads):
        vid = ids[rng.integers(len(ids))]
        start = int(rng.integers(max(1, where[vid][1] - window + 1)))
        plan.append((vid, start))

    def zarr_reads():
        for vid, start in plan:
            rows = reader.rows(vid, columns=("embedding", "valid"), start=start, stop=start + window)
            assert rows["embedding"].shape[1] == dim
        return len(plan)

    def memmap_reads():
        for vid, start in plan:
            at, n = where[vid]
            stop = at + min(start + window, n)
            e, v = np.array(mm_emb[at + start:stop]), np.array(mm_valid[at + start:stop])
            assert e.shape[1] == dim and len(v) == len(e)
        return len(plan)

    # Diagnostic: the same layout (chunks, shards) without compression, read through zarr directly,
    # separates the codec's share of the cost from zarr's own per-read overhead.
    plain = zarr.open_group(os.path.join(tmp, "plain.zarr"), mode="w").create_array(
        "embedding", shape=(total, dim), dtype="float32", chunks=(ROWS_PER_CHUNK, dim),
        shards=(ROWS_PER_SHARD, dim), compressors=None)
    plain[:] = mm_emb[:]

    def plain_reads():
        for vid, start in plan:
            at, n = where[vid]
            assert plain[at + start:at + min(start + window, n)].shape[1] == dim
        return len(plan)

    # Same windows, identical values? (one check, outside the timing)
    vid, start = plan[0]
    at, n = where[vid]
    assert np.array_equal(reader.rows(vid, columns=("embedding",), start=start, stop=start + window)["embedding"],
                          mm_emb[at + start:at + min(start + window, n)])
    zarr_reads(), memmap_reads(), plain_reads()         # warm-up: page cache, zarr metadata, codecs
    before = load()
    rates = {zarr_reads: [], memmap_reads: [], plain_reads: []}
    for rep in range(reps):
        for fn in (list(rates) if rep % 2 == 0 else list(rates)[::-1]):
            seconds, _, n = timed(fn)
            rates[fn].append(n / seconds)
    zarr_rate, memmap_rate, plain_rate = rates.values()
    zarr_med, mm_med = med(zarr_rate), med(memmap_rate)
    return {
        "inputs": {"videos": videos_n, "rows": total, "dim": dim, "stores": stores, "window": window,
                   "reads_per_rep": reads, "columns": ["embedding", "valid"],
                   "page_cache": "warm (both read everything once before timing)"},
        "reps": reps, "load_before": before, "load_after": load(),
        "zarr_reads_per_s": [r(x) for x in zarr_rate], "memmap_reads_per_s": [r(x) for x in memmap_rate],
        "zarr_median_reads_per_s": r(zarr_med), "memmap_median_reads_per_s": r(mm_med),
        "zarr_median_ms_per_window": r(1e3 / zarr_med), "memmap_median_ms_per_window": r(1e3 / mm_med),
        "diagnostic_uncompressed_zarr_reads_per_s": [r(x) for x in plain_rate],
        "diagnostic_uncompressed_zarr_median_ms_per_window": r(1e3 / med(plain_rate)),
        "metrics": {"zarr_vs_memmap_read_ratio": r(zarr_med / mm_med)},
    }


# ---------------------------------------------------------------- 3. extraction throughput

def bench_extraction(quick: bool, tmp: str, video: str) -> dict:
    """The facenet and openl3 extractors as their stages build them (params.yaml, seeded random weights)."""
    device = "cpu"
    # The whole clip (105 frames): a short one mostly measures per-video start-up, not throughput.
    frames = 8 if quick else None
    reps = 1 if quick else 3
    info = probe(video)
    inputs = {"1080p": clip(video, os.path.join(tmp, "1080p.mp4"), frames=frames),
              "640p": clip(video, os.path.join(tmp, "640p.mp4"), 640, 360, frames)}
    facenet = built("facenet", os.path.join(tmp, "facenet"), device)
    embedder = facenet.embedder
    fp = facenet.params
    out: dict = {"inputs": {"video": os.path.relpath(video, REPO), "source": f"{info.width}x{info.height}, "
                            f"{info.fps:g} fps, {info.duration:.2f} s", "frames": frames or "all",
                            "1080p": f"its first {frames or 'all'} frames re-encoded (H.264 crf 18) at 1920x1080",
                            "640p": "the same frames re-encoded (H.264 crf 18) at 640x360",
                            "facenet_params": {k: fp[k] for k in ("detect_size", "min_face", "detect_every", "margin",
                                                                  "batch_size")},
                            "weights": "seeded random (speed does not depend on the values)"},
                 "reps": reps, "load_before": load(), "facenet": {}}
    embedder.embed_video(inputs["640p"])                      # warm-up: allocations, oneDNN kernel choice
    metrics = {}
    for name, path in inputs.items():
        fps, dec, cpu, found = [], [], [], 0.0
        for _ in range(reps):                                 # extraction and decode alternate
            seconds, cpu_s, rows = timed(embedder.embed_video, path)
            n = len(rows["time"])
            fps.append(n / seconds)
            cpu.append(cpu_s / n)
            found = float(rows["valid"].mean())
            seconds, _, n = timed(decode_only, path)
            dec.append(n / seconds)
        out["facenet"][name] = {"frames_per_s": [r(x) for x in fps], "decode_only_frames_per_s": [r(x) for x in dec],
                                "median_frames_per_s": r(med(fps)), "median_decode_only_frames_per_s": r(med(dec)),
                                "cpu_seconds_per_frame": r(med(cpu)), "share_of_frames_with_face": round(found, 3)}
        metrics[f"facenet_{name}_cpu_fps"] = r(med(fps))
        metrics[f"facenet_{name}_decode_only_fps"] = r(med(dec))

    # openl3: the stage's embedder and params on the clip's own audio track.
    openl3 = built("openl3", os.path.join(tmp, "openl3"), device)
    audio_embedder, ap = openl3.embedder, openl3.params
    times = frame_times(video)
    duration = float(times[-1] + 1 / info.fps)
    audio_embedder.embed_video(video, times)            # warm-up
    speed, windows = [], 0
    for _ in range(1 if quick else 5):
        before_windows = audio_embedder.windows
        seconds, _, _ = timed(audio_embedder.embed_video, video, times)
        windows = audio_embedder.windows - before_windows
        speed.append(duration / seconds)
    out["openl3"] = {"input": f"{os.path.relpath(video, REPO)} audio track, {duration:.2f} s",
                     "params": {k: ap[k] for k in ("input_repr", "embedding_size", "rate", "batch_size")},
                     "windows_per_video": windows, "audio_seconds_per_second": [r(x) for x in speed],
                     "median_audio_seconds_per_second": r(med(speed))}
    metrics["openl3_audio_seconds_per_second_cpu"] = r(med(speed))

    # The openl3 network's GFLOP/s vs dense fp32 matmul GFLOP/s, alternating within each repetition.
    model = audio_embedder.model
    flop = network_flop(model)
    n_windows = 4 if quick else 8
    wave = np.random.default_rng(0).normal(0, 0.1, n_windows * SAMPLE_RATE // 10 + WINDOW)
    wave = wave.astype(np.float32)
    centres = np.arange(n_windows) * SAMPLE_RATE // 10 + WINDOW // 2
    size = 1024 if quick else 2048
    a, b = torch.randn(size, size), torch.randn(size, size)

    def matmul():
        return a @ b

    def network():
        return model.embed_centred(wave, centres, ap["batch_size"])

    matmul(), network()
    mm, net = [], []
    for rep in range(2 if quick else 5):
        for fn in ((matmul, network) if rep % 2 == 0 else (network, matmul)):
            seconds, _, _ = timed(fn)
            if fn is matmul:
                mm.append(2.0 * size ** 3 / seconds / 1e9)
            else:
                net.append(flop * n_windows / seconds / 1e9)
    fractions = [n / m for n, m in zip(net, mm)]
    out["openl3_flops"] = {"input_repr": ap["input_repr"], "gflop_per_window": r(flop / 1e9, 4),
                           "windows_per_rep": n_windows, "matmul": f"{size}x{size} fp32",
                           "torch_threads": torch.get_num_threads(),
                           "network_gflops": [r(x) for x in net], "matmul_gflops": [r(x) for x in mm],
                           "median_network_gflops": r(med(net)), "median_matmul_gflops": r(med(mm)),
                           "per_rep_fraction_median": r(med(fractions))}
    metrics["openl3_flops_fraction_of_peak"] = r(med(net) / med(mm))
    metrics["facenet_gpu_fps"] = NO_GPU if not torch.cuda.is_available() else "not implemented"
    out["load_after"] = load()
    out["metrics"] = metrics
    return out


# ---------------------------------------------------------------- 4. training throughput

def synthetic_split(videos: int, frames: int, dim_visual: int, dim_audio: int, seed: int = 0) -> Split:
    """Videos shaped like the demo's, random features (training speed does not depend on their values)."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(videos):
        t = np.arange(frames) / 15
        labels = np.stack([np.sin(t + i), np.cos(0.7 * t + i)], 1).astype(np.float32) * 0.8
        items.append(Video(f"v{i:04d}", rng.standard_normal((frames, dim_visual), dtype=np.float32),
                           rng.random(frames) > 0.05, rng.standard_normal((frames, dim_audio), dtype=np.float32),
                           rng.random(frames) > 0.1, labels))
    return Split(items)


class Trainer:
    """The train stage's inner step (its optimizer, loss and grad clipping) on a fixed model;
    `train` and `fusion` as the recipe resolved them (`fusion_and_train`)."""

    def __init__(self, fusion_type: str, split: Split, train: dict, fusion: dict):
        torch.manual_seed(0)
        self.split, self.window, self.batch = split, train["window"], train["batch_size"]
        self.model = build_model({**fusion, "type": fusion_type}, self.window, split.visual.shape[1],
                                 split.audio.shape[1])
        self.opt = make_optimizer(self.model, train)
        self.windows = split.windows(self.window, train["hop"])
        self.clip, self.loss = train["grad_clip"], LOSSES[train["loss"]]
        self.gen = torch.Generator().manual_seed(0)

    def steps(self, n: int) -> int:
        """n optimizer steps on random batches; returns windows processed."""
        self.model.train()
        done = 0
        for _ in range(n):
            batch = torch.randint(len(self.windows), (self.batch,), generator=self.gen)
            done += self._step(batch)
        return done

    def epoch(self) -> int:
        self.model.train()
        order = torch.randperm(len(self.windows), generator=self.gen)
        return sum(self._step(b) for b in order.split(self.batch))

    def _step(self, batch: torch.Tensor) -> int:
        x = self.split.gather(self.windows[batch], self.window)
        pred = self.model(x["visual"], x["visual_valid"], x["audio"], x["audio_valid"])
        loss = self.loss(pred.float(), x["labels"], x["label_mask"])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        return len(batch)


def bench_training(quick: bool, tmp: str) -> dict:
    (fusion, train), demo = fusion_and_train(), params("demo")
    frames = int(demo["fps"] * demo["seconds"])
    split = synthetic_split(demo["videos"], frames, 512, 512)
    steps, reps = (2, 2) if quick else (6, 5)
    trainers = {t: Trainer(t, split, train, fusion) for t in FUSION_TYPES}
    for trainer in trainers.values():
        trainer.steps(2)                                       # warm-up
    before = load()
    rates: dict[str, list[float]] = {t: [] for t in FUSION_TYPES}
    for rep in range(reps):                                    # round-robin: every type sees the same load
        order = FUSION_TYPES if rep % 2 == 0 else FUSION_TYPES[::-1]
        for t in order:
            seconds, _, n = timed(trainers[t].steps, steps)
            rates[t].append(n / seconds)
    params_count = {t: sum(p.numel() for p in tr.model.parameters()) for t, tr in trainers.items()}
    return {
        "inputs": {"features": "synthetic, 512-d visual and audio", "window": train["window"], "hop": train["hop"],
                   "batch_size": train["batch_size"], "steps_per_rep": steps, "device": "cpu",
                   "torch_threads": torch.get_num_threads(), "fusion": fusion},
        "reps": reps, "load_before": before, "load_after": load(),
        "windows_per_s": {t: [r(x) for x in v] for t, v in rates.items()},
        "parameters": params_count,
        "metrics": {**{f"train_windows_per_s_cpu_{t}": r(med(v)) for t, v in rates.items()},
                    "train_windows_per_s_gpu": NO_GPU if not torch.cuda.is_available() else "not implemented"},
    }


# ---------------------------------------------------------------- 1 + 5. the pipeline on a small demo

@contextlib.contextmanager
def project(root: str):
    """Library calls and stages inside act on the project at `root` (avfusion/paths.py) and run there,
    as dvc runs them."""
    old_cwd, old_root = os.getcwd(), os.environ.get(ROOT_ENV)
    os.environ[ROOT_ENV] = root
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        if old_root is None:
            os.environ.pop(ROOT_ENV)
        else:
            os.environ[ROOT_ENV] = old_root


def make_project(root: str, videos: int, demo: dict) -> list[dict]:
    """A throwaway project: the repository's params.yaml (demo resized), then its demo and dataset stages
    (videos, manifest, frame times). Returns the manifest rows (absolute paths)."""
    with open(os.path.join(REPO, "params.yaml")) as f:
        all_params = yaml.safe_load(f)
    all_params["demo"] = {**all_params["demo"], **demo, "videos": videos}
    all_params["data"] = {**all_params["data"], "source": "demo", "root": "data/demo"}
    os.makedirs(root)
    with open(os.path.join(root, "params.yaml"), "w") as f:
        yaml.safe_dump(all_params, f, sort_keys=False)
    with open(os.path.join(root, "dvc.yaml"), "w") as f:
        f.write("stages: {}\n")                  # with params.yaml, marks the project root
    with project(root), contextlib.redirect_stdout(io.StringIO()):
        stages.demo.main()
        stages.dataset.main()
        return read_manifest()


def extract_stage(root: str) -> dict:
    """The backbones' stages as `dvc repro` runs them (`python -m stages.extract <name>`, here in this
    process, in `root`): weight files, then stores. Seconds each."""
    out = {"total_s": 0.0, "cpu_s": 0.0}
    with project(root), contextlib.redirect_stdout(io.StringIO()):
        for name in BACKBONES:
            seconds, cpu, _ = timed(run_stage, get(name), load_params(name))
            out[f"{name}_s"] = seconds
            out["total_s"] += seconds
            out["cpu_s"] += cpu
    return out


def epoch_on(splits: tuple[Split, Split]) -> None:
    """One epoch of the train stage's `train_fold` (model build, one pass over the training windows,
    validation scoring) on already loaded (train, validation) splits."""
    fusion, train = fusion_and_train()
    with contextlib.redirect_stdout(io.StringIO()):
        train_fold(0, *splits, fusion, {**train, "epochs": 1}, "cpu", 0, 1, None)


def epoch_from_stores(train_rows, val_rows, facenet_dir, openl3_dir) -> None:
    """The same epoch, reading the splits from the feature stores first."""
    epoch_on((load_split(train_rows, facenet_dir, openl3_dir), load_split(val_rows, facenet_dir, openl3_dir)))


def recompute_epoch(rows: list[dict], facenet: Extractor, openl3: Extractor) -> None:
    """One epoch the way the reference implementations train: decode every video, run the face and
    audio networks on it, then train on the fresh features (nothing cached between epochs). Each video
    is embedded once per epoch here, although a windowed reference loader with hop < window embeds the
    overlapping frames twice: the cost counted for recomputing is a lower bound."""
    videos = {"train": [], "validation": []}
    for row in rows:
        if row["split"] not in videos:
            continue
        v = facenet.embedder.embed_video(row["path"])
        a_emb, a_valid = openl3.embedder.embed_video(row["path"], v["time"])
        labels = load_labels(row["labels"], len(v["time"]))
        n = len(labels)
        fit = lambda x, n=n: x[:n] if len(x) >= n else np.concatenate([x, np.zeros((n - len(x), *x.shape[1:]), x.dtype)])
        videos[row["split"]].append(Video(row["video_id"], fit(v["embedding"]), fit(v["valid"]),
                                          fit(a_emb), fit(a_valid), labels))
    epoch_on((Split(videos["train"]), Split(videos["validation"])))


def linear_fit(xs, ys) -> dict:
    slope, intercept = np.polyfit(xs, ys, 1)
    pred = np.polyval([slope, intercept], xs)
    ss_res, ss_tot = float(np.sum((np.array(ys) - pred) ** 2)), float(np.sum((np.array(ys) - np.mean(ys)) ** 2))
    return {"slope_s_per_unit": r(slope), "intercept_s": r(intercept),
            "r2": round(1 - ss_res / ss_tot, 4) if ss_tot else None,
            "ratio_4x_over_1x": r(ys[-1] / ys[0]), "ideal_ratio": xs[-1] / xs[0]}


def bench_pipeline(quick: bool, tmp: str) -> dict:
    demo_full = params("demo")
    # Units of 5 full-length demo videos (the fewest a demo has: one of each split; fewer, shorter ones
    # would let the fixed cost of loading the networks once per store hide the per-frame cost that
    # should grow linearly). --quick: the shortest videos (2 s) at 2 fps.
    demo = {"seconds": 2, "fps": 2} if quick else {}
    base = 5
    scales = (1, 2, 4)
    out: dict = {"inputs": {"demo": {**demo_full, **demo, "videos": f"{base} x scale"}, "scales": list(scales),
                            "base_videos": base, "stores": params("facenet")["stores"],
                            "extraction": "the facenet and openl3 stages (`run_stage`, as `python -m stages.extract "
                                          "<name>` runs them) in a throwaway project, one process"},
                 "load_before": load()}
    # 5a. extraction, 1x / 2x / 4x (each scale in a fresh project: no resume)
    extraction = {}
    projects = {}
    for scale in scales:
        root = os.path.join(tmp, f"x{scale}")
        rows = make_project(root, base * scale, demo)
        extraction[scale] = {**{k: r(v) for k, v in extract_stage(root).items()}, "videos": len(rows),
                             "frames": sum(int(row["label_frames"]) for row in rows), "load": load()}
        projects[scale] = (root, rows)
    out["extraction"] = {str(k): v for k, v in extraction.items()}
    out["extraction_fit"] = linear_fit(list(scales), [extraction[s]["total_s"] for s in scales])
    # CPU seconds of this process move less with other users' load than wall time does.
    out["extraction_cpu_fit"] = linear_fit(list(scales), [extraction[s]["cpu_s"] for s in scales])

    # 1. cached vs recompute, on the 4x project (--quick: 1x) (train + validation videos; test ones are not touched)
    root, rows = projects[scales[0] if quick else scales[-1]]
    train_rows = [row for row in rows if row["split"] == "train"]
    val_rows = [row for row in rows if row["split"] == "validation"]
    facenet_dir, openl3_dir = (os.path.join(root, "data", "features", name) for name in BACKBONES)
    load_s, _, splits = timed(lambda: (load_split(train_rows, facenet_dir, openl3_dir),
                                       load_split(val_rows, facenet_dir, openl3_dir)))
    with project(root):          # the stages' params and weight files (data/weights/<name>)
        facenet, openl3 = (get(name)(load_params(name), "cpu") for name in BACKBONES)
    facenet.ensure_loaded()
    openl3.ensure_loaded()
    epoch_on(splits)                                            # warm-up
    cached, cached_with_load, recompute, recompute_cpu = [], [], [], []
    recompute_reps = 1 if quick else 2
    cached_reps = 2 if quick else 6
    out["recompute_load"] = []
    for _rep in range(recompute_reps):                         # cached epochs bracket each recompute epoch
        for _ in range(cached_reps // (2 * recompute_reps) + 1):
            cached.append(timed(epoch_on, splits)[0])
            cached_with_load.append(timed(epoch_from_stores, train_rows, val_rows, facenet_dir, openl3_dir)[0])
        seconds, cpu_s, _ = timed(recompute_epoch, rows, facenet, openl3)
        recompute.append(seconds)
        recompute_cpu.append(cpu_s)
        out["recompute_load"].append(load())
        for _ in range(cached_reps // (2 * recompute_reps) + 1):
            cached.append(timed(epoch_on, splits)[0])
            cached_with_load.append(timed(epoch_from_stores, train_rows, val_rows, facenet_dir, openl3_dir)[0])
    fusion, train = fusion_and_train()
    windows = len(splits[0].windows(train["window"], train["hop"]))
    out["cached_vs_recompute"] = {
        "videos": {"train": len(train_rows), "validation": len(val_rows)}, "train_windows": windows,
        "epoch": "train_fold(epochs=1): model build, one pass over the training windows, validation scoring",
        "cached_epoch_s": [r(x) for x in cached], "cached_epoch_with_store_load_s": [r(x) for x in cached_with_load],
        "recompute_epoch_s": [r(x) for x in recompute], "recompute_epoch_cpu_s": [r(x) for x in recompute_cpu],
        "store_load_s": r(load_s),
        "median_cached_epoch_s": r(med(cached)), "median_cached_epoch_with_store_load_s": r(med(cached_with_load)),
        "median_recompute_epoch_s": r(med(recompute)),
        "speedup_including_store_load": r(med(recompute) / med(cached_with_load)),
    }

    # 5b. training time 1x / 2x / 4x: epochs on the same-shaped features of 1x, 2x, 4x the demo's size.
    frames = int(demo_full["fps"] * demo_full["seconds"])
    unit = 6 if quick else demo_full["videos"]
    trainers = {s: Trainer("jca", synthetic_split(unit * s, frames, 512, 512, seed=s), train, fusion)
                for s in scales}
    for t in trainers.values():
        t.epoch()
    epoch_s, epoch_cpu = {s: [] for s in scales}, {s: [] for s in scales}
    for rep in range(2 if quick else 5):
        for s in (scales if rep % 2 == 0 else scales[::-1]):
            seconds, cpu_s, _ = timed(trainers[s].epoch)
            epoch_s[s].append(seconds)
            epoch_cpu[s].append(cpu_s)
    out["training"] = {"features": f"synthetic, {unit} x scale videos of {frames} frames "
                                   "(the demo's video length), 512-d, jca",
                       "epoch_s": {str(s): [r(x) for x in v] for s, v in epoch_s.items()},
                       "median_epoch_s": {str(s): r(med(v)) for s, v in epoch_s.items()},
                       "median_epoch_cpu_s": {str(s): r(med(v)) for s, v in epoch_cpu.items()},
                       "windows": {str(s): len(trainers[s].windows) for s in scales}}
    out["training_fit"] = linear_fit(list(scales), [med(epoch_s[s]) for s in scales])
    out["training_cpu_fit"] = linear_fit(list(scales), [med(epoch_cpu[s]) for s in scales])
    out["load_after"] = load()
    out["reps"] = (f"extraction 1 per scale; epochs: recompute {len(recompute)}, cached {len(cached)}; "
                   f"scaling epochs {len(epoch_s[1])}")
    out["metrics"] = {
        "cached_vs_recompute_speedup": r(med(recompute) / med(cached)),
        "extraction_scaling_ratio_4x_over_1x": out["extraction_fit"]["ratio_4x_over_1x"],
        "extraction_seconds_per_video": r(out["extraction_fit"]["slope_s_per_unit"] / base),
        "extraction_scaling_cpu_ratio_4x_over_1x": out["extraction_cpu_fit"]["ratio_4x_over_1x"],
        "training_scaling_ratio_4x_over_1x": out["training_fit"]["ratio_4x_over_1x"],
        "training_scaling_cpu_ratio_4x_over_1x": out["training_cpu_fit"]["ratio_4x_over_1x"],
    }
    return out


# ---------------------------------------------------------------- 5c. store file count

def bench_store_files(quick: bool, tmp: str) -> dict:
    counts = (10, 40) if quick else (10, 100, 300)
    stores = params("facenet")["stores"]
    rng = np.random.default_rng(0)
    lengths = rng.integers(150, 451, max(counts))
    rows = []
    for n in counts:
        directory = os.path.join(tmp, f"n{n}")
        videos = [(f"video-{i:05d}", int(k)) for i, k in enumerate(lengths[:n])]
        seconds, _, _ = timed(write_stores, directory, videos, stores, 512)
        files, size = files_and_bytes(directory)
        rows.append({"videos": n, "rows": int(sum(k for _, k in videos)), "stores": stores, "files": files,
                     "mb": round(size / 1e6, 1), "write_s": r(seconds), "source": "this run"})
        shutil.rmtree(directory)
    scale_report = os.path.join(REPO, "reports", "store_scale.json")
    if os.path.exists(scale_report):
        with open(scale_report) as f:
            report = json.load(f)
        for res in report["results"]:
            rows.append({"videos": report["videos"], "rows": report["rows"], "stores": res["stores"],
                         "files": res["files"], "mb": round(res["bytes"] / 1e6, 1), "write_s": res["write_s"],
                         "source": "reports/store_scale.json (benchmarks/bench_store_scale.py)"})
    big = [row for row in rows if row["stores"] == stores]
    return {"inputs": {"frames_per_video": "150-450", "dim": 512, "stores": stores}, "reps": 1,
            "load_before": load(),
            "rows": rows, "load_after": load(),
            "metrics": {"store_files_per_video_at_max": r(big[-1]["files"] / big[-1]["videos"]),
                        "store_files_at_max_videos": big[-1]["files"], "store_max_videos": big[-1]["videos"]}}


# ---------------------------------------------------------------- report

SECTIONS = {"store_read": bench_store_read, "extraction": bench_extraction, "training": bench_training,
            "store_files": bench_store_files, "pipeline": bench_pipeline}


def machine() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "git_commit": commit.stdout.strip()}


def verdict(name: str, value) -> str:
    if name not in TARGETS:
        return ""
    if not isinstance(value, (int, float)):
        return "unmeasured"
    op, target = TARGETS[name]
    return "met" if value >= target else "missed"


def markdown(report: dict) -> str:
    lines = ["# Benchmarks", "",
             f"`benchmarks/bench.py` ({'--quick smoke run' if report.get('quick') else 'full run'}), "
             f"{report['machine']['cpu']}, {report['machine']['cores']} cores, torch {report['machine']['torch']} "
             f"({report['machine']['torch_threads']} threads), commit {report['machine']['git_commit']}. "
             "Medians of repeated runs; the compared things alternate within each repetition. "
             "The machine is shared: load average (1 min) is given per section. Details and every sample: "
             "`reports/bench.json`.", "",
             "| metric | value | target | | section (reps, load before → after) |", "|---|---|---|---|---|"]
    for section, result in report["sections"].items():
        where = (f"{section} ({result.get('reps', '-')} reps, load {result.get('load_before')} → "
                 f"{result.get('load_after')}, {result.get('finished', '')[:16]})")
        for name, value in result["metrics"].items():
            target = " ".join(map(str, TARGETS[name])) if name in TARGETS else ""
            lines.append(f"| `{name}` | {value} | {target} | {verdict(name, value)} | {where} |")
    pipe = report["sections"].get("pipeline")
    if pipe:
        cvr = pipe["cached_vs_recompute"]
        lines += ["", "## Cached features vs recomputing them every epoch", "",
                  f"{cvr['videos']['train']} training + {cvr['videos']['validation']} validation demo videos "
                  f"({cvr['train_windows']} training windows). One epoch = `train_fold` with `epochs: 1` (model "
                  "build, one pass, validation scoring).", "",
                  "| epoch | median s | samples |", "|---|---|---|",
                  f"| cached, splits in memory (as `train` runs every epoch after the first) | "
                  f"{cvr['median_cached_epoch_s']} | {len(cvr['cached_epoch_s'])} |",
                  f"| cached, reading the stores first | {cvr['median_cached_epoch_with_store_load_s']} | "
                  f"{len(cvr['cached_epoch_with_store_load_s'])} |",
                  f"| recompute: decode + MTCNN + InceptionResnetV1 + OpenL3, then train | "
                  f"{cvr['median_recompute_epoch_s']} | {len(cvr['recompute_epoch_s'])} |", "",
                  f"Speedup {pipe['metrics']['cached_vs_recompute_speedup']}× (store load included: "
                  f"{cvr['speedup_including_store_load']}×).", "",
                  "## Scaling", "", "| scale | videos | frames | facenet s | openl3 s | extraction s | "
                  "train epoch s (demo-size features × scale) |", "|---|---|---|---|---|---|---|"]
        for s in pipe["inputs"]["scales"]:
            e = pipe["extraction"][str(s)]
            lines.append(f"| {s}× | {e['videos']} | {e['frames']} | {e['facenet_s']} | {e['openl3_s']} | "
                         f"{e['total_s']} | {pipe['training']['median_epoch_s'][str(s)]} |")
        ef, tf = pipe["extraction_fit"], pipe["training_fit"]
        lines += ["", f"Linear fits: extraction {ef['slope_s_per_unit']} s per scale unit + {ef['intercept_s']} s "
                  f"(r² {ef['r2']}, 4×/1× = {ef['ratio_4x_over_1x']}); training {tf['slope_s_per_unit']} s per "
                  f"unit + {tf['intercept_s']} s (r² {tf['r2']}, 4×/1× = {tf['ratio_4x_over_1x']}). The "
                  "intercept is the per-run fixed cost (loading the networks, hashing the weights, opening stores). "
                  f"In CPU seconds of the process (less sensitive to other users' load): extraction 4×/1× = "
                  f"{pipe['extraction_cpu_fit']['ratio_4x_over_1x']} (r² {pipe['extraction_cpu_fit']['r2']}), "
                  f"training 4×/1× = {pipe['training_cpu_fit']['ratio_4x_over_1x']} "
                  f"(r² {pipe['training_cpu_fit']['r2']})."]
    files = report["sections"].get("store_files")
    if files:
        lines += ["", "## Feature-store files vs videos", "", "| videos | stores | files | MB | source |",
                  "|---|---|---|---|---|"]
        lines += [f"| {row['videos']} | {row['stores']} | {row['files']} | {row['mb']} | {row['source']} |"
                  for row in files["rows"]]
    ext = report["sections"].get("extraction")
    if ext:
        lines += ["", "## Extraction", ""]
        for name, v in ext["facenet"].items():
            lines.append(f"- facenet {name}: {v['median_frames_per_s']} frames/s end to end, decode-only "
                         f"{v['median_decode_only_frames_per_s']} frames/s, {v['cpu_seconds_per_frame']} CPU s/frame, "
                         f"face found in {v['share_of_frames_with_face']:.0%} of frames")
        af = ext["openl3_flops"]
        lines.append(f"- openl3: {ext['openl3']['median_audio_seconds_per_second']} s of audio per second "
                     f"({ext['openl3']['params']}); network {af['median_network_gflops']} GFLOP/s vs "
                     f"{af['matmul']} matmul {af['median_matmul_gflops']} GFLOP/s")
    lines += ["", "GPU rows: " + (NO_GPU + " (this run had no CUDA device)." if not report["machine"]["cuda"]
                                  else report["machine"]["cuda"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="run these sections only")
    parser.add_argument("--quick", action="store_true", help="small inputs, few repetitions: a smoke check")
    parser.add_argument("--out", help="path stem for .json and .md (default: reports/bench; with --quick "
                                      "a temporary directory, so a smoke run never replaces the committed numbers)")
    parser.add_argument("--video", help="a real video with faces and speech for the extraction section "
                                        "(1080p, a few seconds); without it that section is skipped")
    args = parser.parse_args()
    sections = dict(SECTIONS, extraction=functools.partial(bench_extraction, video=args.video))
    names = args.only or list(SECTIONS)
    if "extraction" in names and not (args.video and os.path.isfile(args.video)):
        print(f"== extraction skipped: --video {args.video or 'PATH'} is not a file (it needs a real clip "
              "with faces and speech)", flush=True)
        names = [name for name in names if name != "extraction"]
    if args.out is None:
        args.out = (os.path.join(tempfile.gettempdir(), "avfusion-bench-quick", "bench") if args.quick
                    else os.path.join(REPO, "reports", "bench"))
    report = {"sections": {}}
    if os.path.exists(args.out + ".json"):
        with open(args.out + ".json") as f:
            old = json.load(f)
        if bool(old.get("quick")) == args.quick:      # never mix quick and full sections in one report
            report = old
    report.update(quick=args.quick, machine=machine())
    for name in names:
        print(f"== {name} (load {load()})", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            began = time.perf_counter()
            result = sections[name](args.quick, tmp)
        result["section_s"] = round(time.perf_counter() - began, 1)
        result["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        report["sections"][name] = result
        print(json.dumps(result["metrics"], indent=1), f"({result['section_s']} s)", flush=True)
        report["sections"] = {k: report["sections"][k] for k in SECTIONS if k in report["sections"]}
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out + ".json", "w") as f:
            json.dump(report, f, indent=2)
        with open(args.out + ".md", "w") as f:
            f.write(markdown(report))
    print(f"wrote {args.out}.json and {args.out}.md")


if __name__ == "__main__":
    main()
