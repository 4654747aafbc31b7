"""DVC stages `facenet`, `openl3`, `extract@<name>` (features.extractors) and `faces@<name>`
(features.faces): extractor <name>'s weight files into data/weights/<name> and its features for every
decoded frame into data/features/<name> (avfusion/extraction/).

    python -m stages.extract <name>        (or under torchrun, one rank per GPU)
"""
from __future__ import annotations

import sys

from avfusion.errors import ParamsError, run_entry_point
from avfusion.extraction.registry import get
from avfusion.extraction.runner import run_stage
from avfusion.params import load_params


def main() -> None:
    if len(sys.argv) != 2:
        raise ParamsError("usage: python -m stages.extract <extractor name>")
    extractor = get(sys.argv[1])
    if not extractor.backbone:      # a plug-in: listed where its stage family reads it
        features = load_params("features")
        where = "faces" if extractor.reads_faces else "extractors"
        if extractor.name not in features[where]:
            reads = "the faces of the facenet store" if extractor.reads_faces else "each video"
            raise ParamsError(f"params.yaml: {extractor.name} reads {reads}: list it in features.{where}")
    run_stage(extractor, load_params(extractor.name))


if __name__ == "__main__":
    run_entry_point(sys.argv[1] if len(sys.argv) == 2 else "extract", main)
