"""Frames per second of the plug-in extractors (every registered extractor but the backbones: vad,
egemaps, logmel, mfcc, expression, landmarks) on a 1080p clip, each as its stage runs it
(`Extractor.rows` of one video, given its frame times as the dataset stage stored them).

    python benchmarks/bench_extractors.py --video PATH [--reps 5] [--seconds 0] [--quick] [--report PATH]

PATH: a real 1080p clip with faces and sound (the shared street clip suits); `--seconds N` re-encodes
its first N seconds first (0: the whole clip). The extractors on faces (expression, landmarks) read the
facenet rows of the clip, made once here (`facenet` is timed on that one run, for context); they are
timed on `on_faces`, what their stage does per video after reading the facenet store. `decode_only`
(every frame decoded to RGB) is the floor of what an extractor that decodes the video pays. expression
runs fer's trained weights (the test fixture); the others' weights are seeded random (speed does not
depend on the values). The extractors run in turn within every repetition (a shared machine's load
hits all alike); medians of the repetitions. torch keeps its default threads (the cores); the load
average is recorded. Merged into reports/bench.json under `extractor_speed` (other keys kept).
`--quick`: the first second, one repetition, into a temporary report unless --report is given.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

from bench import built, clip, decode_only, load, med, merge_into_report, r, timed

from avfusion.extraction.base import Video
from avfusion.extraction.registry import get, names
from avfusion.sources.media import frame_times, probe

WEIGHTS = {"expression": os.path.join(REPO, "tests", "fixtures", "expression", "emotion_model.hdf5")}


def plugins() -> list[str]:
    """The registered extractors that are not backbones and can run here (an optional package missing
    is said once)."""
    found = []
    for name in names():
        cls = get(name)
        if cls.backbone:
            continue
        reason = cls.available()
        if reason:
            print(f"{name}: skipped ({reason})")
        else:
            found.append(name)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", required=True, help="a real 1080p clip with faces and sound")
    parser.add_argument("--seconds", type=float, default=0, help="time its first N seconds only (0: all)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="the first second, one repetition")
    parser.add_argument("--report", help="default: reports/bench.json (--quick: a temporary file)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.reps = 1, 1
    args.report = args.report or (os.path.join(tempfile.gettempdir(), "avfusion-bench-quick", "bench.json")
                                  if args.quick else os.path.join(REPO, "reports", "bench.json"))
    if not os.path.isfile(args.video):
        print(f"skipped: --video {args.video} is not a file (it needs a real 1080p clip)")
        return

    with tempfile.TemporaryDirectory() as tmp:
        info = probe(args.video)
        video = args.video
        if args.seconds:
            video = clip(args.video, os.path.join(tmp, "head.mp4"), frames=round(args.seconds * info.fps))
        load_before = load()
        extractors = {name: built(name, os.path.join(tmp, name), **({"weights": WEIGHTS[name]} if name in WEIGHTS else {}))
                      for name in plugins()}
        facenet = built("facenet", os.path.join(tmp, "facenet"))
        clip_video = Video("clip", video, frame_times(video))     # the times the dataset stage stores
        seconds, cpu, faces = timed(facenet.rows, clip_video)
        frames = len(faces["time"])
        result = {"facenet": {"frames_per_s": [r(frames / seconds)], "cpu_seconds_per_frame": r(cpu / frames),
                              "note": "one run, for context (bench_visual.py measures it properly); its "
                                      "rows feed the extractors on faces"}}

        def run(extractor):
            return extractor.on_faces(clip_video, faces) if extractor.reads_faces else extractor.rows(clip_video)

        for extractor in extractors.values():      # warm-up: allocations, kernel choice, openSMILE start
            run(extractor)
        samples = {name: ([], []) for name in ("decode_only", *extractors)}
        for _ in range(args.reps):
            seconds, cpu, _ = timed(decode_only, video)
            samples["decode_only"][0].append(frames / seconds)
            samples["decode_only"][1].append(cpu / frames)
            for name, extractor in extractors.items():
                seconds, cpu, rows = timed(run, extractor)
                assert len(rows["time"]) == frames, name
                samples[name][0].append(frames / seconds)
                samples[name][1].append(cpu / frames)
        for name, (fps, cpu) in samples.items():
            result[name] = {"frames_per_s": [r(x) for x in fps], "median_frames_per_s": r(med(fps)),
                            "cpu_seconds_per_frame": r(med(cpu))}
        report = {
            "input": f"{os.path.relpath(args.video, REPO) if args.video.startswith(REPO) else os.path.basename(args.video)}"
                     f" ({info.width}x{info.height}, {info.fps:g} fps), "
                     + (f"first {args.seconds:g} s re-encoded (H.264 crf 18)" if args.seconds else "whole clip")
                     + f", {frames} frames; face found in {faces['valid'].mean():.0%} of them",
            "what": "Extractor.rows of one video as the stage runs it, frame times given (the dataset stage's); "
                    "the audio extractors read the audio only; the extractors on faces: on_faces on the facenet "
                    "rows (expression decodes and crops every face; landmarks only normalises the stored points: "
                    "no decoding)",
            "landmarks_in_facenet": "the five points are the O-net output that facenet's detection already "
                                    "computes; turning them into pixels is a few multiply-adds per O-net "
                                    "candidate, so facenet with and without them is not separately measurable",
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "reps": args.reps,
            "load_before": load_before, "load_after": load(), "extractors": result}
    os.makedirs(os.path.dirname(args.report), exist_ok=True)
    merge_into_report(args.report, "extractor_speed", report)
    for name, v in result.items():
        print(f"{name}: {v.get('median_frames_per_s', v['frames_per_s'][0])} frames/s, "
              f"{v['cpu_seconds_per_frame']} CPU s/frame")
    print(f"load {report['load_before']} -> {report['load_after']}; wrote extractor_speed in {args.report}")


if __name__ == "__main__":
    main()
