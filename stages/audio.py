"""DVC stage `audio` (params: audio): an OpenL3 embedding for every decoded frame, into data/features/audio.

    python -m stages.audio         (or under torchrun, one rank per GPU)
"""
from __future__ import annotations

from avfusion.audio import OpenL3Extractor
from avfusion.errors import run_entry_point
from avfusion.extract import run_stage
from avfusion.params import load_params


def main() -> None:
    run_stage(OpenL3Extractor, load_params("audio"))


if __name__ == "__main__":
    run_entry_point("audio", main)
