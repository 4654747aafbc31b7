"""Multi-person tracking on the shared street clip: detections (faces.py's MTCNN on the 640-px copy, as
in extraction) + avfusion.tracks, track counts and lengths, sample frames with ids drawn, and a contact
sheet (one row per track, its face every 5 frames) on which identity switches are counted by eye.

    python reports/people/street.py VIDEO [--cache dets.npz]    (writes reports/people/*.jpg, tracks.json)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from avfusion.faces import FaceDetector
from avfusion.media import decode_video, probe
from avfusion.overlay import draw_people
from avfusion.tracks import PeopleTracker, appearance, gap_frames, summary

OUT = os.path.dirname(os.path.abspath(__file__))
SAMPLES = 6
SHEET_STEP, TILE = 5, 56


def detect(path: str) -> tuple[list, list, list, float]:
    """Per frame: boxes (full-resolution pixels), probabilities, appearance histograms; and seconds."""
    detector, boxes, probs, hists, batch = FaceDetector(), [], [], [], []
    start = time.perf_counter()

    def flush():
        for (full, _, scale), (b, p) in zip(batch, detector(np.stack([s for _, s, _ in batch]))):
            boxes.append(b * scale)
            probs.append(p)
            hists.append(appearance(full, b * scale))
        batch.clear()

    for _, frame in decode_video(path):
        scale = min(1.0, 640 / max(frame.width, frame.height))
        small = frame.reformat(round(frame.width * scale), round(frame.height * scale), format="rgb24",
                               interpolation="AREA")
        batch.append((frame.to_ndarray(format="rgb24"), small.to_ndarray(), frame.width / small.width))
        if len(batch) == 4:
            flush()
    if batch:
        flush()
    return boxes, probs, hists, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("video")
    parser.add_argument("--cache", help="detections .npz: read if present, else written")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.cache and os.path.exists(args.cache):
        d = np.load(args.cache)
        n = int(d["n"])
        boxes, probs, hists = ([d[f"{k}_{i}"] for i in range(n)] for k in ("boxes", "probs", "hists"))
        seconds = float(d["seconds"])
    else:
        boxes, probs, hists, seconds = detect(args.video)
        if args.cache:
            np.savez(args.cache, n=len(boxes), seconds=seconds,
                     **{f"{k}_{i}": v[i] for k, v in (("boxes", boxes), ("probs", probs), ("hists", hists))
                        for i in range(len(boxes))})
    info = probe(args.video)
    tracker = PeopleTracker(max_gap=gap_frames(info.fps))
    start = time.perf_counter()
    ids = [tracker.update(b, p, h) for b, p, h in zip(boxes, probs, hists)]
    track_seconds = time.perf_counter() - start
    people = summary(ids, boxes)
    n = len(ids)
    samples = np.linspace(0, n - 1, SAMPLES).round().astype(int).tolist()
    columns = list(range(0, n, SHEET_STEP))
    sheet = Image.new("RGB", (30 + TILE * len(columns), TILE * len(people)), (255, 255, 255))
    for row, p in enumerate(people):
        ImageDraw.Draw(sheet).text((4, TILE * row + TILE // 2 - 6), str(p.person), fill=(0, 0, 0))
    for f, (_, frame) in enumerate(decode_video(args.video)):
        if f not in samples and f not in columns:
            continue
        image = frame.to_image()
        if f in columns:
            for row, p in enumerate(people):
                for x1, y1, x2, y2 in boxes[f][ids[f] == p.person]:
                    m = 0.15 * (x2 - x1)
                    crop = image.crop((int(x1 - m), int(y1 - m), int(x2 + m), int(y2 + m))).resize((TILE, TILE))
                    sheet.paste(crop, (30 + TILE * columns.index(f), TILE * row))
        if f not in samples:
            continue
        # dummy valence/arousal (no model here): they only show the gauges
        draw_people(image, [(int(p), b, math.sin(f / 9 + p), math.cos(f / 7 + p))
                            for p, b in zip(ids[f], boxes[f]) if p >= 0])
        image.resize((960, 540)).save(os.path.join(OUT, f"frame_{f:03d}.jpg"), quality=80)
    sheet.save(os.path.join(OUT, "tracks_sheet.jpg"), quality=85)
    result = {
        "video": os.path.basename(args.video), "frames": n, "fps": info.fps, "max_gap": tracker.max_gap,
        "detections": int(sum(len(b) for b in boxes)),
        "rejected_low_prob": int(sum(int((i < 0).sum()) for i in ids)),
        "tracks": len(people), "tracks_10_frames_or_more": sum(p.frames >= 10 for p in people),
        "track_lengths": {str(p.person): p.frames for p in people},
        "track_spans": {str(p.person): [p.first, p.last] for p in people},
        "detect_frames_per_s": round(n / seconds, 2), "track_frames_per_s": round(n / track_seconds, 1),
        "sample_frames": samples,
    }
    with open(os.path.join(OUT, "tracks.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
