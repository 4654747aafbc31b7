"""Training recipes (`train.recipe`): the demo defaults and the papers' published set-ups (docs/design.md §6, §7).

A recipe is a value for every key it governs in the `fusion`, `train` and `eval` sections. params.yaml
leaves those keys `null`; `resolve` fills each null key from the recipe, and a value the user sets
(params.yaml or `dvc exp run -S`) wins. The resolved values are what ran: models/fold-*/config.json
records them (the evaluate stage reads the recipe's post-processing from there unless `eval` sets it)
and reports/train/metrics.json repeats them under `settings`, so `dvc exp show` lists them.

- `jca_paper`: Praveen et al. (CVPRW 2022) and the authors' code (praveena2j, main.py / val.py). Their
  visual backbone turns 8 clips of 32 frames into 8 feature vectors (L = 8). The cached features here are
  per frame, so a window is the same 256 frames as 256 rows (L = 256 in the JCA block) instead of 8
  clip vectors: same time span, finer attention, and one prediction per frame without upsampling.
  Adam (their code), lr 1e-3, ×0.8 every 2 epochs after epoch 5, batch 96, 30 epochs, batch-pooled
  CCC loss, linear outputs clipped at test time, then 20 / 50-frame moving averages (mode 'constant').
  One model with a valence and an arousal head, chosen on valence + arousal: their main.py trains a
  single fusion model, not one per dimension.
- `lfan_paper`: Zhang et al. (ABAW2 2021) and sucv/ABAW2 (main.py, base/trainer.py,
  base/loss_function.py): 300-frame windows, hop 200, the last window shifted back to end at the
  video's last frame; one model per dimension (`-train_emotion` valence or arousal); per-window CCC
  loss (their CCCLoss: variances with n - 1, covariance with n); Adam lr 1e-5, weight decay 1e-3,
  ReduceLROnPlateau on validation CCC (factor 0.1, patience 5, floor 1e-6); batch 8, up to 100
  epochs, early stop after 20; channel dropout in the TCN; linear outputs clipped at test time.
  Not followed: their gradual unfreezing of the visual backbone (the features here are cached) and
  reloading the best weights after every epoch.
"""
from __future__ import annotations

import copy

from avfusion.params import check_rules, check_value

RECIPES = {
    "default": {
        "fusion": {"output": "tanh", "tcn_dropout_kind": "element"},
        "train": {"window": 64, "hop": 8, "last_window": "pad", "per_dimension": False, "loss": "batch_ccc",
                  "batch_size": 16, "epochs": 40, "patience": 8, "optimizer": "adamw", "lr": 0.001,
                  "weight_decay": 0.0001, "scheduler": "cosine", "lr_factor": 0.1, "lr_patience": 5,
                  "lr_every": 2, "lr_after": 5, "min_lr": 0.0, "grad_clip": 1.0},
        "eval": {"smooth_valence": 0, "smooth_arousal": 0, "smooth_mode": "nearest",
                 "smooth_order": "smooth_then_clip"},
    },
    "jca_paper": {
        "fusion": {"output": "linear", "tcn_dropout_kind": "element"},
        "train": {"window": 256, "hop": 32, "last_window": "pad", "per_dimension": False, "loss": "batch_ccc",
                  "batch_size": 96, "epochs": 30, "patience": 30, "optimizer": "adam", "lr": 0.001,
                  "weight_decay": 0.0, "scheduler": "step", "lr_factor": 0.8, "lr_patience": 5,
                  "lr_every": 2, "lr_after": 5, "min_lr": 0.0, "grad_clip": 0.0},
        "eval": {"smooth_valence": 20, "smooth_arousal": 50, "smooth_mode": "constant",
                 "smooth_order": "clip_then_smooth"},
    },
    "lfan_paper": {
        "fusion": {"output": "linear", "tcn_dropout_kind": "channel"},
        "train": {"window": 300, "hop": 200, "last_window": "shift", "per_dimension": True, "loss": "window_ccc",
                  "batch_size": 8, "epochs": 100, "patience": 20, "optimizer": "adam", "lr": 0.00001,
                  "weight_decay": 0.001, "scheduler": "plateau", "lr_factor": 0.1, "lr_patience": 5,
                  "lr_every": 2, "lr_after": 5, "min_lr": 0.000001, "grad_clip": 0.0},
        "eval": {"smooth_valence": 0, "smooth_arousal": 0, "smooth_mode": "nearest",
                 "smooth_order": "smooth_then_clip"},
    },
}

def resolve(fusion: dict, train: dict) -> tuple[dict, dict, dict]:
    """(fusion, train, eval defaults) with every recipe-governed null or missing key filled in and checked.

    `eval` holds the recipe's post-processing; the evaluate stage applies it where `eval` leaves a key null.
    """
    fusion, train = copy.deepcopy(fusion), copy.deepcopy(train)
    train["recipe"] = check_value("train", "recipe", train.get("recipe", "default"))
    chosen = RECIPES[train["recipe"]]
    for section, values in (("fusion", fusion), ("train", train)):
        for key, default in chosen[section].items():
            if values.get(key) is None:
                values[key] = default
            check_value(section, key, values[key])
    check_rules("train", train)                     # e.g. hop <= window, once the recipe filled them in
    if fusion["type"] == "ridge":
        fusion["output"] = "linear"   # a least-squares fit: squashing it afterwards would bias it
    return fusion, train, dict(chosen["eval"])


def eval_settings(params: dict, recorded: dict | None) -> dict:
    """The evaluate stage's post-processing: an `eval` key set in params wins over the value the
    model's recipe recorded in config.json; models trained before recipes get the default recipe's."""
    out = dict(params)
    for key, default in (recorded or RECIPES["default"]["eval"]).items():
        if out.get(key) is None:
            out[key] = default
        check_value("eval", key, out[key])
    return out
