"""DVC stage `train` (params: fusion, train; data.source, visual.weights, audio.weights are recorded in
each model's config.json): one fusion model per fold into models/, curves into reports/train."""
from __future__ import annotations

from avfusion.errors import run_entry_point
from avfusion.params import load_params
from avfusion.train import run


def main() -> None:
    fusion, train = load_params("fusion"), load_params("train")
    trained_on = {"data_source": load_params("data")["source"],
                  "visual_weights": load_params("visual")["weights"],
                  "audio_weights": load_params("audio")["weights"]}
    run(fusion, train, trained_on=trained_on)


if __name__ == "__main__":
    run_entry_point("train", main)
