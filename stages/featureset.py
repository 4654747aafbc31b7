"""DVC stage `featureset` (params: fusion.visual, fusion.audio): data/featureset.json names the stores
the models read, fingerprints them and records the weights their extractors ran with, so that train
and evaluate re-run when one of those stores or the feature set changes, and not when another
extractor is added (docs/design.md §6.5)."""
from __future__ import annotations

from avfusion.errors import run_entry_point
from avfusion.learning.featuresets import write_description
from avfusion.params import load_params


def main() -> None:
    write_description(load_params("fusion"))


if __name__ == "__main__":
    run_entry_point("featureset", main)
