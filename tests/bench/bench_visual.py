"""Frames/s of the visual extractor end to end, beside the decode-only rate, on 1080p and 640p input.

    python tests/bench/bench_visual.py --video PATH [--naive]
    python tests/bench/bench_visual.py --video PATH --track K [--reps 3]
    python tests/bench/bench_visual.py --video PATH --people [--reps 3] [--threads 2]

PATH: a real 1080p clip with faces (a street scene with several people suits).

`--track K` instead compares detect-and-track (`visual.detect_every: K`) with detection on every frame,
side by side (the two alternate within every repetition), on three 1080p clips: the street clip, a
2x zoom into it around the followed face, and a drawn talking face (avfusion.demo.draw_face) that moves,
grows and leaves the frame for a while. It reports per clip and pooled: frames/s of both (medians), the
speedup (ratio of the medians; also the median of the back-to-back pairs' ratios and the ratio of CPU
seconds), face-present agreement, the mean cosine similarity of the embeddings where both found a face
(also after subtracting each clip's mean embedding: seeded random weights map every face close to
one direction), the boxes' IoU and the share of frames that ran the full cascade; merged into
reports/bench.json under `detect_and_track` (other keys kept).

`--people` compares `visual.people: all` (every face tracked and embedded, `embed_people`) with the
default one-person extraction (`embed_video`, detection on every frame), side by side on the clip
(alternating within every repetition): frames/s of both (medians), their ratio, CPU seconds per frame,
tracks and faces embedded per frame; merged into reports/bench.json under `people_all_vs_one`, with
`uptime`'s load averages before and after (other processes share the cores).

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
from torchvision.ops import box_iou

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                os.path.dirname(os.path.abspath(__file__))]
from PIL import Image  # noqa: E402

from bench import merge_into_report  # noqa: E402
from avfusion.demo import draw_face  # noqa: E402
from avfusion.faces import FaceTracker, FaceTrackEmbedder, random_state_dict  # noqa: E402
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


# ---------------------------------------------------------------- detect and track vs every frame

LOOK = {"background": (70, 80, 60), "stripe": (90, 100, 80), "skin": (225, 175, 140), "face_w": 0.5, "face_h": 0.65}


def encode_1080p(dst: str, frames, fps: int = 25) -> str:
    with av.open(dst, "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"crf": "18"}
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_image(image).reformat(format="yuv420p")))
        out.mux(stream.encode())
    return dst


def drawn_clip(dst: str, frames: int = 75) -> str:
    """A talking drawn face at 1080p: mouth and eyes move, the face drifts across and grows from 300 to
    480 px, and is gone (turned away) for frames 30-41."""
    def frame(k: int) -> Image.Image:
        canvas = Image.new("RGB", (1920, 1080), LOOK["stripe"])
        if 30 <= k < 42:
            return canvas
        size = int(300 + 180 * k / frames)
        head = draw_face(size, LOOK, valence=float(np.sin(k / 4)), eye_open=0.5 + 0.4 * float(np.sin(k / 3)),
                         center=(size / 2, size / 2))
        canvas.paste(head, (int(500 + 12 * k), int(300 + 40 * np.sin(k / 10))))
        return canvas
    return encode_1080p(dst, (frame(k) for k in range(frames)))


def zoomed_clip(src: str, dst: str, embedder: FaceTrackEmbedder) -> str:
    """The clip's 960x540 quarter around the face the tracker picks in the first frame, scaled to 1080p."""
    _, full, small, scale = next(embedder._frames(src))
    found, _ = embedder.detector(small[None])[0]
    height, width = full.shape[:2]
    box = found[FaceTracker(width, height).update(found * scale)] * scale
    cx, cy = (box[:2] + box[2:]) / 2
    x0, y0 = int(np.clip(cx - 480, 0, width - 960)), int(np.clip(cy - 270, 0, height - 540))
    images = (Image.fromarray(f.to_ndarray(format="rgb24")[y0:y0 + 540, x0:x0 + 960]).resize((1920, 1080), Image.BICUBIC)
              for _, f in decode_video(src))
    return encode_1080p(dst, images, fps=25)


def timed_rows(embedder: FaceTrackEmbedder, path: str, detect_every: int) -> tuple[float, float, dict, int]:
    """(wall s, CPU s of this process, rows, frames that ran the full cascade) of one extraction."""
    embedder.detect_every = detect_every
    detect, cascades = embedder._detect, []
    embedder._detect = lambda images: cascades.append(len(images)) or detect(images)
    try:
        began, cpu = time.perf_counter(), time.process_time()
        rows = embedder.embed_video(path)
        return time.perf_counter() - began, time.process_time() - cpu, rows, sum(cascades)
    finally:
        del embedder._detect


def agreement(every: dict, tracked: dict) -> dict:
    """How close the tracked rows are to those of detection on every frame."""
    both = every["valid"] & tracked["valid"]
    a, b = every["embedding"][both], tracked["embedding"][both]
    centred = [x - every["embedding"][every["valid"]].mean(0) for x in (a, b)]
    cosine = (centred[0] * centred[1]).sum(1) / np.linalg.norm(centred[0], axis=1) / np.linalg.norm(centred[1], axis=1)
    box_a, box_b = torch.from_numpy(every["box"][both]), torch.from_numpy(tracked["box"][both])
    return {"frames": len(every["valid"]), "frames_with_face_both": int(both.sum()),
            "face_agreement": float((every["valid"] == tracked["valid"]).mean()),
            "embedding_cosine_sum": float((a * b).sum()), "centred_cosine_sum": float(cosine.sum()),
            "box_iou_sum": float(box_iou(box_a, box_b).diagonal().sum()) if len(box_a) else 0.0}


def compare_tracking(video: str, detect_every: int, reps: int, out: str) -> None:
    embedder = FaceTrackEmbedder(random_state_dict(0), "cpu")
    result = {"detect_every": detect_every, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "reps": reps, "load_average_before": round(os.getloadavg()[0], 2),
              "weights": "seeded random (speed does not depend on the values)", "clips": {}}
    with tempfile.TemporaryDirectory() as tmp:
        clips = {"street_1080p": video, "street_zoom_2x_1080p": zoomed_clip(video, os.path.join(tmp, "zoom.mp4"), embedder),
                 "drawn_talking_face_1080p": drawn_clip(os.path.join(tmp, "drawn.mp4"))}
        result["clips_made"] = {"street_1080p": f"{video} as it is",
                                "street_zoom_2x_1080p": zoomed_clip.__doc__, "drawn_talking_face_1080p": " ".join(drawn_clip.__doc__.split())}
        embedder.embed_video(clips["drawn_talking_face_1080p"])     # warm-up (allocations, kernels)
        samples = {name: {"every_frame": [], "tracked": []} for name in clips}
        for rep in range(reps):
            for name, path in clips.items():
                # alternate the order so a change in the machine's load hits both alike
                for mode in (("every_frame", "tracked") if rep % 2 == 0 else ("tracked", "every_frame")):
                    samples[name][mode].append(timed_rows(embedder, path, 1 if mode == "every_frame" else detect_every))
                    print(rep, name, mode, round(samples[name][mode][-1][0], 1), "s", flush=True)
    pooled = {"frames": 0, "frames_with_face_both": 0, "agree": 0.0, "cos": 0.0, "centred": 0.0, "iou": 0.0}
    for name, runs in samples.items():
        frames = len(runs["every_frame"][0][2]["time"])
        fps = {mode: [frames / wall for wall, _, _, _ in runs[mode]] for mode in runs}
        close = agreement(runs["every_frame"][0][2], runs["tracked"][0][2])
        both = close["frames_with_face_both"]
        result["clips"][name] = {
            "frames": frames,
            "every_frame_frames_per_s": [round(x, 2) for x in fps["every_frame"]],
            "tracked_frames_per_s": [round(x, 2) for x in fps["tracked"]],
            "median_every_frame_frames_per_s": round(float(np.median(fps["every_frame"])), 2),
            "median_tracked_frames_per_s": round(float(np.median(fps["tracked"])), 2),
            "speedup": round(float(np.median(fps["tracked"]) / np.median(fps["every_frame"])), 2),
            # the two runs of one repetition ran back to back: their ratio sees nearly the same load
            "median_paired_speedup": round(float(np.median(np.divide(fps["tracked"], fps["every_frame"]))), 2),
            "cpu_seconds_speedup": round(float(np.median([c for _, c, _, _ in runs["every_frame"]]) /
                                               np.median([c for _, c, _, _ in runs["tracked"]])), 2),
            "cpu_seconds_per_frame": {mode: round(float(np.median([c for _, c, _, _ in runs[mode]])) / frames, 4)
                                      for mode in runs},
            "share_of_frames_full_cascade_tracked": round(runs["tracked"][0][3] / frames, 3),
            "share_of_frames_with_face": {mode: round(float(runs[mode][0][2]["valid"].mean()), 3) for mode in runs},
            "face_agreement": round(close["face_agreement"], 4),
            "embedding_cosine": round(close["embedding_cosine_sum"] / max(both, 1), 6),
            "embedding_cosine_centred": round(close["centred_cosine_sum"] / max(both, 1), 4),
            "box_iou": round(close["box_iou_sum"] / max(both, 1), 4),
            "outputs_identical_across_reps": all(
                np.array_equal(run[2]["embedding"], runs[mode][0][2]["embedding"]) for mode in runs for run in runs[mode]),
        }
        pooled["frames"] += frames
        pooled["frames_with_face_both"] += both
        pooled["agree"] += close["face_agreement"] * frames
        pooled["cos"] += close["embedding_cosine_sum"]
        pooled["centred"] += close["centred_cosine_sum"]
        pooled["iou"] += close["box_iou_sum"]
        print(name, result["clips"][name], flush=True)
    street = result["clips"]["street_1080p"]
    both = max(pooled["frames_with_face_both"], 1)
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    result["metrics"] = {
        "visual_1080p_cpu_fps_every_frame": street["median_every_frame_frames_per_s"],
        "visual_1080p_cpu_fps_tracked": street["median_tracked_frames_per_s"],
        "tracked_vs_every_frame_speedup": street["speedup"],
        "tracked_vs_every_frame_paired_speedup": street["median_paired_speedup"],
        "tracked_vs_every_frame_cpu_seconds_speedup": street["cpu_seconds_speedup"],
        "track_vs_detect_face_agreement": round(pooled["agree"] / pooled["frames"], 4),
        "track_vs_detect_embedding_cosine": round(pooled["cos"] / both, 6),
        "track_vs_detect_embedding_cosine_centred": round(pooled["centred"] / both, 4),
        "track_vs_detect_box_iou": round(pooled["iou"] / both, 4),
    }
    merge_into_report(out, "detect_and_track", result)
    print(json.dumps(result["metrics"], indent=1), f"\nwrote detect_and_track into {out}")


def compare_people(video: str, reps: int, out: str) -> None:
    from avfusion.tracks import people_summary
    embedder = FaceTrackEmbedder(random_state_dict(0), "cpu")
    runs = {"one": lambda: embedder.embed_video(video), "all": lambda: embedder.embed_people(video)}
    result = {"video": os.path.basename(video), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "reps": reps, "uptime_before": os.popen("uptime").read().strip(),
              "weights": "seeded random (speed does not depend on the values)", "detect_every_one": embedder.detect_every}
    with tempfile.TemporaryDirectory() as tmp:
        embedder.embed_video(drawn_clip(os.path.join(tmp, "warm.mp4"), frames=8))   # warm-up (allocations, kernels)
    samples: dict[str, list[tuple[float, float]]] = {"one": [], "all": []}
    for rep in range(reps):
        for mode in ("one", "all") if rep % 2 == 0 else ("all", "one"):
            began, cpu = time.perf_counter(), time.process_time()
            rows = runs[mode]()
            samples[mode].append((time.perf_counter() - began, time.process_time() - cpu))
            print(rep, mode, round(samples[mode][-1][0], 1), "s", flush=True)
            if mode == "all":
                everyone = rows
    frames = len(everyone["time"])
    fps = {mode: [frames / wall for wall, _ in samples[mode]] for mode in samples}
    result.update({
        "frames": frames,
        "tracks": len(people_summary(everyone)),
        "faces_embedded_per_frame_all": round(len(everyone["person"]) / frames, 2),
        **{f"{mode}_frames_per_s": [round(x, 3) for x in fps[mode]] for mode in fps},
        **{f"median_{mode}_frames_per_s": round(float(np.median(fps[mode])), 3) for mode in fps},
        **{f"cpu_seconds_per_frame_{mode}": round(float(np.median([c for _, c in samples[mode]])) / frames, 3)
           for mode in samples},
        "all_vs_one_speed": round(float(np.median(fps["all"]) / np.median(fps["one"])), 3),
        # the two runs of one repetition ran back to back: their ratio sees nearly the same load
        "all_vs_one_paired_speed": round(float(np.median(np.divide(fps["all"], fps["one"]))), 3),
        "uptime_after": os.popen("uptime").read().strip(),
    })
    merge_into_report(out, "people_all_vs_one", result)
    print(json.dumps(result, indent=1), f"\nwrote people_all_vs_one into {out}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--video", help="a real 1080p clip with faces (without one there is nothing to measure)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--naive", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default=None, help="default: reports/bench_visual.json (reports/bench.json with --track)")
    parser.add_argument("--track", type=int, metavar="K", help="compare detect_every K with detection on every frame")
    parser.add_argument("--reps", type=int, default=3, help="repetitions with --track or --people")
    parser.add_argument("--people", action="store_true", help="compare visual.people: all with one")
    args = parser.parse_args()
    if not (args.video and os.path.isfile(args.video)):
        sys.exit(f"bench_visual: skipped: --video {args.video or 'PATH'} is not a file (it needs a real 1080p clip "
                 "with faces)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.people:
        compare_people(args.video, args.reps, args.out or "reports/bench.json")
        return
    if args.track:
        compare_tracking(args.video, args.track, args.reps, args.out or "reports/bench.json")
        return
    args.out = args.out or "reports/bench_visual.json"
    device = resolve_device(args.device)
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
