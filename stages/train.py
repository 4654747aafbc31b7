"""DVC stage `train` (params: fusion, train; data.source and the weights of the feature set's extractors,
from data/featureset.json, are recorded in each model's config.json): one fusion model per fold into
models/, curves into reports/train."""
from __future__ import annotations

from avfusion.errors import run_entry_point
from avfusion.learning.featuresets import read_description, weights_of
from avfusion.learning.train import run
from avfusion.params import load_params


def main() -> None:
    fusion, train = load_params("fusion"), load_params("train")
    weights = weights_of(read_description())
    run(fusion, train, trained_on={"data_source": load_params("data")["source"], "weights": weights})


if __name__ == "__main__":
    run_entry_point("train", main)
