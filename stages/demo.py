"""DVC stage `demo` (params: demo): the built-in dataset of real encoded videos, into data/demo."""
from __future__ import annotations

import csv
import os
import shutil

from avfusion import paths
from avfusion.errors import run_entry_point
from avfusion.params import load_params
from avfusion.sources.demo import make_video


def main() -> None:
    params = load_params("demo")
    out_dir = paths.project("data", "demo")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(os.path.join(out_dir, "videos"))
    os.makedirs(os.path.join(out_dir, "labels"))
    splits = [make_video(i, params, out_dir) for i in range(params["videos"])]
    with open(os.path.join(out_dir, "splits.csv"), "w", newline="") as f:
        csv.writer(f).writerows([("video_id", "split"), *splits])
    print(f"demo: {len(splits)} videos in {out_dir}")


if __name__ == "__main__":
    run_entry_point("demo", main)
