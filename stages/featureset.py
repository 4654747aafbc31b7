"""DVC stage `featureset` (params: fusion.visual, fusion.audio): data/featureset.json names the stores
the models read and fingerprints them, so that train and evaluate re-run when one of those stores or
the feature set changes, and not when another extractor is added (docs/design.md §6.5)."""
from __future__ import annotations

from avfusion.errors import run_entry_point
from avfusion.featuresets import write_description
from avfusion.params import load_params

OUT = "data/featureset.json"


def main() -> None:
    write_description(load_params("fusion"), OUT)


if __name__ == "__main__":
    run_entry_point("featureset", main)
