"""Audio extractors with the dataset stage's frame times against decoding the video for them, side by side.

Before, every audio extractor decoded the whole video only to learn its frame timestamps; now the
dataset stage decodes each media file once and the extractors read the times from data/frame_times/.
Per extractor (vad, egemaps, logmel, mfcc) and repetition, in alternating order: the old path
(`media.frame_times` + the descriptor) and the new one (the cached times + the descriptor), on a 1080p
clip, with the rows compared byte for byte. Medians and their ratio go to reports/frame_times.json and
reports/frame_times.md.

    .venv/bin/python benchmarks/bench_frame_times.py [--video PATH] [--reps 5] [--quick] [--out STEM]

`--quick`: one repetition, into a temporary directory unless --out is given (a smoke check).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# real clips are not in the repository: a folder of them is named by AVFUSION_MEDIA or each script's option
STREET = os.path.join(os.environ["AVFUSION_MEDIA"], "street_crowd_1080p25.mp4") if "AVFUSION_MEDIA" in os.environ else ""
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO]

import numpy as np

from avfusion.extraction.base import Video
from avfusion.extraction.registry import get
from avfusion.paths import file_sha256
from avfusion.sources.manifest import read_frame_times, write_frame_times
from avfusion.sources.media import frame_times, probe

NAMES = ("vad", "egemaps", "logmel", "mfcc")


def timed(function):
    began, cpu = time.perf_counter(), time.process_time()
    out = function()
    return out, time.perf_counter() - began, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=STREET, help="a real 1080p clip with sound")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one repetition")
    parser.add_argument("--out", help="path stem for .json and .md (default: reports/frame_times; --quick: a "
                                      "temporary directory)")
    args = parser.parse_args()
    if not os.path.isfile(args.video):
        print(f"bench_frame_times: skipped: {args.video} not found (a real clip with sound: give --video or set AVFUSION_MEDIA)")
        return
    if args.quick:
        args.reps = 1
    args.out = args.out or (os.path.join(tempfile.gettempdir(), "avfusion-bench-quick", "frame_times") if args.quick
                            else os.path.join(REPO, "reports", "frame_times"))
    info = probe(args.video)
    row = {"sha256": file_sha256(args.video), "path": args.video}
    results = {"video": os.path.basename(args.video), "source": f"{info.width}x{info.height}, {info.fps:g} fps",
               "frames": None, "reps": args.reps, "cpus": os.cpu_count(), "load_before": os.getloadavg()[0],
               "extractors": {}}
    with tempfile.TemporaryDirectory() as cache:
        (times, decode_s, decode_cpu) = timed(lambda: frame_times(args.video))   # the dataset stage, once
        write_frame_times(row["sha256"], times, cache)
        results["frames"], results["dataset_stage_decode_s"] = len(times), decode_s
        for name in NAMES:
            cls = get(name)
            reason = cls.available()
            if reason:
                print(f"{name}: skipped ({reason})")
                continue
            extractor = cls(cls.settings({"params": {}}), "cpu")
            extractor.ensure_loaded()
            old_s, new_s, old_cpu, new_cpu, identical = [], [], [], [], True
            for rep in range(args.reps):
                def old(extractor=extractor, name=name):
                    return extractor.rows(Video(name, args.video, frame_times(args.video)))

                def new(extractor=extractor, name=name):
                    return extractor.rows(Video(name, args.video, read_frame_times(row, cache)))
                order = (old, new) if rep % 2 == 0 else (new, old)
                outs = {}
                for function in order:
                    outs[function.__name__], wall, cpu = timed(function)
                    (old_s if function is old else new_s).append(wall)
                    (old_cpu if function is old else new_cpu).append(cpu)
                identical &= all(np.array_equal(outs["old"][k], outs["new"][k]) for k in ("embedding", "valid", "time"))
            results["extractors"][name] = {
                "decode_for_times_s": statistics.median(old_s), "cached_times_s": statistics.median(new_s),
                "speedup": statistics.median(old_s) / statistics.median(new_s),
                "frames_per_s_before": len(times) / statistics.median(old_s),
                "frames_per_s_after": len(times) / statistics.median(new_s),
                "cpu_s_per_frame_before": statistics.median(old_cpu) / len(times),
                "cpu_s_per_frame_after": statistics.median(new_cpu) / len(times),
                "rows_byte_identical": bool(identical)}
            r = results["extractors"][name]
            print(f"{name}: {r['frames_per_s_before']:.0f} -> {r['frames_per_s_after']:.0f} frames/s "
                  f"({r['speedup']:.1f}x), rows identical: {identical}")
    results["load_after"] = os.getloadavg()[0]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    lines = [f"# Frame times once per file: audio extractors before and after ({results['video']}, "
             f"{results['source']}, {results['frames']} frames)", "",
             f"Medians of {args.reps} side-by-side repetitions in alternating order, {results['cpus']} CPUs, load "
             f"average {results['load_before']:.1f} -> {results['load_after']:.1f}. `benchmarks/bench_frame_times.py`.",
             f"The dataset stage decodes the file once for its times: {results['dataset_stage_decode_s']:.1f} s.", "",
             "| extractor | before: decode for times (frames/s) | after: cached times (frames/s) | speed-up | "
             "CPU s/frame before | after | rows byte-identical |", "|---|---|---|---|---|---|---|"]
    for name, r in results["extractors"].items():
        lines.append(f"| `{name}` | {r['frames_per_s_before']:.0f} | {r['frames_per_s_after']:.0f} | "
                     f"{r['speedup']:.1f}x | {r['cpu_s_per_frame_before']:.4f} | {r['cpu_s_per_frame_after']:.4f} | "
                     f"{'yes' if r['rows_byte_identical'] else 'NO'} |")
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
