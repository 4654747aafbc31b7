"""Speed of the face encoders (emotieff with each of its models, clip, irse50) on a 1080p clip: frames per
second and CPU seconds per frame of what their stage does per video (`on_faces`: the video decoded, the
facenet store's face of each frame cropped, preprocessed and encoded in batches), with seeded random
weights (the same architectures, so the same speed as the official ones).

    python benchmarks/bench_face_encoders.py [--video PATH] [--frames 10] [--threads 2] [--device cpu]

PATH defaults to $AVFUSION_MEDIA/street_crowd_1080p25.mp4 (a 1080p street crowd); its first
`--frames` frames are re-encoded first (0: all). The facenet rows of the clip
are made once (timed for context). Every encoder is timed after one warm-up run, `--reps` times,
median. Writes reports/face_encoders.json and reports/face_encoders.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

# real clips are not in the repository: a folder of them is named by AVFUSION_MEDIA or each script's option
STREET = os.path.join(os.environ["AVFUSION_MEDIA"], "street_crowd_1080p25.mp4") if "AVFUSION_MEDIA" in os.environ else ""
ENCODERS = [("emotieff", {"model": m}) for m in ("enet_b0_8_va_mtl", "enet_b0_8_best_vgaf", "enet_b2_8", "mbf_va_mtl")] + [
    ("clip", {}), ("irse50", {})]
GPU_COMMAND = "python benchmarks/bench_face_encoders.py --device cuda --threads 16 --frames 250 --reps 3"


def reencode(src: str, dst: str, frames: int) -> str:
    import av
    with av.open(src) as inp, av.open(dst, "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt, vout.options = vin.width, vin.height, "yuv420p", {"crf": "18"}
        for n, frame in enumerate(inp.decode(vin)):
            if n >= frames:
                break
            out.mux(vout.encode(frame.reformat(format="yuv420p")))
        out.mux(vout.encode())
    return dst


def timed(fn, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=STREET, help="a real 1080p clip with faces")
    parser.add_argument("--frames", type=int, default=10, help="time its first N frames only (0: all)")
    parser.add_argument("--threads", type=int, default=2, help="torch / onnxruntime threads")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--report", help="path stem for .json and .md (default: reports/face_encoders; "
                        "--quick: a temporary directory)")
    parser.add_argument("--quick", action="store_true", help="3 frames, one repetition (a smoke check)")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.reps = 3, 1
    args.report = args.report or (os.path.join(tempfile.gettempdir(), "avfusion-bench-quick", "face_encoders")
                                  if args.quick else os.path.join(REPO, "reports", "face_encoders"))
    if not os.path.isfile(args.video):
        print(f"skipped: --video {args.video} is not a file (a real 1080p clip with faces: give --video or set AVFUSION_MEDIA)")
        return
    import torch
    torch.set_num_threads(args.threads)            # before any model: onnxruntime follows it too

    from avfusion.extraction.base import Video
    from avfusion.extraction.registry import get
    from avfusion.extraction.weights import materialise
    from avfusion.params import load_params
    from avfusion.paths import ROOT_ENV
    from avfusion.sources.media import frame_times, probe

    with tempfile.TemporaryDirectory() as tmp:
        os.environ[ROOT_ENV] = tmp                  # the weight files go into a scratch project
        open(os.path.join(tmp, "params.yaml"), "w").write("{}\n")
        video_path = reencode(args.video, os.path.join(tmp, "head.mp4"), args.frames) if args.frames else args.video
        info = probe(video_path)
        video = Video(id="clip", path=video_path, times=frame_times(video_path))
        frames = len(video.times)

        def build(name: str, changes: dict):
            params = {**load_params(name, os.path.join(REPO, "params.yaml")), "device": args.device, **changes}
            materialise(get(name), params)
            extractor = get(name)(params, args.device)
            extractor.ensure_loaded()
            return extractor

        load_before = os.getloadavg()[0]
        seconds, cpu, faces = timed(build("facenet", {}).rows, video)
        result = {"facenet": {"frames_per_s": round(frames / seconds, 2), "cpu_seconds_per_frame": round(cpu / frames, 4),
                              "note": "one run, for context: its rows (boxes) feed the face encoders"}}
        with_faces = Video(video.id, video.path, video.times, faces=faces)
        for name, changes in ENCODERS:
            extractor = build(name, changes)
            extractor.on_faces(with_faces, faces)                          # warm-up
            runs = [timed(extractor.on_faces, with_faces, faces)[:2] for _ in range(args.reps)]
            wall, cpu = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
            key = f"{name}:{changes['model']}" if changes else name
            result[key] = {"frames_per_s": round(frames / wall, 2), "cpu_seconds_per_frame": round(cpu / frames, 4),
                           "columns": extractor.dim, "precision": extractor.precision}
            print(f"{key}: {result[key]['frames_per_s']} frames/s, {result[key]['cpu_seconds_per_frame']} CPU s/frame")
        report = {
            "video": os.path.basename(args.video), "size": f"{info.width}x{info.height}", "frames": frames,
            "frames_with_a_face": int(faces["valid"].sum()), "device": args.device, "threads": args.threads,
            "reps": args.reps, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average_before": round(load_before, 2), "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "encoders": result, "gpu_command": GPU_COMMAND}
    os.makedirs(os.path.dirname(args.report), exist_ok=True)
    with open(args.report + ".json", "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    lines = [f"# Face encoders: speed on {report['video']} ({report['size']}, first {frames} frames, "
             f"{report['frames_with_a_face']} with a face)", "",
             f"{args.device}, {args.threads} threads, {report['cores']} cores (load average {report['load_average_before']} "
             f"before: a shared machine), median of {args.reps} run(s) after a warm-up, seeded random weights; "
             "decoding, cropping and preprocessing included. Written by benchmarks/bench_face_encoders.py.", "",
             "| encoder | frames/s | CPU s per frame | columns |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['frames_per_s']} | {v['cpu_seconds_per_frame']} | {v.get('columns', '–')} |" for k, v in result.items()]
    lines += ["", f"On a GPU: `{GPU_COMMAND}`", ""]
    with open(args.report + ".md", "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.report}.json and .md; on a GPU: {GPU_COMMAND}")


if __name__ == "__main__":
    main()
