"""DVC stage `visual` (params: visual): a face embedding for every decoded frame, into data/features/visual.

    python -m stages.visual        (or under torchrun, one rank per GPU)
"""
from __future__ import annotations

from avfusion.buckets import run_extraction_stage
from avfusion.errors import run_entry_point
from avfusion.params import load_params
from avfusion.visual import OUT_DIR, SKIP_REPORT, extract_store


def main() -> None:
    run_extraction_stage("visual", load_params("visual"), OUT_DIR, SKIP_REPORT, extract_store)


if __name__ == "__main__":
    run_entry_point("visual", main)
