"""DVC stage `evaluate` (params: eval): metrics (each CCC with its 95% bootstrap interval), per-video CCC,
ABAW prediction files and plots."""
from __future__ import annotations

from avfusion.errors import run_entry_point
from avfusion.learning.evaluate import run
from avfusion.params import load_params


def main() -> None:
    metrics = run(load_params("eval"))
    for split, m in metrics.items():
        if isinstance(m, dict):
            cccs = "  ".join(f"{name} {m[f'ccc_{name}']:.3f}" + (f" [{m[f'ccc_{name}_low']:.3f}, {m[f'ccc_{name}_high']:.3f}]"
                                                                  if f"ccc_{name}_low" in m else "")
                             for name in ("valence", "arousal", "mean"))
            print(f"{split:>10}: CCC {cccs}  ({m['videos']} videos, {metrics['seeds']} seeds)")


if __name__ == "__main__":
    run_entry_point("evaluate", main)
