"""The evaluate stage: predict every video with the trained fold models, score, report (docs/design.md §7).

Per video, each fold model predicts every frame (overlapping windows averaged). Test videos are
predicted by every fold and merged by CCC centring, per dimension; train and validation videos by
fold 0 alone (the official split), because the other folds trained on some of them. With several
seeds (`train.seeds`) each seed's folds are merged so, and the ensemble is the mean of the seeds'
predictions. Then optional moving-average smoothing per dimension and clipping to [-1, 1], in the
order and edge mode the eval params (or, where they are null, the model's training recipe,
avfusion/recipes.py) choose.

Scores follow the official protocol: CCC over all valid frames of a split's videos concatenated, `-5`
excluded, of the ensemble, with a 95% interval from `eval.bootstrap` resamples of the split's videos
(ccc_<dim>_low / _high); with several seeds also the mean and std (n - 1) over the seeds of each
seed's own CCC (ccc_<dim>_seed_mean / _seed_std). Outputs: reports/metrics.json (per split),
reports/per_video.csv, reports/test_videos.json (per test video the ensemble's CCC moments, what
`avfusion compare` resamples), ABAW submission files in data/predictions/<split>/<video_id>.txt, and
the plots (avfusion/plots.py).
"""
from __future__ import annotations

import csv
import glob
import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import uniform_filter1d

from avfusion import paths
from avfusion.errors import CheckpointError
from avfusion.learning.featuresets import feature_set, feature_stores
from avfusion.learning.metrics import INVALID, bootstrap_interval, ccc, ccc_centring, split_ccc, video_moments
from avfusion.learning.outofcore import choose_data, open_split
from avfusion.learning.plots import write_plots
from avfusion.learning.recipes import eval_settings
from avfusion.learning.train import load_model
from avfusion.learning.windows import predict_split, repeatable_cpu_math
from avfusion.params import resolve_device, validate
from avfusion.sources.manifest import read_manifest

DIMENSIONS = ("valence", "arousal")
SPLITS = ("train", "validation", "test")


@dataclass
class VideoResult:
    video_id: str
    split: str
    time: np.ndarray              # [n] seconds, one per predicted frame
    pred: np.ndarray              # [n, 2] valence, arousal after post-processing: the seeds' ensemble
    true: np.ndarray | None       # [n, 2] labels with -5 where not annotated; None when unlabelled
    seeds: list[np.ndarray] = field(default_factory=list)   # [n, 2] each seed's own, post-processed (several seeds)


def moving_average(x: np.ndarray, frames: int, mode: str = "nearest") -> np.ndarray:
    """Centred moving average of a 1-d series over `frames` frames; at the edges "nearest" repeats the
    end values, "constant" pads with zeros (JCA's val.py)."""
    if frames <= 1:
        return np.asarray(x, dtype=np.float64)
    return uniform_filter1d(np.asarray(x, dtype=np.float64), size=frames, mode=mode)


def merge_folds(fold_predictions: list[np.ndarray]) -> np.ndarray:
    """[n, 2] from k folds' [n, 2] predictions of one video: CCC centring per dimension when k > 1."""
    if len(fold_predictions) == 1:
        return np.asarray(fold_predictions[0], dtype=np.float64)
    return np.stack([ccc_centring([p[:, d] for p in fold_predictions], clip=False) for d in range(2)], axis=1)


def postprocess(pred: np.ndarray, clip: bool, smooth_valence: int, smooth_arousal: int,
                mode: str = "nearest", order: str = "smooth_then_clip") -> np.ndarray:
    """Smooth each dimension over its own number of frames and clip to the label range, in `order`
    (smooth_then_clip | clip_then_smooth, JCA's)."""
    out = np.asarray(pred, dtype=np.float64)
    if clip and order == "clip_then_smooth":
        out = np.clip(out, -1.0, 1.0)
    out = np.stack([moving_average(out[:, 0], smooth_valence, mode),
                    moving_average(out[:, 1], smooth_arousal, mode)], axis=1)
    return np.clip(out, -1.0, 1.0) if clip and order == "smooth_then_clip" else out


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Official CCC (frames concatenated, -5 excluded per dimension), RMSE and Pearson r."""
    official = split_ccc(pred, true)
    out: dict[str, float] = {"ccc_valence": official["valence"], "ccc_arousal": official["arousal"],
                             "ccc_mean": official["mean"]}
    valid = [(pred[true[:, d] != INVALID, d].astype(np.float64), true[true[:, d] != INVALID, d].astype(np.float64))
             for d in range(2)]
    for name, (x, y) in zip(DIMENSIONS, valid):
        out[f"rmse_{name}"] = float(np.sqrt(np.mean((x - y) ** 2))) if len(x) else float("nan")
    for name, (x, y) in zip(DIMENSIONS, valid):
        out[f"pearson_{name}"] = _pearson(x, y)
    out["frames"] = int((true != INVALID).any(axis=1).sum())
    return out


def split_metrics(results: list[VideoResult], bootstrap: int = 0, bootstrap_seed: int = 0) -> dict[str, dict]:
    """Scores per split over its labelled videos' frames concatenated (the official protocol): the
    ensemble's, its CCCs' bootstrap intervals over videos, and with several seeds the mean and std of
    the seeds' own CCCs."""
    metrics = {}
    for split in SPLITS:
        labelled = [r for r in results if r.split == split and r.true is not None]
        if not labelled:
            continue
        true = np.concatenate([r.true for r in labelled])
        metrics[split] = scores(np.concatenate([r.pred for r in labelled]), true)
        metrics[split]["videos"] = len(labelled)
        if bootstrap:
            moments = np.stack([video_moments(r.pred, r.true) for r in labelled])
            for name, (low, high) in bootstrap_interval(moments, bootstrap, bootstrap_seed).items():
                metrics[split][f"ccc_{name}_low"], metrics[split][f"ccc_{name}_high"] = low, high
        if labelled[0].seeds:
            per_seed = [split_ccc(np.concatenate([r.seeds[i] for r in labelled]), true)
                        for i in range(len(labelled[0].seeds))]
            for name in ("valence", "arousal", "mean"):
                values = [s[name] for s in per_seed]
                metrics[split][f"ccc_{name}_seed_mean"] = float(np.mean(values))
                metrics[split][f"ccc_{name}_seed_std"] = float(np.std(values, ddof=1))
    return metrics


def moments_record(results: list[VideoResult]) -> dict:
    """What `avfusion compare` needs of a revision's test predictions: per labelled test video the
    ensemble's CCC moments per dimension (metrics.MOMENTS) and its labels' SHA-256, which tells two
    revisions scored on the same annotations."""
    videos = {}
    for r in sorted((r for r in results if r.split == "test" and r.true is not None), key=lambda r: r.video_id):
        moments = video_moments(r.pred, r.true)
        videos[r.video_id] = {"labels_sha256": hashlib.sha256(np.ascontiguousarray(r.true, np.float64)).hexdigest(),
                              "valence": moments[0].tolist(), "arousal": moments[1].tolist()}
    return {"videos": videos}


def per_video_rows(results: list[VideoResult]) -> list[dict]:
    """One row per labelled video: its own CCC per dimension and their mean."""
    rows = []
    for r in results:
        if r.true is None:
            continue
        row = {"split": r.split, "video_id": r.video_id}
        for d, name in enumerate(DIMENSIONS):
            keep = r.true[:, d] != INVALID
            row[f"ccc_{name}"] = ccc(r.pred[keep, d], r.true[keep, d])
        row["ccc_mean"] = (row["ccc_valence"] + row["ccc_arousal"]) / 2
        row["frames"] = len(r.pred)
        rows.append(row)
    return rows


def _finite_or_none(value):
    """JSON has no NaN; a null keeps `dvc metrics` readable when a CCC is undefined."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(path: str, metrics: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(_finite_or_none(metrics), f, indent=2)
        f.write("\n")


def write_per_video(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fields = ["split", "video_id", "ccc_valence", "ccc_arousal", "ccc_mean", "frames"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})


def write_abaw(path: str, pred: np.ndarray) -> None:
    """ABAW submission file: header `valence,arousal`, then one line per frame."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("valence,arousal\n")
        for v, a in pred:
            f.write(f"{v:.6f},{a:.6f}\n")


def seed_models(models_dir: str) -> list[list[str]]:
    """Each seed's fold directories: models/seed-<s>/fold-<i> by seed number with several seeds,
    models/fold-<i> with one (avfusion/learning/train.py `seed_dir`)."""
    seeds = sorted((int(m.group(1)), d) for d in glob.glob(os.path.join(models_dir, "seed-*"))
                   if os.path.isdir(d) and (m := re.search(r"seed-(\d+)$", d)))
    return [fold_dirs(d) for _, d in seeds] if seeds else [fold_dirs(models_dir)]


def fold_dirs(models_dir: str) -> list[str]:
    """models/fold-<i> in fold order (fold 0, the official split, first)."""
    found = [d for d in glob.glob(os.path.join(models_dir, "fold-*")) if os.path.isdir(d)]
    numbered = sorted((int(m.group(1)), d) for d in found if (m := re.search(r"fold-(\d+)$", d)))
    if not numbered:
        raise CheckpointError(f"{models_dir}: no fold-<i> model directories (run the train stage first)")
    return [d for _, d in numbered]


def check_features(folds: list[str], configs: list[dict]) -> tuple[list[str], list[str]]:
    """The visual and audio store directories of the models' feature set (avfusion/featuresets.py),
    after refusing models trained on other features than those stores hold."""
    features = feature_set(configs[0]["fusion"])
    visual, audio, provenance = feature_stores(features)
    for fold, config in zip(folds, configs):
        if feature_set(config["fusion"]) != features:
            raise CheckpointError(f"{fold}: trained on another feature set than {folds[0]} (re-run the train stage)")
        for name, recorded in provenance.items():
            if config["provenance"].get(name) != recorded:
                raise CheckpointError(f"{fold}: trained on other {name} features than "
                                      f"{paths.features_dir(name)} holds (re-run the train stage)")
    return visual, audio


def ensemble_prediction(seed_predictions: list[list[np.ndarray]]) -> np.ndarray:
    """[n, 2] of one video from each seed's fold predictions: folds merged per seed (`merge_folds`),
    then the seeds' mean (not CCC centring: seeds see the same data, they only differ in noise)."""
    return np.mean([merge_folds(folds) for folds in seed_predictions], axis=0)


def predict_all(params: dict) -> list[VideoResult]:
    """Every split's videos predicted by the project's models (every seed's folds), from the stores of
    their feature set."""
    device = resolve_device(params.get("device", "auto"))
    seed_dirs = seed_models(paths.models_dir())
    directories = [d for dirs in seed_dirs for d in dirs]
    seeds = [[load_model(d, device) for d in dirs] for dirs in seed_dirs]
    visual_dirs, audio_dirs = check_features(directories, [config for folds in seeds for _, config in folds])
    params = eval_settings(params, seeds[0][0][1].get("eval"))
    entries = read_manifest()
    # one choice for all splits: the previous split is still held while the next one loads
    held = choose_data(params, [e for e in entries if e["split"] in SPLITS], visual_dirs, audio_dirs)
    results = []
    for split in SPLITS:
        rows = [e for e in entries if e["split"] == split]
        if not rows:
            continue
        data = open_split(rows, visual_dirs, audio_dirs, device, held)
        with repeatable_cpu_math(device):
            predictions = [[predict_split(model, data, config["window"], config["hop"],
                                          config.get("last_window", "pad"))
                            for model, config in (folds if split == "test" else folds[:1])] for folds in seeds]
        labels = data.labels_numpy()
        fps = {e["video_id"]: float(e["fps"]) for e in rows}

        def post(pred: np.ndarray) -> np.ndarray:
            return postprocess(pred, params["clip"], params["smooth_valence"], params["smooth_arousal"],
                               params["smooth_mode"], params["smooth_order"])

        for video_id, frames in data.video_slices().items():
            video = [[p[frames] for p in folds] for folds in predictions]
            pred = post(ensemble_prediction(video))
            true = labels[frames]
            results.append(VideoResult(video_id, split, np.arange(len(pred)) / fps[video_id], pred,
                                       true if (true != INVALID).any() else None,
                                       [post(merge_folds(folds)) for folds in video] if len(seeds) > 1 else []))
    return results


def run(params: dict) -> dict:
    """Predict, score and write every report of the project; returns the metrics."""
    params = validate("eval", params)
    results = predict_all(params)
    predictions = paths.predictions_dir()
    if os.path.isdir(predictions):
        shutil.rmtree(predictions)   # no stale files of videos that left the manifest
    for r in results:
        write_abaw(os.path.join(predictions, r.split, f"{r.video_id}.txt"), r.pred)
    metrics = split_metrics(results, params["bootstrap"], params["bootstrap_seed"])
    seeds = seed_models(paths.models_dir())
    metrics["folds"], metrics["seeds"] = len(seeds[0]), len(seeds)
    write_metrics(paths.reports("metrics.json"), metrics)
    write_metrics(paths.reports("test_videos.json"), moments_record(results))
    per_video = per_video_rows(results)
    write_per_video(paths.reports("per_video.csv"), per_video)
    write_plots(results, per_video, params["plot_videos"])
    return metrics
