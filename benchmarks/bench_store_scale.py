"""Feature stores at scale (run on demand, not part of the suite):

    .venv/bin/python benchmarks/bench_store_scale.py [--videos 1000] [--stores 4 16] [--quick] [--out STEM]

Writes synthetic videos (about 300 frames each, 512-d float32) through `StoreWriter` into `stores`
buckets exactly as the extraction stages do, then measures what docs/design.md §5 cares about: the file
count DVC has to hash and move, `dvc add` / `dvc push` / `dvc pull` time against a local-directory
remote (a fresh `git clone` pulls), the push after appending a few videos, and the latency of random
300-frame window reads. Results go to reports/store_scale.json and reports/store_scale.md.
`--quick`: 20 videos in 4 stores, 20 reads, into a temporary directory unless --out is given.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from avfusion.store.layout import bucket_of, store_path
from avfusion.store.reader import FeatureReader
from avfusion.store.writer import StoreWriter

FEATURES = "data/features/facenet"     # one extractor's stores, as the pipeline keeps them


def sh(cmd: list[str], cwd: str) -> float:
    """Run a command, fail loudly, return its wall time."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - began


def dvc(*args: str, cwd: str) -> float:
    return sh([sys.executable, "-m", "dvc", *args], cwd)


def synthetic(video_id: str, frames: int, dim: int) -> dict:
    rng = np.random.default_rng(zlib.crc32(video_id.encode()))
    return {"embedding": rng.standard_normal((frames, dim), dtype=np.float32),
            "valid": rng.random(frames) > 0.05, "frame": np.arange(frames),
            "time": np.arange(frames) / 30.0}


def write_stores(directory: str, videos: list[tuple[str, int]], stores: int, dim: int) -> float:
    """One writer per store, videos in manifest order, as the stages do (sequentially here)."""
    began = time.perf_counter()
    for b in range(stores):
        mine = [(v, n) for v, n in videos if bucket_of(v, stores) == b]
        writer = StoreWriter(store_path(directory, b), dim, {"extractor": "bench/1"}, [v for v, _ in mine])
        for vid, n in mine:
            if vid not in writer.committed:
                writer.append(vid, **synthetic(vid, n, dim))
    return time.perf_counter() - began


def files_and_bytes(directory: str) -> tuple[int, int]:
    count = size = 0
    for root, _, names in os.walk(directory):
        for name in names:
            count += 1
            size += os.path.getsize(os.path.join(root, name))
    return count, size


def window_latency(directory: str, window: int, reads: int, seed: int = 0) -> dict:
    """Random `window`-frame windows of random videos, all columns a training window needs."""
    reader = FeatureReader(directory)
    rng = np.random.default_rng(seed)
    ids = reader.videos
    times = []
    for _ in range(reads):
        vid = ids[rng.integers(len(ids))]
        start = int(rng.integers(max(1, reader.length(vid) - window + 1)))
        began = time.perf_counter()
        rows = reader.rows(vid, start=start, stop=start + window)
        times.append(time.perf_counter() - began)
        assert len(rows["embedding"]) == min(window, reader.length(vid) - start)
    ms = np.array(times) * 1e3
    return {"reads": reads, "p50_ms": round(float(np.median(ms)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "max_ms": round(float(ms.max()), 2)}


def bench(stores: int, videos: list[tuple[str, int]], extra: list[tuple[str, int]], dim: int,
          window: int, reads: int, root: str) -> dict:
    repo, remote, clone = (os.path.join(root, name) for name in ("repo", "remote", "clone"))
    os.makedirs(os.path.join(repo, FEATURES))
    sh(["git", "init", "-q", "-b", "main"], repo)
    dvc("init", "-q", cwd=repo)
    dvc("remote", "add", "-d", "local", remote, cwd=repo)
    sh(["git", "commit", "-qam", "init"], repo)

    out = {"stores": stores}
    out["write_s"] = round(write_stores(os.path.join(repo, FEATURES), videos, stores, dim), 2)
    out["files"], size = files_and_bytes(os.path.join(repo, FEATURES))
    out["bytes"] = size
    out["videos_per_file"] = round(len(videos) / out["files"], 1)
    out["dvc_add_s"] = round(dvc("add", "-q", FEATURES, cwd=repo), 2)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "features"], repo)
    out["dvc_push_s"] = round(dvc("push", "-q", cwd=repo), 2)
    out["dvc_status_cloud_s"] = round(dvc("status", "-c", "-q", cwd=repo), 2)

    sh(["git", "clone", "-q", repo, clone], root)        # a teammate: empty cache, same remote
    out["dvc_pull_s"] = round(dvc("pull", "-q", cwd=clone), 2)
    assert files_and_bytes(os.path.join(clone, FEATURES)) == (out["files"], size)

    # Appending videos rewrites only the last shard of each array and the metadata.
    write_stores(os.path.join(repo, FEATURES), videos + extra, stores, dim)
    out["append_videos"] = len(extra)
    out["append_dvc_add_s"] = round(dvc("add", "-q", FEATURES, cwd=repo), 2)
    out["append_dvc_push_s"] = round(dvc("push", "-q", cwd=repo), 2)

    out["window"] = window_latency(os.path.join(clone, FEATURES), window, reads)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=300, help="mean frames per video (150%% spread)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--stores", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--window", type=int, default=300)
    parser.add_argument("--reads", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="20 videos, 4 stores, 20 reads: a smoke check")
    parser.add_argument("--out", help="path stem for .json and .md (default: reports/store_scale; --quick: "
                                      "a temporary directory)")
    args = parser.parse_args()
    if args.quick:
        args.videos, args.stores, args.reads = 20, [4], 20
    args.out = args.out or (os.path.join(tempfile.gettempdir(), "avfusion-bench-quick", "store_scale") if args.quick
                            else os.path.join(REPO, "reports", "store_scale"))

    rng = np.random.default_rng(0)
    lengths = rng.integers(args.frames // 2, args.frames * 3 // 2 + 1, args.videos + 10)
    all_videos = [(f"video-{i:05d}", int(n)) for i, n in enumerate(lengths)]
    videos, extra = all_videos[:args.videos], all_videos[args.videos:]
    results = []
    for stores in args.stores:
        with tempfile.TemporaryDirectory(prefix="store-scale-") as root:
            results.append(bench(stores, videos, extra, args.dim, args.window, args.reads, root))
        print(json.dumps(results[-1]), flush=True)
    report = {"videos": args.videos, "rows": int(sum(n for _, n in videos)), "dim": args.dim,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
              "remote": "local directory (same disk)", "results": results}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(report, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(markdown(report))
    print(f"wrote {args.out}.json and {args.out}.md")


def markdown(report: dict) -> str:
    lines = ["# Feature stores at scale\n",
             f"{report['videos']} synthetic videos, {report['rows']} frames, {report['dim']}-d float32 "
             f"embeddings, written through `StoreWriter` ({report['machine']}; remote: {report['remote']}). "
             f"Produced by `benchmarks/bench_store_scale.py`.\n",
             "| stores | files | videos/file | MB | write s | dvc add s | dvc push s | dvc status -c s | "
             "dvc pull s (fresh clone) | +10 videos: add s / push s | 300-frame read p50 / p95 ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['stores']} | {r['files']} | {r['videos_per_file']} | {r['bytes'] / 1e6:.0f} | "
                     f"{r['write_s']} | {r['dvc_add_s']} | {r['dvc_push_s']} | {r['dvc_status_cloud_s']} | "
                     f"{r['dvc_pull_s']} | {r['append_dvc_add_s']} / {r['append_dvc_push_s']} | "
                     f"{r['window']['p50_ms']} / {r['window']['p95_ms']} |")
    lines += ["",
              "Files per store: a group and 5 array metadata files, one shard file for each of the 4 per-row "
              "columns, and one per 16,384 rows of embeddings, so the count grows with `stores`, not with "
              "the number of videos. Window reads: embedding, valid, frame and time of a random 300-frame "
              "window of a random video through `FeatureReader.rows`, from a fresh clone after `dvc pull` "
              "(page cache warm)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
