"""DVC stage `train` (params: fusion, train): one fusion model per fold into models/, curves into reports/train."""
from __future__ import annotations

from avfusion.params import load_params
from avfusion.train import run


def main() -> None:
    run(load_params("fusion"), load_params("train"))


if __name__ == "__main__":
    main()
