"""Frames/s of the visual extractor end to end, beside the decode-only rate, on 1080p and 640p input.

    python tests/bench/bench_visual.py --video PATH [--naive]

PATH: a real 1080p clip with faces (a street scene with several people suits).

The 640p input is the same clip re-encoded (H.264) at 640x360. `--naive` also times the plain library
use the design warns about (MTCNN on the full frame, one frame at a time, then InceptionResnetV1).
Writes reports/bench_visual.json. The load average is recorded: on a shared 2-core machine other
processes' load changes the wall-clock numbers a lot; CPU seconds per frame (all threads of this
process) vary less, and with `--threads 1` (no OpenMP threads spinning while the cores are taken by
others) `cores / cpu_seconds_per_frame` estimates the unloaded rate of one process per core
(`visual.workers` = cores).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import av
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from avfusion.faces import FaceTrackEmbedder, random_state_dict  # noqa: E402
from avfusion.media import decode_video  # noqa: E402
from avfusion.params import resolve_device  # noqa: E402


def downscaled_copy(src: str, dst: str, width: int, height: int) -> str:
    with av.open(src) as inp, av.open(dst, "w") as out:
        stream = out.add_stream("libx264", rate=inp.streams.video[0].average_rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in inp.decode(video=0):
            out.mux(stream.encode(frame.reformat(width, height, format="yuv420p")))
        out.mux(stream.encode())
    return dst


def decode_rate(path: str) -> float:
    began, n = time.perf_counter(), 0
    for _, frame in decode_video(path):
        frame.to_ndarray(format="rgb24")
        n += 1
    return n / (time.perf_counter() - began)


def extract_rate(embedder: FaceTrackEmbedder, path: str) -> tuple[float, float, float]:
    """(frames/s, CPU seconds per frame of this process, share of frames with a face)."""
    began, cpu = time.perf_counter(), time.process_time()
    rows = embedder.embed_video(path)
    n = len(rows["time"])
    return n / (time.perf_counter() - began), (time.process_time() - cpu) / n, float(rows["valid"].mean())


def naive_rate(path: str, device: str, frames: int = 16) -> float:
    """facenet-pytorch as its README shows it: MTCNN forward per full frame, then the embedding."""
    from facenet_pytorch import MTCNN, InceptionResnetV1
    mtcnn, net = MTCNN(device=device), InceptionResnetV1(pretrained=None).eval().to(device)
    began, n = time.perf_counter(), 0
    for _, image in zip(range(frames), (f.to_image() for _, f in decode_video(path))):
        crop = mtcnn(image)
        if crop is not None:
            with torch.inference_mode():
                net(crop[None].to(device))
        n += 1
    return n / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--video", help="a real 1080p clip with faces (without one there is nothing to measure)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--naive", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default="reports/bench_visual.json")
    args = parser.parse_args()
    if not (args.video and os.path.isfile(args.video)):
        sys.exit(f"bench_visual: skipped: --video {args.video or 'PATH'} is not a file (it needs a real 1080p clip "
                 "with faces)")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    embedder = FaceTrackEmbedder(random_state_dict(0), device, batch_size=args.batch_size)
    report = {"device": device, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "machine": platform.processor() or platform.machine(), "batch_size": args.batch_size,
              "detect_size": embedder.detect_size, "load_average_before": os.getloadavg()[0], "inputs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {"1080p": args.video, "640p": downscaled_copy(args.video, os.path.join(tmp, "640p.mp4"), 640, 360)}
        embedder.embed_video(inputs["640p"])                      # warm-up (allocations, kernels)
        for name, path in inputs.items():
            fps, cpu_per_frame, found = extract_rate(embedder, path)
            result = {"frames_per_s": round(fps, 2), "decode_only_frames_per_s": round(decode_rate(path), 1),
                      "cpu_seconds_per_frame": round(cpu_per_frame, 4),
                      "cpu_bound_frames_per_s_on_all_cores": round((os.cpu_count() or 1) / cpu_per_frame, 1),
                      "share_of_frames_with_face": round(found, 3)}
            if args.naive:
                result["naive_library_frames_per_s"] = round(naive_rate(path, device), 2)
            report["inputs"][name] = result
            print(name, result, flush=True)
    report["load_average_after"] = os.getloadavg()[0]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
