"""Training recipes (avfusion/recipes.py) and what they switch on: windows, losses, schedules, outputs,
post-processing, the ridge baseline and the grouped cross-validation folds."""
import json
import os

import numpy as np
import pytest
import torch
from test_windows import make_dataset

from avfusion.errors import DatasetError, ParamsError
from avfusion.learning.evaluate import postprocess
from avfusion.learning.fusion import build_model
from avfusion.learning.metrics import window_ccc_loss
from avfusion.learning.recipes import RECIPES, eval_settings, resolve
from avfusion.learning.train import fold_entries, load_model, make_scheduler, run
from avfusion.learning.windows import window_starts

from conftest import project_root

SMALL = {"type": "lfan", "dim": 16, "hidden": 8, "dropout": 0.1, "tcn_kernel": 3, "tcn_dropout": 0.1}


def test_recipe_fills_in_null_keys_and_an_explicit_value_wins():
    fusion, train, post = resolve({"type": "jca", "output": None}, {"recipe": "jca_paper", "window": None, "epochs": 3})
    assert fusion["output"] == "linear"
    assert train["window"] == 256 and train["batch_size"] == 96 and train["scheduler"] == "step"
    assert train["epochs"] == 3                                   # set by the user: kept
    assert post == {"smooth_valence": 20, "smooth_arousal": 50, "smooth_mode": "constant",
                    "smooth_order": "clip_then_smooth"}
    _, default, _ = resolve({"type": "jca"}, {})
    assert default["recipe"] == "default" and default["window"] == 64 and default["scheduler"] == "cosine"


@pytest.mark.parametrize("section, key, value", [
    ("train", "last_window", "wrap"), ("train", "window", 0), ("train", "lr", -1.0),
    ("train", "per_dimension", "yes"), ("fusion", "output", "sigmoid"), ("train", "recipe", "lfan")])
def test_a_bad_value_is_refused_in_one_line_naming_its_key(section, key, value):
    fusion, train = {"type": "lfan"}, {}
    {"fusion": fusion, "train": train}[section][key] = value
    with pytest.raises(ParamsError, match=rf"^params.yaml: {section}\.{key} must be ") as error:
        resolve(fusion, train)
    assert "\n" not in str(error.value)


def test_eval_params_win_over_the_recorded_recipe():
    recorded = RECIPES["jca_paper"]["eval"]
    out = eval_settings({"clip": True, "smooth_valence": 5, "smooth_arousal": None}, recorded)
    assert (out["smooth_valence"], out["smooth_arousal"], out["smooth_mode"]) == (5, 50, "constant")
    assert eval_settings({"clip": True}, None)["smooth_order"] == "smooth_then_clip"   # models before recipes


def test_recipe_settings_are_recorded_with_the_model(tmp_path):
    root = str(tmp_path)
    make_dataset(root)
    # lfan_paper as published, shrunk (explicit values win) so it runs in seconds on the tiny stores
    params = {"recipe": "lfan_paper", "seeds": [0], "device": "cpu", "folds": 1,
              "window": 48, "hop": 32, "epochs": 3, "lr": 0.001}
    with project_root(root):
        summary, = run(SMALL, params)
    model, config = load_model(os.path.join(root, "models/fold-0"))
    expected = {**RECIPES["lfan_paper"]["train"], "window": 48, "hop": 32, "epochs": 3, "lr": 0.001,
                "recipe": "lfan_paper"}
    assert config["train"] == expected
    assert config["fusion"]["output"] == "linear" and config["fusion"]["tcn_dropout_kind"] == "channel"
    assert config["last_window"] == "shift" and config["per_dimension"] is True
    assert config["eval"] == RECIPES["lfan_paper"]["eval"]
    assert isinstance(model.valence.tcn_visual.blocks[0].drop, torch.nn.Dropout1d)
    # one model per dimension, each early-stopped on its own dimension, logged separately
    curves = os.path.join(root, "reports/train/plots/metrics")
    assert sorted(os.listdir(curves)) == ["fold-0-arousal", "fold-0-valence"]
    metrics = json.load(open(os.path.join(root, "reports/train/metrics.json")))
    assert metrics["settings"]["train"] == expected
    assert summary["ccc_mean"] == pytest.approx((summary["ccc_valence"] + summary["ccc_arousal"]) / 2)


@pytest.mark.parametrize("n, expected_pad, expected_shift", [
    (11, [0, 3, 6, 9], [0, 3, 6, 7]),     # the last window ends at frame 11 instead of overhanging
    (10, [0, 3, 6], [0, 3, 6]),           # windows already end at the last frame
    (3, [0], [0]),                        # shorter than a window: padded either way
])
def test_last_window_is_shifted_back_to_end_at_the_last_frame(n, expected_pad, expected_shift):
    assert window_starts(n, 4, 3) == expected_pad
    assert window_starts(n, 4, 3, "shift") == expected_shift


def test_window_ccc_loss_by_hand():
    rng = np.random.default_rng(0)
    pred, true = rng.standard_normal((3, 6, 2)), rng.standard_normal((3, 6, 2))
    mask = np.ones((3, 6, 2), bool)
    mask[1, 4:, 0] = False                 # window 1, valence: four counted frames
    mask[2, 1:, 1] = False                 # window 2, arousal: one frame, no CCC: left out
    cccs = []
    for w in range(3):
        for d in range(2):
            x, y = pred[w, mask[w, :, d], d], true[w, mask[w, :, d], d]
            if len(x) < 2:
                continue
            cov = np.mean((x - x.mean()) * (y - y.mean()))                    # their code: mean of products
            cccs.append(2 * cov / (x.var(ddof=1) + y.var(ddof=1) + (x.mean() - y.mean()) ** 2))
    expected = np.mean(1 - np.array(cccs))
    loss = window_ccc_loss(torch.tensor(pred), torch.tensor(true), torch.tensor(mask))
    assert len(cccs) == 5 and loss.item() == pytest.approx(expected, rel=1e-9)


def test_step_decay_schedule_values():
    """JCA: lr × 0.8 every 2 epochs after epoch 5 (0-based epochs, lr used during each epoch)."""
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler, when = make_scheduler(optimizer, RECIPES["jca_paper"]["train"], steps=100)
    assert when == "epoch"
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    factors = [1, 1, 1, 1, 1, 1, 1, 0.8, 0.8, 0.64, 0.64, 0.512]
    np.testing.assert_allclose(lrs, [1e-3 * f for f in factors], rtol=1e-12)


def test_plateau_schedule_cuts_after_patience_down_to_the_floor():
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    scheduler, when = make_scheduler(optimizer, RECIPES["lfan_paper"]["train"], steps=100)
    assert when == "validation"
    lrs = []
    for _ in range(20):
        optimizer.step()
        scheduler.step(0.5)            # validation CCC never improves after the first epoch
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[5] == 1e-5 and lrs[6] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1e-6)


def test_linear_output_is_unbounded_and_clipped_at_test_time():
    torch.manual_seed(0)
    visual, audio = 50 * torch.randn(2, 16, 12), 50 * torch.randn(2, 16, 8)
    valid = torch.ones(2, 16, dtype=torch.bool)
    outputs = {}
    for output in ("tanh", "linear"):
        torch.manual_seed(0)
        model = build_model({"type": "concat", "dim": 16, "output": output}, 16, 12, 8).eval()
        outputs[output] = model(visual, valid, audio, valid).detach()
    assert outputs["tanh"].abs().max() <= 1 < outputs["linear"].abs().max()
    torch.testing.assert_close(outputs["tanh"], torch.tanh(outputs["linear"]))   # same weights, no squashing
    clipped = postprocess(outputs["linear"][0].numpy(), True, 0, 0)
    np.testing.assert_array_equal(clipped, np.clip(outputs["linear"][0].numpy().astype(np.float64), -1, 1))


def test_jca_post_processing_clips_then_smooths_with_zero_padding():
    pred = np.array([[3.0, 0.9], [3.0, 0.9], [0.0, 0.9], [-3.0, 0.9], [0.0, 0.9]])
    out = postprocess(pred, True, 3, 5, mode="constant", order="clip_then_smooth")
    # clipped to [1, 1, 0, -1, 0] first, then means over 3 frames with zeros beyond the ends
    np.testing.assert_allclose(out[:, 0], [2 / 3, 2 / 3, 0, -1 / 3, -1 / 3])
    np.testing.assert_allclose(out[:, 1], [0.9 * 3 / 5, 0.9 * 4 / 5, 0.9, 0.9 * 4 / 5, 0.9 * 3 / 5])
    # the default order smooths the unclipped values, then clips
    np.testing.assert_allclose(postprocess(pred, True, 3, 0)[:, 0], [1, 1, 0, -1, -1])


def test_ridge_end_to_end_on_tiny_stores(tmp_path):
    """Ridge is fitted by scikit-learn, stored as plain tensors, reloaded and scored by the evaluate stage."""
    from sklearn.linear_model import Ridge

    from avfusion.learning.evaluate import run as evaluate
    from avfusion.learning.windows import load_split, predict_split
    from avfusion.sources.manifest import read_manifest

    root = str(tmp_path)
    make_dataset(root)
    fusion = {"type": "ridge", "ridge_alphas": [0.1, 10.0]}
    with project_root(root):
        summary, = run(fusion, {"seeds": [0], "device": "cpu", "folds": 1})
    assert summary["alpha"] in (0.1, 10.0) and summary["ccc_mean"] > 0.5
    state = torch.load(os.path.join(root, "models/fold-0/model.pt"), weights_only=True)
    assert set(state) == {"visual_mean", "visual_std", "audio_mean", "audio_std", "coef", "intercept"}
    model, config = load_model(os.path.join(root, "models/fold-0"))
    assert config["fusion"]["output"] == "linear"
    # dvc.yaml declares the training curves as an output: ridge draws validation CCC per penalty
    assert os.path.exists(os.path.join(root, "reports/train/plots/metrics/fold-0/validation/ccc_mean.tsv"))

    # the same fit done directly with scikit-learn on the standardised, absent-zeroed training rows
    manifest = read_manifest(os.path.join(root, "data/manifest.csv"))
    stores = os.path.join(root, "data/features/facenet"), os.path.join(root, "data/features/openl3")
    train = load_split([e for e in manifest if e["split"] == "train"], *stores)
    v = (train.visual - model.visual_mean) / model.visual_std * train.visual_valid[:, None]
    a = (train.audio - model.audio_mean) / model.audio_std * train.audio_valid[:, None]
    x = torch.cat([v, a], 1).double().numpy()
    y = train.labels_numpy()
    keep = (train.visual_valid | train.audio_valid).numpy() & (y[:, 0] != -5)
    direct = Ridge(alpha=summary["alpha"]).fit(x[keep], y[keep, 0])
    test = load_split([e for e in manifest if e["split"] == "test"], *stores)
    xt = torch.cat([(test.visual - model.visual_mean) / model.visual_std * test.visual_valid[:, None],
                    (test.audio - model.audio_mean) / model.audio_std * test.audio_valid[:, None]], 1)
    np.testing.assert_allclose(predict_split(model, test, config["window"], config["hop"])[:, 0],
                               direct.predict(xt.double().numpy()), atol=1e-4)

    with project_root(root):
        metrics = evaluate({"clip": True, "plot_videos": 1, "device": "cpu"})
    assert metrics["test"]["ccc_mean"] > 0.5 and metrics["folds"] == 1


def test_group_splitter_keeps_trials_of_one_file_together_and_partitions_the_pool():
    rows = [{"video_id": f"{v}_{side}", "path": f"videos/{v}.mp4", "media": v, "split": split}
            for v, split in (("a", "train"), ("b", "train"), ("c", "validation"), ("d", "train"),
                             ("e", "train"), ("f", "validation"))
            for side in ("left", "right")]
    folds = fold_entries(rows, 3)
    assert [e["video_id"] for e in folds[0][1]] == ["c_left", "c_right", "f_left", "f_right"]  # official
    held = [e["video_id"] for _, val in folds for e in val]
    assert sorted(held) == sorted(e["video_id"] for e in rows)      # every trial validates exactly once
    for train, val in folds:
        assert not {e["path"] for e in train} & {e["path"] for e in val}
        assert len(train) + len(val) == len(rows)
    with pytest.raises(DatasetError, match="^train.folds"):
        fold_entries(rows, 6)                                       # 4 training files make 4 blocks at most
