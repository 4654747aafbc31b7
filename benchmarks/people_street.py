"""Multi-person tracking on the shared street clip: detections (avfusion/faces/mtcnn.py's MTCNN on the
640-px copy, as in extraction) + avfusion/faces/people.py's tracker, track counts and lengths, sample
frames with ids drawn, and a contact sheet (one row per track, its face every 5 frames) on which identity
switches are counted by eye.

    python benchmarks/people_street.py [VIDEO] [--cache dets.npz] [--quick] [--out DIR]

VIDEO defaults to $AVFUSION_MEDIA/street_crowd_1080p25.mp4 (a 1080p street crowd); without it the
script says so in one line and stops. Writes DIR (default reports/people)/*.jpg and tracks.json.
`--quick`: the clip's first 10 frames, into a temporary directory unless --out is given.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

from bench import clip

from avfusion.app.overlay import draw_people
from avfusion.faces.mtcnn import FaceDetector
from avfusion.faces.people import PeopleTracker, appearance, gap_frames, summary
from avfusion.sources.media import decode_video, probe

# real clips are not in the repository: a folder of them is named by AVFUSION_MEDIA or each script's option
STREET = os.path.join(os.environ["AVFUSION_MEDIA"], "street_crowd_1080p25.mp4") if "AVFUSION_MEDIA" in os.environ else ""
QUICK_FRAMES = 10
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", default=STREET)
    parser.add_argument("--cache", help="detections .npz: read if present, else written")
    parser.add_argument("--quick", action="store_true", help=f"the first {QUICK_FRAMES} frames only")
    parser.add_argument("--out", help="folder of the images and tracks.json (default: reports/people; "
                                      "--quick: a temporary one)")
    args = parser.parse_args()
    if not os.path.isfile(args.video):
        print(f"people_street: skipped: {args.video} not found (give VIDEO, or set AVFUSION_MEDIA to a folder "
              "holding street_crowd_1080p25.mp4)")
        return
    out = args.out or (os.path.join(tempfile.gettempdir(), "avfusion-bench-quick", "people") if args.quick
                       else os.path.join(REPO, "reports", "people"))
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        video = clip(args.video, os.path.join(tmp, "head.mp4"), frames=QUICK_FRAMES) if args.quick else args.video
        track(video, os.path.basename(args.video), args.cache, out)


def track(video: str, name: str, cache: str | None, out: str) -> None:
    """Detect (or read the cached detections), track, draw and write the results into `out`."""
    if cache and os.path.exists(cache):
        d = np.load(cache)
        n = int(d["n"])
        boxes, probs, hists = ([d[f"{k}_{i}"] for i in range(n)] for k in ("boxes", "probs", "hists"))
        seconds = float(d["seconds"])
    else:
        boxes, probs, hists, seconds = detect(video)
        if cache:
            np.savez(cache, n=len(boxes), seconds=seconds,
                     **{f"{k}_{i}": v[i] for k, v in (("boxes", boxes), ("probs", probs), ("hists", hists))
                        for i in range(len(boxes))})
    info = probe(video)
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
    for f, (_, frame) in enumerate(decode_video(video)):
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
        image.resize((960, 540)).save(os.path.join(out, f"frame_{f:03d}.jpg"), quality=80)
    sheet.save(os.path.join(out, "tracks_sheet.jpg"), quality=85)
    result = {
        "video": name, "frames": n, "fps": info.fps, "max_gap": tracker.max_gap,
        "detections": int(sum(len(b) for b in boxes)),
        "rejected_low_prob": int(sum(int((i < 0).sum()) for i in ids)),
        "tracks": len(people), "tracks_10_frames_or_more": sum(p.frames >= 10 for p in people),
        "track_lengths": {str(p.person): p.frames for p in people},
        "track_spans": {str(p.person): [p.first, p.last] for p in people},
        "detect_frames_per_s": round(n / seconds, 2), "track_frames_per_s": round(n / track_seconds, 1),
        "sample_frames": samples,
    }
    with open(os.path.join(out, "tracks.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
