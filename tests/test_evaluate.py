"""The evaluate stage: post-processing, fold merging, scores, report files and plots."""
import csv
import json
import os

import numpy as np
import pytest

from avfusion.errors import CheckpointError
from avfusion.learning.evaluate import (
    VideoResult,
    fold_dirs,
    merge_folds,
    moving_average,
    per_video_rows,
    postprocess,
    scores,
    split_metrics,
    write_abaw,
    write_metrics,
    write_per_video,
)
from avfusion.learning.metrics import INVALID, ccc_centring
from avfusion.learning.plots import pick_videos, write_plots
from avfusion.sources.annotations import read_labels

from conftest import project_root


def test_moving_average_is_centred_and_keeps_length():
    # Window 3 over [0,0,3,0,0]: each neighbour of the spike gets 3/3 = 1.
    np.testing.assert_allclose(moving_average(np.array([0, 0, 3.0, 0, 0]), 3), [0, 1, 1, 1, 0])
    np.testing.assert_allclose(moving_average(np.full(7, 0.4), 5), np.full(7, 0.4))


@pytest.mark.parametrize("frames", [0, 1])
def test_moving_average_off(frames):
    x = np.array([0.1, -0.3, 0.7])
    np.testing.assert_array_equal(moving_average(x, frames), x)


def test_postprocess_smooths_each_dimension_with_its_own_width_then_clips():
    pred = np.array([[0, 0], [0, 0], [3.0, 3.0], [0, 0], [0, 0]])
    out = postprocess(pred, clip=True, smooth_valence=3, smooth_arousal=0)
    np.testing.assert_allclose(out[:, 0], [0, 1, 1, 1, 0])     # smoothed, already in range
    np.testing.assert_allclose(out[:, 1], [0, 0, 1, 0, 0])     # not smoothed, clipped from 3
    assert postprocess(pred, clip=False, smooth_valence=0, smooth_arousal=0).max() == 3.0


def test_one_fold_is_used_as_is():
    p = np.array([[0.2, 1.4], [-0.1, 0.3]])
    np.testing.assert_array_equal(merge_folds([p]), p)   # clipping is post-processing's call


def test_folds_are_merged_by_ccc_centring_per_dimension():
    rng = np.random.default_rng(0)
    folds = [rng.uniform(-0.5, 0.5, (20, 2)) for _ in range(3)]
    merged = merge_folds(folds)
    for d in range(2):
        np.testing.assert_allclose(merged[:, d], ccc_centring([f[:, d] for f in folds], clip=False))


def test_scores_by_hand():
    # Valence: pred [1,2,3]/10 vs true [2,3,4]/10 -> CCC 4/7 (a shift), RMSE 0.1, Pearson 1.
    # Arousal: identical on the two annotated frames -> CCC 1, RMSE 0; frame 3 is -5 (excluded).
    pred = np.array([[0.1, 0.5], [0.2, -0.5], [0.3, 0.9]])
    true = np.array([[0.2, 0.5], [0.3, -0.5], [0.4, INVALID]])
    s = scores(pred, true)
    assert s["ccc_valence"] == pytest.approx(4 / 7)
    assert s["ccc_arousal"] == pytest.approx(1.0)
    assert s["ccc_mean"] == pytest.approx((4 / 7 + 1) / 2)
    assert s["rmse_valence"] == pytest.approx(0.1)
    assert s["rmse_arousal"] == pytest.approx(0.0)
    assert s["pearson_valence"] == pytest.approx(1.0)
    assert s["frames"] == 3


def _result(video_id, split, pred, true):
    pred = np.asarray(pred, dtype=float)
    return VideoResult(video_id, split, np.arange(len(pred)) / 10.0, pred,
                       None if true is None else np.asarray(true, dtype=float))


def test_split_metrics_concatenate_videos_and_skip_unlabelled_ones():
    # Video a: CCC 1; video b: constant prediction -> CCC 0 alone; concatenated 2/3 (see test_metrics).
    a = _result("a", "test", [[0, 0], [1, 1]], [[0, 0], [1, 1]])
    b = _result("b", "test", [[0.5, 0.5], [0.5, 0.5]], [[0, 0], [1, 1]])
    unlabelled = _result("c", "test", [[0.9, 0.9]], None)
    metrics = split_metrics([a, b, unlabelled])
    assert list(metrics) == ["test"]
    assert metrics["test"]["ccc_valence"] == pytest.approx(2 / 3)
    assert metrics["test"]["videos"] == 2
    rows = per_video_rows([a, b, unlabelled])
    assert [r["video_id"] for r in rows] == ["a", "b"]
    assert rows[0]["ccc_mean"] == pytest.approx(1.0) and rows[1]["ccc_mean"] == pytest.approx(0.0)


def test_abaw_file_format_round_trips_through_the_label_reader(tmp_path):
    pred = np.array([[0.25, -0.5], [1.0, 0.0], [-1.0, 0.123456]])
    path = tmp_path / "test" / "vid-30-640x360.txt"
    write_abaw(str(path), pred)
    lines = path.read_text().splitlines()
    assert lines[0] == "valence,arousal"
    assert len(lines) == 1 + len(pred)
    np.testing.assert_allclose(read_labels(str(path)), pred, atol=1e-6)


def test_metrics_json_has_no_nan(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics(str(path), {"test": {"ccc_valence": float("nan"), "ccc_arousal": 0.5}, "folds": 1})
    assert json.loads(path.read_text()) == {"test": {"ccc_valence": None, "ccc_arousal": 0.5}, "folds": 1}


def test_per_video_table(tmp_path):
    path = tmp_path / "per_video.csv"
    write_per_video(str(path), per_video_rows([_result("a", "test", [[0, 0], [1, 1]], [[0, 0], [1, 1]])]))
    rows = list(csv.DictReader(path.open()))
    assert rows == [{"split": "test", "video_id": "a", "ccc_valence": "1.0000", "ccc_arousal": "1.0000",
                     "ccc_mean": "1.0000", "frames": "2"}]


def test_fold_directories_in_numeric_order(tmp_path):
    for i in (10, 2, 0, 1):
        (tmp_path / f"fold-{i}").mkdir()
    (tmp_path / "fold-notes.txt").write_text("")
    assert [os.path.basename(d) for d in fold_dirs(str(tmp_path))] == ["fold-0", "fold-1", "fold-2", "fold-10"]
    with pytest.raises(CheckpointError, match="no fold"):
        fold_dirs(str(tmp_path / "missing"))


def _synthetic_results(rng):
    results = []
    for i in range(6):
        t = np.linspace(0, 6, 90)
        true = np.stack([np.sin(t + i), np.cos(0.7 * t + i)], axis=1) * 0.8
        true[:10, 1] = INVALID
        noise = 0.1 + 0.15 * i
        pred = np.clip(np.where(true == INVALID, 0, true) + rng.normal(0, noise, true.shape), -1, 1)
        results.append(_result(f"v{i}", "test" if i < 4 else "train", pred, true))
    return results


def test_pick_videos_spreads_over_the_ranking():
    results = _synthetic_results(np.random.default_rng(0))
    per_video = per_video_rows(results)
    picked = [r.video_id for r in pick_videos(results, per_video, 3)]
    assert picked == ["v0", "v2", "v3"] or picked[0] == "v0" and picked[-1] == "v3"
    assert len(pick_videos(results, per_video, 10)) == 4   # only the test videos


def test_plots_write_pngs_and_dvc_plot_data(tmp_path):
    results = _synthetic_results(np.random.default_rng(0))
    train_dir = tmp_path / "reports" / "train" / "plots" / "metrics"
    for series in ("train", "val"):
        (train_dir / series).mkdir(parents=True)
        (train_dir / series / "loss.tsv").write_text("timestamp\tstep\tloss\n1\t0\t0.9\n2\t1\t0.6\n")
    png_dir, data_dir = tmp_path / "reports" / "plots", tmp_path / "reports" / "plot_data"
    with project_root(tmp_path):
        write_plots(results, per_video_rows(results), 2)
    for name in ("curves", "va_scatter", "per_video_ccc", "training"):
        assert (png_dir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = sorted(os.listdir(data_dir / "curves"))
    assert len(curves) == 2
    header = (data_dir / "curves" / curves[0]).read_text().splitlines()[0]
    assert header == "time,valence_true,valence_pred,arousal_true,arousal_pred"
    assert (data_dir / "va_true.csv").read_text().startswith("valence,arousal\n")


EVAL = {"clip": True, "smooth_valence": 0, "smooth_arousal": 0, "plot_videos": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny real stores (test_windows) and two real fold models from the train stage."""
    from test_windows import make_dataset

    from avfusion.learning.train import run as train
    root = str(tmp_path_factory.mktemp("evaluate"))
    make_dataset(root)
    with project_root(root):
        train({"type": "concat", "dim": 16, "hidden": 8, "dropout": 0.1},
              {"seeds": [0], "window": 32, "hop": 8, "batch_size": 8, "epochs": 4, "lr": 0.01,
               "weight_decay": 0.0001, "patience": 4, "device": "cpu", "folds": 2})
    return root


def test_evaluate_end_to_end_on_real_stores_and_models(trained):
    from avfusion.learning.evaluate import run
    with project_root(trained):
        metrics = run(EVAL)
    assert metrics["folds"] == 2
    assert set(metrics) == {"train", "validation", "test", "folds", "seeds"} and metrics["seeds"] == 1
    assert metrics["test"]["ccc_mean"] > 0.3 and metrics["test"]["videos"] == 2
    assert json.load(open(os.path.join(trained, "reports/metrics.json")))["test"]["ccc_mean"] == \
        pytest.approx(metrics["test"]["ccc_mean"])
    # One ABAW file per video, as long as its annotation (which differs from the feature rows).
    for row in csv.DictReader(open(os.path.join(trained, "data/manifest.csv"))):
        path = os.path.join(trained, "data/predictions", row["split"], f"{row['video_id']}.txt")
        pred = read_labels(path)
        assert len(pred) == int(row["label_frames"]) and np.abs(pred).max() <= 1
    per_video = list(csv.DictReader(open(os.path.join(trained, "reports/per_video.csv"))))
    assert len(per_video) == 8
    for name in ("curves", "va_scatter", "per_video_ccc", "training"):
        assert os.path.getsize(os.path.join(trained, "reports/plots", f"{name}.png")) > 10_000
    assert len(os.listdir(os.path.join(trained, "reports/plot_data/curves"))) == 2


def test_smoothing_changes_only_the_smoothed_dimension(trained):
    from avfusion.learning.evaluate import run
    with project_root(trained):
        plain = run(EVAL)
    with project_root(trained):
        smoothed = run({**EVAL, "smooth_arousal": 9})
    assert smoothed["test"]["ccc_valence"] == plain["test"]["ccc_valence"]
    assert smoothed["test"]["ccc_arousal"] != plain["test"]["ccc_arousal"]


def test_evaluate_refuses_models_trained_on_other_features(trained, tmp_path):
    import shutil

    from avfusion.learning.evaluate import run
    copy = str(tmp_path / "copy")
    shutil.copytree(trained, copy)
    config_path = os.path.join(copy, "models/fold-1/config.json")
    config = json.load(open(config_path))
    config["provenance"]["openl3"]["extractor"] = "something-else"
    json.dump(config, open(config_path, "w"))
    with pytest.raises(CheckpointError, match="fold-1: trained on other openl3 features"):
        with project_root(copy):
            run(EVAL)


def test_seeds_are_averaged_and_one_seed_keeps_the_plain_layout(trained, tmp_path):
    """Seeds [0, 3] on the fixture's data and params: seed 0's model files are byte for byte the
    one-seed run's; metrics hold the ensemble's CCC and the mean and std of the seeds' own."""
    from test_windows import make_dataset

    from avfusion.learning.evaluate import run
    from avfusion.learning.train import run as train
    root = str(tmp_path / "seeds")
    make_dataset(root)
    with project_root(root):
        train({"type": "concat", "dim": 16, "hidden": 8, "dropout": 0.1},
              {"seeds": [0, 3], "window": 32, "hop": 8, "batch_size": 8, "epochs": 4, "lr": 0.01,
               "weight_decay": 0.0001, "patience": 4, "device": "cpu", "folds": 2})
        metrics = run(EVAL)
    assert sorted(os.listdir(os.path.join(root, "models"))) == ["seed-0", "seed-3"]
    for fold in ("fold-0", "fold-1"):
        for name in ("model.pt", "config.json"):
            assert open(os.path.join(root, "models/seed-0", fold, name), "rb").read() == \
                open(os.path.join(trained, "models", fold, name), "rb").read()
    assert json.load(open(os.path.join(root, "models/seed-3/fold-1/config.json")))["seed"] == 4
    with project_root(trained):
        alone = run(EVAL)["test"]
    test = metrics["test"]
    assert (metrics["seeds"], metrics["folds"]) == (2, 2) and "ccc_valence_seed_mean" not in alone
    for name in ("valence", "arousal"):
        other = 2 * test[f"ccc_{name}_seed_mean"] - alone[f"ccc_{name}"]   # seed 3's own CCC
        assert test[f"ccc_{name}_seed_std"] == pytest.approx(abs(other - alone[f"ccc_{name}"]) / np.sqrt(2))
        assert test[f"ccc_{name}"] not in (other, alone[f"ccc_{name}"])
        assert test[f"ccc_{name}_low"] < test[f"ccc_{name}"] < test[f"ccc_{name}_high"]
    record = json.load(open(os.path.join(root, "reports/test_videos.json")))["videos"]
    assert len(record) == test["videos"] and all(len(v["valence"]) == 6 for v in record.values())
