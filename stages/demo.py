"""DVC stage `demo` (params: demo): the built-in dataset of real encoded videos, into data/demo."""
from __future__ import annotations

import csv
import os
import shutil

from avfusion.demo import make_video
from avfusion.errors import run_entry_point
from avfusion.params import load_params

OUT_DIR = "data/demo"


def main() -> None:
    params = load_params("demo")
    shutil.rmtree(OUT_DIR, ignore_errors=True)
    os.makedirs(os.path.join(OUT_DIR, "videos"))
    os.makedirs(os.path.join(OUT_DIR, "labels"))
    splits = [make_video(i, params, OUT_DIR) for i in range(params["videos"])]
    with open(os.path.join(OUT_DIR, "splits.csv"), "w", newline="") as f:
        csv.writer(f).writerows([("video_id", "split"), *splits])
    print(f"demo: {len(splits)} videos in {OUT_DIR}")


if __name__ == "__main__":
    run_entry_point("demo", main)
