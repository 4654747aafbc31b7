"""Evaluation plots, twice: PNGs in reports/plots/ for people, data files in reports/plot_data/ that
dvc.yaml's top-level `plots:` renders with `dvc plots show` / `dvc plots diff` (so experiments compare).

- curves:    predicted vs true valence and arousal over time for a few test videos (best, median and
             worst per-video CCC, so the spread is visible, not just the good cases);
- va_scatter: test frames in the valence-arousal plane, labels vs predictions;
- per_video_ccc: per-video CCC bars of every labelled video, by split;
- training:  the train stage's dvclive curves (reports/train/**/plots/metrics/*.tsv).
"""
from __future__ import annotations

import csv
import glob
import math
import os
import shutil

import matplotlib

matplotlib.use("Agg")   # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from avfusion import paths
from avfusion.learning.metrics import INVALID

SCATTER_POINTS = 3000     # enough to show the shape of the cloud, small enough for the vega renderer
SPLIT_COLOURS = {"train": "tab:gray", "validation": "tab:blue", "test": "tab:orange"}


def pick_videos(results, per_video: list[dict], n: int) -> list:
    """n labelled test videos spread over the per-video CCC ranking, best first."""
    by_id = {r.video_id: r for r in results}
    ranked = sorted((row for row in per_video if row["split"] == "test" and np.isfinite(row["ccc_mean"])),
                    key=lambda row: -row["ccc_mean"])
    if not ranked or n <= 0:
        return []
    picks = np.unique(np.linspace(0, len(ranked) - 1, min(n, len(ranked))).round().astype(int))
    return [by_id[ranked[i]["video_id"]] for i in picks]


def _labels_or_nan(true: np.ndarray) -> np.ndarray:
    return np.where(true == INVALID, np.nan, true)


def plot_curves(videos: list, per_video: list[dict], png: str, data_dir: str) -> None:
    ccc_of = {row["video_id"]: row for row in per_video}
    if os.path.isdir(data_dir):
        shutil.rmtree(data_dir)   # a video picked by an earlier run must not linger in `dvc plots`
    os.makedirs(data_dir)
    fig, axes = plt.subplots(max(len(videos), 1), 2, figsize=(12, 2.6 * max(len(videos), 1)),
                             squeeze=False, sharey=True)
    for row_axes, r in zip(axes, videos):
        true = _labels_or_nan(r.true)
        for d, (ax, name) in enumerate(zip(row_axes, ("valence", "arousal"))):
            ax.plot(r.time, true[:, d], color="black", lw=1.5, label="true")
            ax.plot(r.time, r.pred[:, d], color="tab:red", lw=1.2, label="predicted")
            ax.set_title(f"{r.video_id}: {name} (CCC {ccc_of[r.video_id][f'ccc_{name}']:.2f})", fontsize=10)
            ax.set_ylim(-1.05, 1.05)
            ax.axhline(0, color="0.85", lw=0.8, zorder=0)
        with open(os.path.join(data_dir, f"{r.video_id}.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["time", "valence_true", "valence_pred", "arousal_true", "arousal_pred"])
            for t, (tv, ta), (pv, pa) in zip(r.time, true, r.pred):
                writer.writerow([f"{t:.3f}", _cell(tv), f"{pv:.4f}", _cell(ta), f"{pa:.4f}"])
    if not videos:
        axes[0, 0].text(0.5, 0.5, "no labelled test videos", ha="center", transform=axes[0, 0].transAxes)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    fig.suptitle("Test videos, predicted vs true (picked from best to worst per-video CCC)")
    save(fig, png)


def _cell(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.4f}"


def plot_va_scatter(results, png: str, data_dir: str, seed: int = 0) -> None:
    """Test frames annotated on both dimensions, in the valence-arousal plane."""
    test = [r for r in results if r.split == "test" and r.true is not None]
    true = np.concatenate([r.true for r in test]) if test else np.zeros((0, 2))
    pred = np.concatenate([r.pred for r in test]) if test else np.zeros((0, 2))
    keep = (true != INVALID).all(axis=1)
    true, pred = true[keep], pred[keep]
    if len(true) > SCATTER_POINTS:   # a fixed subsample: the same frames in every experiment
        idx = np.sort(np.random.default_rng(seed).choice(len(true), SCATTER_POINTS, replace=False))
        true, pred = true[idx], pred[idx]
    for name, points in (("va_true.csv", true), ("va_pred.csv", pred)):
        with open(os.path.join(data_dir, name), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["valence", "arousal"])
            writer.writerows([f"{v:.4f}", f"{a:.4f}"] for v, a in points)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(true[:, 0], true[:, 1], s=4, alpha=0.35, color="black", label="true")
    ax.scatter(pred[:, 0], pred[:, 1], s=4, alpha=0.35, color="tab:red", label="predicted")
    ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="0.7", lw=0.8))
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0, color="0.85", lw=0.8, zorder=0)
    ax.set(xlim=(-1.05, 1.05), ylim=(-1.05, 1.05), xlabel="valence", ylabel="arousal", aspect="equal",
           title=f"Test frames in the valence-arousal plane ({len(true)} frames)")
    ax.legend(loc="upper left", markerscale=3)
    save(fig, png)


def plot_per_video(per_video: list[dict], png: str) -> None:
    """Horizontal bars of each video's mean CCC, grouped by split, with valence and arousal ticks."""
    rows = sorted(per_video, key=lambda row: (list(SPLIT_COLOURS).index(row["split"]), row["ccc_mean"]))
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.28 * max(len(rows), 1)))
    y = np.arange(len(rows))
    ax.barh(y, [row["ccc_mean"] for row in rows], color=[SPLIT_COLOURS[row["split"]] for row in rows])
    ax.scatter([row["ccc_valence"] for row in rows], y, marker="|", s=80, color="tab:green", label="valence")
    ax.scatter([row["ccc_arousal"] for row in rows], y, marker="|", s=80, color="tab:purple", label="arousal")
    ax.set_yticks(y, [row["video_id"] for row in rows], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    lowest = min([-0.1] + [row[k] for row in rows for k in ("ccc_mean", "ccc_valence", "ccc_arousal")
                           if np.isfinite(row[k])])
    ax.set(xlim=(lowest - 0.05, 1), xlabel="CCC (bar: mean of valence and arousal)", title="Per-video CCC")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in SPLIT_COLOURS.values()]
    marks, labels = ax.get_legend_handles_labels()
    ax.legend(handles + marks, list(SPLIT_COLOURS) + labels, loc="upper left", bbox_to_anchor=(1.01, 1),
              fontsize=8)
    save(fig, png)


def training_curves(train_dir: str) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """dvclive's per-metric TSVs, {metric name: {series label (fold, train/val): (step, value)}}."""
    curves: dict[str, dict] = {}
    for path in sorted(glob.glob(os.path.join(train_dir, "**", "plots", "metrics", "**", "*.tsv"), recursive=True)):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if not rows:
            continue
        metric = os.path.splitext(os.path.basename(path))[0]
        label = os.path.relpath(os.path.dirname(path), train_dir).replace(os.sep, "/")
        label = label.replace("plots/metrics", "").strip("/") or "train"
        steps = np.array([float(row["step"]) for row in rows])
        values = np.array([float(row[metric]) for row in rows])
        curves.setdefault(metric, {})[label] = (steps, values)
    return curves


def plot_training(train_dir: str, png: str) -> None:
    curves = training_curves(train_dir)
    order = sorted(curves, key=lambda metric: (metric != "loss", metric))   # loss first, then the CCCs
    cols = min(max(len(order), 1), 2)
    rows = max(math.ceil(len(order) / cols), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.4 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, order):
        for label, (steps, values) in sorted(curves[metric].items()):
            ax.plot(steps, values, lw=1.2, marker="." if len(steps) < 20 else None, label=label)
        ax.set(title=metric, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(order):]:
        ax.axis("off")
    if not curves:
        axes[0, 0].text(0.5, 0.5, f"no training curves under {train_dir}", ha="center",
                        transform=axes[0, 0].transAxes)
    fig.suptitle("Training curves (train loss; validation CCC per epoch)")
    save(fig, png)


def save(fig, png: str) -> None:
    os.makedirs(os.path.dirname(png) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def write_plots(results, per_video: list[dict], plot_videos: int) -> None:
    """Every evaluation plot of the project: PNGs in reports/plots, data in reports/plot_data."""
    train_dir, png_dir, data_dir = paths.reports("train"), paths.reports("plots"), paths.reports("plot_data")
    videos = pick_videos(results, per_video, plot_videos)
    plot_curves(videos, per_video, os.path.join(png_dir, "curves.png"), os.path.join(data_dir, "curves"))
    plot_va_scatter(results, os.path.join(png_dir, "va_scatter.png"), data_dir)
    plot_per_video(per_video, os.path.join(png_dir, "per_video_ccc.png"))
    plot_training(train_dir, os.path.join(png_dir, "training.png"))
