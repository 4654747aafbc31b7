"""DVC stage `audio` (params: audio): an OpenL3 embedding for every decoded frame, into data/features/audio."""
from __future__ import annotations

from avfusion.audio import OUT_DIR, SKIP_REPORT, extract_store
from avfusion.buckets import run_extraction_stage
from avfusion.errors import run_entry_point
from avfusion.params import load_params


def main() -> None:
    run_extraction_stage("audio", load_params("audio"), OUT_DIR, SKIP_REPORT, extract_store)


if __name__ == "__main__":
    run_entry_point("audio", main)
