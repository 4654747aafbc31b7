"""DVC stage `extract@<name>` (params: <name>), one per name in `features.extractors`: the registered
extractor's features for every decoded frame, into data/features/<name> (avfusion/extractors.py).

    python -m stages.extract vad        (or under torchrun, one rank per GPU)
"""
from __future__ import annotations

import sys

from avfusion.errors import ParamsError, run_entry_point
from avfusion.extract import run_stage
from avfusion.extractors import get_extractor
from avfusion.params import load_params


def main() -> None:
    if len(sys.argv) != 2:
        raise ParamsError("usage: python -m stages.extract <extractor name> (see features.extractors)")
    extractor = get_extractor(sys.argv[1])
    run_stage(extractor, load_params(extractor.name))


if __name__ == "__main__":
    run_entry_point("extract", main)
