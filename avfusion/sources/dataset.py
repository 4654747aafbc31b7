"""Build `data/manifest.csv` (columns: avfusion/manifest.py): one row per video trial from any supported source.

- demo:     `data/demo` as written by avfusion.demo (`splits.csv`, `videos/`, `labels/`).
- affwild2: the official layout: `<root>/<annotations>/{Train_Set,Validation_Set[,Test_Set]}/<trial>.txt`
            and videos `<root>/<videos>/**/<video>.(mp4|avi|...)`; trials `<video>_left` / `_right`
            are two people sharing one video (and its audio).
- folder:   `<root>/<id>.<ext>` with `<root>/<id>.csv` (`valence,arousal` per frame); splits by a
            stable hash of the id.
The annotation's row count is trusted over the container's frame count (docs/design.md §3): a difference
of up to `MAX_FRAME_DIFF` frames (or 1 %) is recorded (`label_frames` vs `frames`, and
reports/dataset.json) and repaired downstream (learning/windows.py: frames past the labels are not used,
label rows past the decoded frames get invalid, zero features). A larger difference means the label file
belongs to another video and is an error: it would misalign every frame.

Bad media (`MediaError`) stops the stage with one line, or with `data.on_error: skip` leaves the video
out of the manifest and lists it in reports/dataset.json. Bad annotations always stop the stage.
Every media file is decoded once here, for the timestamps of its frames (avfusion/sources/manifest.py):
a truncated or corrupt video is found here, and no extractor decodes a video only to learn its clock.
"""
from __future__ import annotations

import csv
import glob
import os
import zlib

from avfusion import paths
from avfusion.errors import AnnotationError, DatasetError, MediaError
from avfusion.paths import file_sha256
from avfusion.sources.annotations import check_video_id, inside, read_labels
from avfusion.sources.manifest import frame_times_path, write_frame_times
from avfusion.sources.media import frame_times, probe

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv")
AFFWILD2_SPLITS = {"Train_Set": "train", "Validation_Set": "validation", "Test_Set": "test"}
MAX_FRAME_DIFF = 2            # label rows vs declared frames, beyond 1 % of the frames


def check_frame_counts(trial: dict) -> None:
    frames, rows = trial["frames"], trial["label_frames"]
    if frames and abs(rows - frames) > max(MAX_FRAME_DIFF, 0.01 * frames):
        raise AnnotationError(f"{trial['labels']}: {rows} label rows but {trial['path']} has {frames} frames "
                              f"(more than {MAX_FRAME_DIFF} or 1 % apart: labels of another video?)")


def demo_trials(root: str) -> list[dict]:
    splits = os.path.join(root, "splits.csv")
    if not os.path.isfile(splits):
        raise DatasetError(f"{splits}: not found (run the demo stage, or set data.source for your data)")
    with open(splits) as f:
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
                raise DatasetError(f"{label_path}: no video named {stem}.* under {os.path.join(root, videos)}")
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
            raise AnnotationError(f"{path}: no label file {labels}")
        u = zlib.crc32(video_id.encode()) / 2**32    # stable: adding videos never reshuffles splits
        split = "test" if u < test else "validation" if u < test + validation else "train"
        trials.append({"video_id": video_id, "split": split, "person": "", "path": path, "labels": labels})
    return trials


def media_key(path: str) -> str:
    """The manifest's `media` column: the file's name without extension. Unique per file in every source
    (Aff-Wild2 takes one video per name, demo and folder ids are their files' names, and ids are unique),
    and bucketing stores by it keeps every video in the store its id put it in before this column."""
    return os.path.splitext(os.path.basename(path))[0]


def build_manifest(params: dict, skipped: list[dict] | None = None, times_dir: str | None = None) -> list[dict]:
    """Manifest rows sorted by id. With `on_error: skip`, unreadable videos are left out and appended
    to `skipped` (video_id, path, problem); otherwise their MediaError propagates.

    Each media file is hashed here, once per file, and the extraction stages record that SHA-256 in
    their stores' provenance instead of re-hashing every video on every run (a resume with nothing
    left to do reads no video). Here rather than in a (path, size, mtime) cache: DVC re-runs this stage
    whenever the videos change (they are its dependency), so the manifest always names the exact bytes
    the later stages read, and no cache state has to be shared between extraction processes and ranks.
    Each file's frame times go to `times_dir` (default data/frame_times) under its SHA-256, unless
    they are there already (a re-run, or a run cut short, decodes only new files).
    """
    source, given = params["source"], params["root"]
    # a relative root is the project's (avfusion/paths.py), and the manifest keeps its paths relative
    root = given if os.path.isabs(given) else paths.project(given)
    if not os.path.isdir(root):
        raise DatasetError(f"{given}: data root not found (data.root in params.yaml)")
    if source == "demo":
        trials = demo_trials(root)
    elif source == "affwild2":
        trials = affwild2_trials(root, params.get("annotations", "annotations/VA_Estimation_Challenge"),
                                 params.get("videos", "videos"))
    elif source == "folder":
        trials = folder_trials(root, params["validation"], params["test"])
    else:
        raise ValueError(f"data.source {source!r} is not demo, affwild2 or folder")   # params refuse it first
    if not trials:
        raise DatasetError(f"{given}: no videos with labels found for source {source!r}")
    if not os.path.isabs(given):
        for t in trials:
            t.update(path=os.path.relpath(t["path"], paths.root()), labels=os.path.relpath(t["labels"], paths.root()))
    ids = [t["video_id"] for t in trials]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{root}: duplicate video ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    skip = params.get("on_error") == "skip"         # validated by the stage's load_params
    files, kept = {}, []     # path -> (probe, SHA-256): trials sharing a file read it once
    for t in trials:
        at = lambda p: p if os.path.isabs(p) else paths.project(p)   # noqa: E731
        labels = read_labels(at(t["labels"]))           # annotation errors are never skipped
        try:
            if t["path"] not in files:
                files[t["path"]] = (probe(at(t["path"])), file_sha256(at(t["path"])))
                if not os.path.isfile(frame_times_path(files[t["path"]][1], times_dir)):
                    write_frame_times(files[t["path"]][1], frame_times(at(t["path"])), times_dir)
            info, sha256 = files[t["path"]]
        except MediaError as exc:
            if not skip:
                raise
            if skipped is not None:   # paths as the manifest has them: the report is the same in every clone
                skipped.append({"video_id": t["video_id"], "path": t["path"],
                                "problem": str(exc).replace(at(t["path"]), t["path"])})
            continue
        t.update(fps=round(info.fps, 4), frames=info.frames, label_frames=len(labels),
                 media=media_key(t["path"]), sha256=sha256)
        check_frame_counts(t)
        kept.append(t)
    if not kept:
        raise DatasetError(f"{root}: every video was skipped as unreadable")
    remove_stale_times({t["sha256"] for t in kept}, times_dir)
    return sorted(kept, key=lambda t: t["video_id"])


def remove_stale_times(keep: set[str], times_dir: str | None = None) -> None:
    """Frame times of files no longer in the manifest (and leftovers of a killed write)."""
    directory = times_dir or paths.frame_times_dir()
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if name.removesuffix(".npy") not in keep:
            os.remove(os.path.join(directory, name))
