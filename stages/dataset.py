"""DVC stage `dataset` (params: data): data/manifest.csv, one row per video trial, the frame times of
every media file in data/frame_times/, and reports/dataset.json."""
from __future__ import annotations

import csv
import json
import os

from avfusion import paths
from avfusion.errors import run_entry_point
from avfusion.params import load_params
from avfusion.sources.dataset import build_manifest
from avfusion.sources.manifest import COLUMNS


def main() -> None:
    skipped: list[dict] = []
    rows = build_manifest(load_params("data"), skipped)
    os.makedirs(os.path.dirname(paths.manifest()), exist_ok=True)
    with open(paths.manifest(), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in COLUMNS} for r in rows)
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "validation", "test")}
    mismatched = [r for r in rows if r["frames"] and r["frames"] != r["label_frames"]]
    report = paths.reports("dataset.json")
    os.makedirs(os.path.dirname(report), exist_ok=True)
    with open(report, "w") as f:
        json.dump({"skipped": skipped,
                   "label_rows_differ": [{"video_id": r["video_id"], "label_rows": r["label_frames"],
                                          "frames": r["frames"]} for r in mismatched]}, f, indent=2)
        f.write("\n")
    print(f"manifest: {len(rows)} videos {counts}; {len(mismatched)} with label rows != container frames")
    for r in mismatched[:20]:
        print(f"  {r['video_id']}: {r['label_frames']} label rows, {r['frames']} frames (labels trusted)")
    for s in skipped:
        print(f"  skipped {s['problem']}")


if __name__ == "__main__":
    run_entry_point("dataset", main)
