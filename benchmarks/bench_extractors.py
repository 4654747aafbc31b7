"""Frames per second of the plug-in extractors (vad, egemaps, logmel, mfcc, expression, landmarks) on a
1080p clip, each as its stage runs it (`Extractor.rows` of one video: decoding included).

    python benchmarks/bench_extractors.py --video PATH [--reps 5] [--seconds 0]

PATH: a real 1080p clip with faces and sound (the shared street clip suits); `--seconds N` re-encodes
its first N seconds first (0: the whole clip). expression and landmarks read the facenet rows of the
clip, made once here (`facenet` is timed on that one run, for context); they are timed on
`on_faces`, what their stage does per video after reading the visual store. `decode_only` (every frame
decoded to RGB) is about what the audio extractors pay for their frame times; `<name>_given_times` times
the audio descriptor alone (frame times given, as on a low-resolution video). The extractors run in
turn within every repetition (a shared machine's load hits all alike); medians of the repetitions.
torch keeps its default threads (the cores); the load average is recorded. Merged into
reports/bench.json under `extractor_speed` (other keys kept).
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

from bench import clip, decode_only, load, med, merge_into_report, params, r, timed  # noqa: E402

from avfusion.extraction.registry import EXTRACTORS
from avfusion.faces.embedder import random_state_dict
from avfusion.sources.media import probe

AUDIO = ("vad", "egemaps", "logmel", "mfcc")
ON_FACES = ("expression", "landmarks")
EXPRESSION_WEIGHTS = os.path.join(REPO, "tests", "fixtures", "expression", "emotion_model.hdf5")


def build(name: str, weights: str | None = None):
    cls = EXTRACTORS[name]
    extractor = cls(params(cls.name), "cpu")
    if weights:
        extractor.weights = weights
    extractor.load()
    return extractor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", required=True, help="a real 1080p clip with faces and sound")
    parser.add_argument("--seconds", type=float, default=0, help="time its first N seconds only (0: all)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--report", default=os.path.join(REPO, "reports", "bench.json"))
    args = parser.parse_args()
    if not os.path.isfile(args.video):
        print(f"skipped: --video {args.video} is not a file (it needs a real 1080p clip)")
        return

    with tempfile.TemporaryDirectory() as tmp:
        info = probe(args.video)
        video = args.video
        if args.seconds:
            video = clip(args.video, os.path.join(tmp, "head.mp4"), frames=round(args.seconds * info.fps))
        load_before = load()
        facenet_weights = os.path.join(tmp, "visual.pt")
        torch.save(random_state_dict(0), facenet_weights)
        extractors = {name: build(name) for name in AUDIO}
        extractors["expression"] = build("expression", EXPRESSION_WEIGHTS)
        extractors["landmarks"] = build("landmarks")
        facenet = build("facenet", facenet_weights)
        row = {"video_id": "clip", "path": video, "person": ""}
        seconds, cpu, faces = timed(facenet.rows, row)
        frames = len(faces["time"])
        result = {"facenet": {"frames_per_s": [r(frames / seconds)], "cpu_seconds_per_frame": r(cpu / frames),
                              "note": "one run, for context (bench_visual.py measures it properly); its "
                                      "rows feed expression and landmarks"}}
        for name, extractor in extractors.items():      # warm-up: allocations, kernel choice, openSMILE start
            extractor.on_faces(video, faces) if name in ON_FACES else extractor.rows(row)
        times = faces["time"]
        samples = {name: ([], []) for name in ("decode_only", *extractors, *(f"{n}_given_times" for n in AUDIO))}
        for _ in range(args.reps):
            seconds, cpu, _ = timed(decode_only, video)     # what every frame-aligned extractor pays at least
            samples["decode_only"][0].append(frames / seconds)
            samples["decode_only"][1].append(cpu / frames)
            for name, extractor in extractors.items():
                if name in ON_FACES:
                    seconds, cpu, rows = timed(extractor.on_faces, video, faces)
                else:
                    seconds, cpu, rows = timed(extractor.rows, row)
                assert len(rows["time"]) == frames, name
                samples[name][0].append(frames / seconds)
                samples[name][1].append(cpu / frames)
                if name in AUDIO:                           # the descriptor alone: frame times given
                    seconds, cpu, _ = timed(extractor.frames.frames, video, times)
                    samples[f"{name}_given_times"][0].append(frames / seconds)
                    samples[f"{name}_given_times"][1].append(cpu / frames)
        for name, (fps, cpu) in samples.items():
            result[name] = {"frames_per_s": [r(x) for x in fps], "median_frames_per_s": r(med(fps)),
                            "cpu_seconds_per_frame": r(med(cpu))}
        report = {
            "input": f"{os.path.relpath(args.video, REPO) if args.video.startswith(REPO) else os.path.basename(args.video)}"
                     f" ({info.width}x{info.height}, {info.fps:g} fps), "
                     + (f"first {args.seconds:g} s re-encoded (H.264 crf 18)" if args.seconds else "whole clip")
                     + f", {frames} frames; face found in {faces['valid'].mean():.0%} of them",
            "what": "Extractor.rows of one video as the stage runs it, decoding included (audio ones decode the "
                    "video for its frame times and read the audio); expression and landmarks: on_faces on the "
                    "facenet rows (expression decodes and crops every face; landmarks only normalises the "
                    "stored points: no decoding)",
            "landmarks_in_facenet": "the five points are the O-net output that facenet's detection already "
                                    "computes; turning them into pixels is a few multiply-adds per O-net "
                                    "candidate, so facenet with and without them is not separately measurable",
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "reps": args.reps,
            "load_before": load_before, "load_after": load(), "extractors": result}
    merge_into_report(args.report, "extractor_speed", report)
    for name, v in result.items():
        print(f"{name}: {v.get('median_frames_per_s', v['frames_per_s'][0])} frames/s, "
              f"{v['cpu_seconds_per_frame']} CPU s/frame")
    print(f"load {report['load_before']} -> {report['load_after']}; wrote extractor_speed in {args.report}")


if __name__ == "__main__":
    main()
