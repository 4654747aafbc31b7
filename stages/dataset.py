"""Build `data/manifest.csv`: one row per video (trial) from any supported source.

Columns: video_id, path, split, fps, frames, labels, label_frames, person.
- demo:     `data/demo` as written by stages.demo (`splits.csv`, `videos/`, `labels/`).
- affwild2: the official layout: `<root>/<annotations>/{Train_Set,Validation_Set[,Test_Set]}/<trial>.txt`
            and videos `<root>/<videos>/**/<video>.(mp4|avi|...)`; trials `<video>_left` / `_right`
            are two people sharing one video (and its audio).
- folder:   `<root>/<id>.<ext>` with `<root>/<id>.csv` (`valence,arousal` per frame); splits by a
            stable hash of the id.
The annotation's row count is trusted over the container's frame count; differences are recorded
(`label_frames` vs `frames`) and reported, not fatal.
"""
from __future__ import annotations

import csv
import glob
import os
import zlib

from stages.annotations import check_video_id, inside, read_labels
from stages.media import probe

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv")
COLUMNS = ["video_id", "path", "split", "fps", "frames", "labels", "label_frames", "person"]
AFFWILD2_SPLITS = {"Train_Set": "train", "Validation_Set": "validation", "Test_Set": "test"}


def demo_trials(root: str) -> list[dict]:
    with open(os.path.join(root, "splits.csv")) as f:
        rows = list(csv.DictReader(f))
    return [{"video_id": check_video_id(r["video_id"], "splits.csv"), "split": r["split"], "person": "",
             "path": inside(root, "videos", r["video_id"] + ".mp4"),
             "labels": inside(root, "labels", r["video_id"] + ".txt")} for r in rows]


def affwild2_trials(root: str, annotations: str, videos: str) -> list[dict]:
    by_stem = {}
    for path in sorted(glob.glob(os.path.join(inside(root, videos), "**", "*"), recursive=True)):
        stem, ext = os.path.splitext(os.path.basename(path))
        if ext.lower() in VIDEO_EXTENSIONS:
            by_stem.setdefault(stem, path)
    trials = []
    for folder, split in AFFWILD2_SPLITS.items():
        for label_path in sorted(glob.glob(os.path.join(inside(root, annotations), folder, "*.txt"))):
            trial = check_video_id(os.path.splitext(os.path.basename(label_path))[0], label_path)
            stem, person = trial, ""
            for side in ("left", "right"):
                if trial.endswith("_" + side):
                    stem, person = trial[: -len(side) - 1], side
            if stem not in by_stem:
                raise FileNotFoundError(f"{label_path}: no video named {stem}.* under {os.path.join(root, videos)}")
            trials.append({"video_id": trial, "split": split, "person": person,
                           "path": by_stem[stem], "labels": label_path})
    return trials


def folder_trials(root: str, validation: float, test: float) -> list[dict]:
    trials = []
    for path in sorted(glob.glob(os.path.join(root, "*"))):
        stem, ext = os.path.splitext(os.path.basename(path))
        if ext.lower() not in VIDEO_EXTENSIONS:
            continue
        video_id = check_video_id(stem, path)
        labels = inside(root, video_id + ".csv")
        if not os.path.exists(labels):
            raise FileNotFoundError(f"{path}: no label file {labels}")
        u = zlib.crc32(video_id.encode()) / 2**32    # stable: adding videos never reshuffles splits
        split = "test" if u < test else "validation" if u < test + validation else "train"
        trials.append({"video_id": video_id, "split": split, "person": "", "path": path, "labels": labels})
    return trials


def build_manifest(params: dict) -> list[dict]:
    source, root = params["source"], params["root"]
    if source == "demo":
        trials = demo_trials(root)
    elif source == "affwild2":
        trials = affwild2_trials(root, params.get("annotations", "annotations/VA_Estimation_Challenge"),
                                 params.get("videos", "videos"))
    elif source == "folder":
        trials = folder_trials(root, params["validation"], params["test"])
    else:
        raise ValueError(f"data.source must be demo, affwild2 or folder, not {source!r}")
    if not trials:
        raise FileNotFoundError(f"{root}: no videos with labels found for source {source!r}")
    ids = [t["video_id"] for t in trials]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{root}: duplicate video ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    probes = {}
    for t in trials:
        info = probes.get(t["path"]) or probes.setdefault(t["path"], probe(t["path"]))
        t.update(fps=round(info.fps, 4), frames=info.frames, label_frames=len(read_labels(t["labels"])))
    return sorted(trials, key=lambda t: t["video_id"])


def main() -> None:
    from stages.params import load_params

    rows = build_manifest(load_params("data"))
    os.makedirs("data", exist_ok=True)
    with open("data/manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in COLUMNS} for r in rows)
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "validation", "test")}
    mismatched = [r for r in rows if r["frames"] and r["frames"] != r["label_frames"]]
    print(f"manifest: {len(rows)} videos {counts}; {len(mismatched)} with label rows != container frames")
    for r in mismatched[:20]:
        print(f"  {r['video_id']}: {r['label_frames']} label rows, {r['frames']} frames (labels trusted)")


if __name__ == "__main__":
    main()
