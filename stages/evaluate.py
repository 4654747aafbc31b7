"""DVC stage `evaluate` (params: eval): metrics, per-video CCC, ABAW prediction files and plots."""
from __future__ import annotations

from avfusion.errors import run_entry_point
from avfusion.learning.evaluate import run
from avfusion.params import load_params


def main() -> None:
    metrics = run(load_params("eval"))
    for split, m in metrics.items():
        if isinstance(m, dict):
            print(f"{split:>10}: CCC valence {m['ccc_valence']:.3f}  arousal {m['ccc_arousal']:.3f}  "
                  f"mean {m['ccc_mean']:.3f}  ({m['videos']} videos)")


if __name__ == "__main__":
    run_entry_point("evaluate", main)
