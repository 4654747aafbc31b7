"""DVC stage `weights` (params: visual.weights/seed, audio.weights/seed/input_repr/embedding_size,
expression.weights): the backbones' weight files in data/weights/, downloaded, copied or seeded."""
from __future__ import annotations

import os

from avfusion.errors import run_entry_point
from avfusion.params import load_params
from avfusion.weights import (AUDIO_NAMED, AUDIO_OUT, EXPRESSION_OUT, VISUAL_NAMED, VISUAL_OUT, check_spec, make_audio,
                              make_expression, make_visual)


def main() -> None:
    visual, audio, expression = load_params("visual"), load_params("audio"), load_params("expression")
    check_spec(visual["weights"], VISUAL_NAMED, "visual")   # all, before a download
    check_spec(audio["weights"], AUDIO_NAMED, "audio")
    check_spec(expression["weights"], ("fer",), "expression")
    os.makedirs(os.path.dirname(VISUAL_OUT), exist_ok=True)
    make_visual(visual["weights"], visual["seed"], VISUAL_OUT)
    make_audio(audio["weights"], audio["seed"], audio["input_repr"], audio["embedding_size"], AUDIO_OUT)
    make_expression(expression["weights"], EXPRESSION_OUT)
    print(f"weights: visual={visual['weights']} audio={audio['weights']} "
          f"({audio['input_repr']}, {audio['embedding_size']}) expression={expression['weights']}")


if __name__ == "__main__":
    run_entry_point("weights", main)
