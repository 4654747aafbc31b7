"""DVC stage `visual` (params: visual): a face embedding for every decoded frame, into data/features/visual.

    python -m stages.visual        (or under torchrun, one rank per GPU)
"""
from __future__ import annotations

from avfusion.errors import run_entry_point
from avfusion.extract import run_stage
from avfusion.params import load_params
from avfusion.visual import FaceNetExtractor


def main() -> None:
    run_stage(FaceNetExtractor, load_params("visual"))


if __name__ == "__main__":
    run_entry_point("visual", main)
