"""Frames/s of the facenet extractor's face pipeline end to end, beside the decode-only rate, on 1080p and 640p input.

    python benchmarks/bench_visual.py --video PATH [--naive]
    python benchmarks/bench_visual.py --video PATH --track K [K ...] [--reps 3]
    python benchmarks/bench_visual.py --video PATH --people [--reps 3] [--threads 2]
    ... [--quick] [--out PATH]

PATH: a real 1080p clip with faces (a street scene with several people suits).

`--track K [K ...]` instead compares detect-and-track (`facenet.detect_every: K`, each K given) with
detection on every frame, side by side (all modes alternate within every repetition), on four 1080p
clips: the street clip, a 2x zoom into it around the followed face, a close-up of that real face cut
from each of its frames and moved and scaled across the frame, and a drawn talking face
(avfusion/sources/demo.py `draw_face`) that moves, grows and leaves the frame for a while. It reports per clip and
pooled: frames/s (medians), the speedup (ratio of the medians; also the median of the back-to-back
pairs' ratios and the ratio of CPU seconds), face-present agreement, the mean cosine similarity of the
embeddings where both found a face (also after subtracting each clip's mean embedding: seeded random
weights map every face close to one direction), the boxes' IoU and the share of frames that ran the full
cascade. When dlib and the `face-recognition-models` files are importable (a bench-only extra, e.g.
`pip install --target DIR dlib-bin face-recognition-models` and PYTHONPATH=DIR), the same crops are also
described by dlib's trained face-recognition network: cosine, distance and the share of frames within
dlib's same-person distance 0.6, beside the distance between consecutive frames of detection on every
frame. Merged into reports/bench.json under `detect_and_track` (other keys kept).

`--people` compares `facenet.people: all` (every face tracked and embedded, `embed_people`) with the
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
(`facenet.workers` = cores). `--quick`: the clip's first 8 frames (the made clips as long), one
repetition, written to a temporary file unless --out is given: a smoke check.
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
import torch.nn.functional as F
from torchvision.ops import box_iou

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

from bench import clip, merge_into_report
from PIL import Image, ImageFilter

from avfusion.faces.crop import crop_face
from avfusion.faces.embedder import FaceTrackEmbedder, random_state_dict
from avfusion.faces.people import people_summary
from avfusion.faces.tracker import FaceTracker
from avfusion.params import resolve_device
from avfusion.sources.demo import draw_face
from avfusion.sources.media import decode_video, frame_times

QUICK_FRAMES = 8
CLIP_FRAMES = 75       # length of the clips made for --track


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


def drawn_clip(dst: str, frames: int = CLIP_FRAMES) -> str:
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


def street_face_clip(src: str, dst: str, embedder: FaceTrackEmbedder, frames: int = CLIP_FRAMES) -> str:
    """A real face close up at 1080p: the face that detection on every frame follows in the street clip,
    cut from each of its own frames (so it walks, turns and changes as filmed) with its surroundings,
    scaled from 240 to 520 px and drifting across a blurred copy of the street; gone for frames 30-41."""
    rows = embedder.embed_video(src)
    decoded = [f.to_ndarray(format="rgb24") for _, f in zip(range(frames), (f for _, f in decode_video(src)))]
    backdrop = Image.fromarray(decoded[0]).resize((1920, 1080)).filter(ImageFilter.GaussianBlur(24))
    box = rows["box"][np.argmax(rows["valid"])]

    def frame(k: int) -> Image.Image:
        nonlocal box
        canvas = backdrop.copy()
        if 30 <= k < 42:
            return canvas
        box = rows["box"][k] if rows["valid"][k] else box
        (cx, cy), side = (box[:2] + box[2:]) / 2, 1.8 * max(box[2:] - box[:2])
        height, width = decoded[k].shape[:2]
        x0, y0 = int(np.clip(cx - side / 2, 0, width - side)), int(np.clip(cy - side / 2, 0, height - side))
        size = int(240 + 280 * k / frames)
        face = Image.fromarray(decoded[k][y0:y0 + int(side), x0:x0 + int(side)]).resize((size, size), Image.BICUBIC)
        canvas.paste(face, (int(400 + 14 * k), int(260 + 60 * np.sin(k / 9))))
        return canvas
    return encode_1080p(dst, (frame(k) for k in range(frames)))


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


def dlib_embedder():
    """dlib's ResNet face descriptor (128-d, trained weights shipped by the `face-recognition-models`
    package) when dlib and that package's files are importable, else None: a second opinion with real
    weights on whether tracked and detected crops embed alike (the project's offline InceptionResnetV1
    weights are seeded random)."""
    try:
        import importlib.util

        import dlib
        spec = importlib.util.find_spec("face_recognition_models")
    except ImportError:
        return None
    if spec is None:
        return None
    model = os.path.join(os.path.dirname(spec.origin), "models", "dlib_face_recognition_resnet_model_v1.dat")
    net = dlib.face_recognition_model_v1(model)

    def describe(crops: list[np.ndarray]) -> np.ndarray:
        return np.array(net.compute_face_descriptor(crops)) if crops else np.zeros((0, 128))
    return describe


def dlib_chip(full: np.ndarray, box: np.ndarray, margin: int) -> np.ndarray:
    """The crop the pipeline embeds (facenet's crop, unaligned), as the 150-px uint8 image dlib takes."""
    crop = crop_face(full, box, margin) * 128 + 127.5
    return np.ascontiguousarray(F.interpolate(crop[None], size=(150, 150), mode="bilinear", antialias=True)[0]
                                .permute(1, 2, 0).round().clamp(0, 255).byte().numpy())


def dlib_descriptors(describe, path: str, rows: dict, margin: int) -> np.ndarray:
    """dlib descriptors of the very crops the pipeline embedded for these rows (zeros where no face)."""
    crops = [dlib_chip(f.to_ndarray(format="rgb24"), rows["box"][k], margin)
             for k, (_, f) in enumerate(decode_video(path)) if rows["valid"][k]]
    out = np.zeros((len(rows["valid"]), 128))
    out[rows["valid"]] = describe(crops)
    return out


def different_faces_dlib_distance(describe, path: str, embedder: FaceTrackEmbedder, every: int = 25) -> list[float]:
    """dlib distances between different people's faces in one frame (every `every`-th frame of the clip,
    all faces the cascade finds): the scale on which a tracked-vs-detected distance is small or not."""
    distances = []
    for k, (_, full, small, scale) in enumerate(embedder._frames(path)):
        if k % every == 0:
            boxes = embedder.detector(small[None])[0][0] * scale
            x = describe([dlib_chip(full, box, embedder.margin) for box in boxes])
            distances += [float(np.linalg.norm(x[i] - x[j])) for i in range(len(x)) for j in range(i)]
    return distances


def agreement(every: dict, tracked: dict, dlib_every=None, dlib_tracked=None) -> dict:
    """How close the tracked rows are to those of detection on every frame (sums over frames)."""
    both = every["valid"] & tracked["valid"]
    a, b = every["embedding"][both], tracked["embedding"][both]
    centred = [x - every["embedding"][every["valid"]].mean(0) for x in (a, b)]
    cosine = (centred[0] * centred[1]).sum(1) / np.linalg.norm(centred[0], axis=1) / np.linalg.norm(centred[1], axis=1)
    box_a, box_b = torch.from_numpy(every["box"][both]), torch.from_numpy(tracked["box"][both])
    out = {"frames": len(every["valid"]), "frames_with_face_both": int(both.sum()),
           "face_agreement": float((every["valid"] == tracked["valid"]).mean()),
           "embedding_cosine_sum": float((a * b).sum()), "centred_cosine_sum": float(cosine.sum()),
           "box_iou_sum": float(box_iou(box_a, box_b).diagonal().sum()) if len(box_a) else 0.0}
    if dlib_every is not None:
        x, y = dlib_every[both], dlib_tracked[both]
        distance = np.linalg.norm(x - y, axis=1)
        out.update(dlib_cosine_sum=float(((x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)).sum()),
                   dlib_distance_sum=float(distance.sum()), dlib_same_person=int((distance < 0.6).sum()))
    return out


def consecutive_dlib_distance(rows: dict, descriptors: np.ndarray) -> list[float]:
    """dlib distances between the descriptors of consecutive frames that both have a face (how much
    detection on every frame itself moves from frame to frame)."""
    both = rows["valid"][1:] & rows["valid"][:-1]
    return np.linalg.norm(descriptors[1:] - descriptors[:-1], axis=1)[both].tolist()


def compare_tracking(video: str, ks: list[int], reps: int, out: str) -> None:
    embedder = FaceTrackEmbedder(random_state_dict(0), "cpu")
    describe = dlib_embedder()
    modes = {"every_frame": 1, **{f"tracked_{k}": k for k in ks}}
    result = {"detect_every": ks, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "reps": reps, "load_average_before": round(os.getloadavg()[0], 2),
              "weights": "seeded random InceptionResnetV1 (speed does not depend on the values); MTCNN: "
                         "facenet-pytorch's trained P/R/O-nets",
              "second_opinion": ("dlib ResNet face descriptor, trained weights (face-recognition-models 0.3.0), on "
                                 "the pipeline's own 160-px crops resized to 150 px, unaligned" if describe else None),
              "clips": {}}
    frames = min(CLIP_FRAMES, len(frame_times(video)))       # the made clips: no longer than the video
    with tempfile.TemporaryDirectory() as tmp:
        embedder.detect_every = 1
        clips = {"street_1080p": video, "street_zoom_2x_1080p": zoomed_clip(video, os.path.join(tmp, "zoom.mp4"), embedder),
                 "street_face_closeup_1080p": street_face_clip(video, os.path.join(tmp, "closeup.mp4"), embedder, frames),
                 "drawn_talking_face_1080p": drawn_clip(os.path.join(tmp, "drawn.mp4"), frames)}
        result["clips_made"] = {"street_1080p": f"{video} as it is",
                                **{name: " ".join(make.__doc__.split()) for name, make in
                                   (("street_zoom_2x_1080p", zoomed_clip), ("street_face_closeup_1080p", street_face_clip),
                                    ("drawn_talking_face_1080p", drawn_clip))}}
        embedder.embed_video(clips["drawn_talking_face_1080p"])     # warm-up (allocations, kernels)
        samples = {name: {mode: [] for mode in modes} for name in clips}
        for rep in range(reps):
            for name, path in clips.items():
                # alternate the order so a change in the machine's load hits all modes alike
                for mode in (list(modes) if rep % 2 == 0 else list(modes)[::-1]):
                    samples[name][mode].append(timed_rows(embedder, path, modes[mode]))
                    print(rep, name, mode, round(samples[name][mode][-1][0], 1), "s", flush=True)
        descriptors = ({name: {mode: dlib_descriptors(describe, clips[name], runs[mode][0][2], embedder.margin)
                               for mode in modes} for name, runs in samples.items()} if describe else {})
    pooled = {k: {"frames": 0, "frames_with_face_both": 0, "agree": 0.0} for k in ks}
    consecutive = []
    for name, runs in samples.items():
        frames = len(runs["every_frame"][0][2]["time"])
        fps = {mode: [frames / wall for wall, _, _, _ in runs[mode]] for mode in runs}
        cpu = {mode: float(np.median([c for _, c, _, _ in runs[mode]])) for mode in runs}
        every = runs["every_frame"][0][2]
        clip = result["clips"][name] = {
            "frames": frames,
            "every_frame_frames_per_s": [round(x, 2) for x in fps["every_frame"]],
            "median_every_frame_frames_per_s": round(float(np.median(fps["every_frame"])), 2),
            "every_frame_cpu_seconds_per_frame": round(cpu["every_frame"] / frames, 4),
            "share_of_frames_with_face_every_frame": round(float(every["valid"].mean()), 3),
            "outputs_identical_across_reps": all(
                np.array_equal(run[2]["embedding"], runs[mode][0][2]["embedding"]) for mode in runs for run in runs[mode]),
            "tracked": {}}
        if describe:
            consecutive += consecutive_dlib_distance(every, descriptors[name]["every_frame"])
        for k in ks:
            mode = f"tracked_{k}"
            rows = runs[mode][0][2]
            close = agreement(every, rows, *((descriptors[name]["every_frame"], descriptors[name][mode]) if describe else ()))
            both = max(close["frames_with_face_both"], 1)
            clip["tracked"][k] = {
                "frames_per_s": [round(x, 2) for x in fps[mode]],
                "median_frames_per_s": round(float(np.median(fps[mode])), 2),
                "speedup": round(float(np.median(fps[mode]) / np.median(fps["every_frame"])), 2),
                # the runs of one repetition ran back to back: their ratio sees nearly the same load
                "median_paired_speedup": round(float(np.median(np.divide(fps[mode], fps["every_frame"]))), 2),
                "cpu_seconds_speedup": round(cpu["every_frame"] / cpu[mode], 2),
                "cpu_seconds_per_frame": round(cpu[mode] / frames, 4),
                "share_of_frames_full_cascade": round(runs[mode][0][3] / frames, 3),
                "share_of_frames_with_face": round(float(rows["valid"].mean()), 3),
                "face_agreement": round(close["face_agreement"], 4),
                "embedding_cosine": round(close["embedding_cosine_sum"] / both, 6),
                "embedding_cosine_centred": round(close["centred_cosine_sum"] / both, 4),
                "box_iou": round(close["box_iou_sum"] / both, 4),
                **({"dlib_cosine": round(close["dlib_cosine_sum"] / both, 4),
                    "dlib_distance": round(close["dlib_distance_sum"] / both, 4),
                    "dlib_same_person_share": round(close["dlib_same_person"] / both, 4)} if describe else {}),
            }
            total = pooled[k]
            total["frames"] += frames
            total["frames_with_face_both"] += close["frames_with_face_both"]
            total["agree"] += close["face_agreement"] * frames
            for key in close:
                if key.endswith("_sum") or key == "dlib_same_person":
                    total[key] = total.get(key, 0.0) + close[key]
        print(name, json.dumps(clip), flush=True)
    street = result["clips"]["street_1080p"]
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    by_k = {}
    for k in ks:
        total, mine, both = pooled[k], street["tracked"][k], max(pooled[k]["frames_with_face_both"], 1)
        by_k[k] = {
            "facenet_1080p_cpu_fps_every_frame": street["median_every_frame_frames_per_s"],
            "facenet_1080p_cpu_fps_tracked": mine["median_frames_per_s"],
            "tracked_vs_every_frame_speedup": mine["speedup"],
            "tracked_vs_every_frame_paired_speedup": mine["median_paired_speedup"],
            "tracked_vs_every_frame_cpu_seconds_speedup": mine["cpu_seconds_speedup"],
            "track_vs_detect_face_agreement": round(total["agree"] / total["frames"], 4),
            "track_vs_detect_embedding_cosine": round(total["embedding_cosine_sum"] / both, 6),
            "track_vs_detect_embedding_cosine_centred": round(total["centred_cosine_sum"] / both, 4),
            "track_vs_detect_box_iou": round(total["box_iou_sum"] / both, 4),
            **({"track_vs_detect_dlib_cosine": round(total["dlib_cosine_sum"] / both, 4),
                "track_vs_detect_dlib_distance": round(total["dlib_distance_sum"] / both, 4),
                "track_vs_detect_dlib_same_person_share": round(total["dlib_same_person"] / both, 4)} if describe else {}),
        }
    if describe:
        result["every_frame_consecutive_dlib_distance_median"] = round(float(np.median(consecutive)), 4)
        different = different_faces_dlib_distance(describe, video, embedder)
        result["different_people_dlib_distance_median"] = round(float(np.median(different)), 4)
        result["different_people_dlib_pairs"] = len(different)
    result["metrics_by_detect_every"] = by_k
    result["metrics"] = {"detect_every": ks[0], **by_k[ks[0]]}
    merge_into_report(out, "detect_and_track", result)
    print(json.dumps(by_k, indent=1), f"\nwrote detect_and_track into {out}")


def compare_people(video: str, reps: int, out: str) -> None:
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


def measure(args, out: str) -> None:
    """Frames/s end to end and decode-only on the clip and its 640x360 copy (the default mode)."""
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
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--video", help="a real 1080p clip with faces (without one there is nothing to measure)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--naive", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default=None, help="default: reports/bench_visual.json (reports/bench.json with --track "
                                                    "or --people; --quick: a temporary file)")
    parser.add_argument("--track", type=int, nargs="+", metavar="K",
                        help="compare detect_every K (each given; the first is reported as `metrics`) with detection on every frame")
    parser.add_argument("--reps", type=int, default=3, help="repetitions with --track or --people")
    parser.add_argument("--people", action="store_true", help="compare facenet.people: all with one")
    parser.add_argument("--quick", action="store_true", help=f"the first {QUICK_FRAMES} frames, one repetition")
    args = parser.parse_args()
    if not (args.video and os.path.isfile(args.video)):
        sys.exit(f"bench_visual: skipped: --video {args.video or 'PATH'} is not a file (it needs a real 1080p clip "
                 "with faces)")
    if args.threads:
        torch.set_num_threads(args.threads)
    reports = os.path.join(tempfile.gettempdir(), "avfusion-bench-quick") if args.quick else os.path.join(REPO, "reports")
    os.makedirs(reports, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.video, args.reps = clip(args.video, os.path.join(tmp, "head.mp4"), frames=QUICK_FRAMES), 1
        if args.people:
            compare_people(args.video, args.reps, args.out or os.path.join(reports, "bench.json"))
        elif args.track:
            compare_tracking(args.video, args.track, args.reps, args.out or os.path.join(reports, "bench.json"))
        else:
            measure(args, args.out or os.path.join(reports, "bench_visual.json"))


if __name__ == "__main__":
    main()
