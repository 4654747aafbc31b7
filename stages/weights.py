"""DVC stage `weights` (params: visual.weights/seed, audio.weights/seed/input_repr/embedding_size):
the backbones' weight files in data/weights/, downloaded, copied or seeded."""
from __future__ import annotations

import os
import sys

from avfusion.params import load_params
from avfusion.weights import AUDIO_OUT, VISUAL_OUT, WeightsError, make_audio, make_visual


def main() -> None:
    visual, audio = load_params("visual"), load_params("audio")
    os.makedirs(os.path.dirname(VISUAL_OUT), exist_ok=True)
    try:
        make_visual(str(visual["weights"]), visual["seed"], VISUAL_OUT)
        make_audio(str(audio["weights"]), audio["seed"], audio["input_repr"], audio["embedding_size"], AUDIO_OUT)
    except WeightsError as exc:
        sys.exit(f"weights: {exc}")
    print(f"weights: visual={visual['weights']} audio={audio['weights']} "
          f"({audio['input_repr']}, {audio['embedding_size']})")


if __name__ == "__main__":
    main()
