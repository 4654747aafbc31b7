"""The evaluation's bootstrap at Aff-Wild2 size: `python benchmarks/bench_bootstrap.py [--frames 2800000]`.

Synthetic predictions and labels for `--videos` videos of log-normal lengths summing to `--frames`
(Aff-Wild2's VA set: about 2.8 M frames in 564 videos), 10% of the labels -5. Times the per-video
moments (one pass over the frames), the 1,000 resamples from them (avfusion/learning/metrics.py
`bootstrap_interval`), and, for scale, one resample done the plain way (concatenate the drawn videos'
frames, then CCC), checking on a few resamples that both give the same CCCs. Writes reports/bootstrap.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from avfusion.learning.metrics import (  # noqa: E402
    INVALID,
    bootstrap_cccs,
    bootstrap_interval,
    resample_counts,
    split_ccc,
    video_moments,
)


def synthetic(videos: int, frames: int, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    lengths = rng.lognormal(0, 0.8, videos)
    lengths = np.maximum(1, np.round(lengths / lengths.sum() * frames)).astype(int)
    lengths[-1] += frames - lengths.sum()
    out = []
    for n in lengths:
        true = np.clip(np.cumsum(rng.normal(0, 0.02, (n, 2)), axis=0), -1, 1).astype(np.float32)
        pred = np.clip(true + rng.normal(0, 0.3, true.shape), -1, 1).astype(np.float32)
        true[rng.random(n) < 0.1] = INVALID
        out.append((pred, true))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=564)
    parser.add_argument("--frames", type=int, default=2_800_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", help="default: reports/bootstrap.json; --quick: a temporary directory")
    parser.add_argument("--quick", action="store_true", help="50 videos, 100,000 frames, 100 resamples")
    args = parser.parse_args()
    if args.quick:
        args.videos, args.frames, args.resamples = 50, 100_000, 100
    args.out = args.out or (os.path.join(tempfile.gettempdir(), "avfusion-bench-quick", "bootstrap.json")
                            if args.quick else os.path.join(REPO, "reports", "bootstrap.json"))
    videos = synthetic(args.videos, args.frames, np.random.default_rng(0))

    started = time.perf_counter()
    moments = np.stack([video_moments(p, t) for p, t in videos])
    seconds_moments = time.perf_counter() - started
    started = time.perf_counter()
    got = bootstrap_interval(moments, args.resamples, seed=0)
    seconds_resamples = time.perf_counter() - started

    counts = resample_counts(len(videos), 3, seed=1)
    fast = bootstrap_cccs(moments, counts)
    started = time.perf_counter()
    largest = 0.0
    for row, drawn in zip(fast, counts):
        picked = [v for v, c in zip(videos, drawn) for _ in range(int(c))]
        plain = split_ccc(np.concatenate([p for p, _ in picked]), np.concatenate([t for _, t in picked]))
        largest = max(largest, float(np.max(np.abs(row - [plain["valence"], plain["arousal"], plain["mean"]]))))
    seconds_plain = (time.perf_counter() - started) / len(counts)

    report = {"videos": len(videos), "frames": int(sum(len(p) for p, _ in videos)), "resamples": args.resamples,
              "interval": got, "largest_difference_to_concatenation": largest,
              "seconds": {"moments": round(seconds_moments, 3), "resamples": round(seconds_resamples, 3),
                          "concatenate_per_resample": round(seconds_plain, 3)},
              "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                          "numpy": np.__version__, "load_average": os.getloadavg()[0]}}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(json.dumps(report["seconds"]), f"largest difference {largest:.1e}")


if __name__ == "__main__":
    main()
