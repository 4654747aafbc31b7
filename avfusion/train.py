"""Train stage: fusion models on the cached features (`python -m avfusion.train`, or under `torchrun`).

One model per fold: fold 0 is the official train/validation split; with `train.folds: k > 1`, folds
1..k-1 rotate the validation block through the pooled train + validation people (LFAN, docs/design.md §7).
Loss: masked 1 - CCC on valence and arousal. AdamW, cosine schedule, early stopping on the validation
mean CCC (computed the official way). bf16 autocast on CUDA with every feature preloaded on the GPU;
on the CPU, runs are bit-identical for a seed. Under torchrun each process trains on its share of each
epoch's windows (DDP: nccl on CUDA, gloo on the CPU); rank 0 writes the outputs.

Outputs: models/fold-<i>/model.pt (state_dict) and config.json (what `load_model` and prediction need:
fusion params, window, hop, feature dims and the extractors' provenance); dvclive curves and
summaries under reports/train/.
"""
from __future__ import annotations

import copy
import glob
import json
import math
import os
import pickle
import shutil
import time

import numpy as np
import torch
import torch.distributed as dist

from avfusion.dataset import MANIFEST, read_manifest
from avfusion.fusion import build_model
from avfusion.metrics import masked_ccc_loss, split_ccc
from avfusion.outofcore import choose_data, open_split
from avfusion.params import load_params, resolve_device
from avfusion.store import FeatureReader
from avfusion.windows import Split, autocast, predict_split

VISUAL = "data/features/visual"
AUDIO = "data/features/audio"
MODELS = "models"
REPORTS = "reports/train"
STATISTICS_BYTES = 256 << 20   # rows the normalisation statistics read at most, per modality


def fold_entries(manifest: list[dict], folds: int) -> list[tuple[list[dict], list[dict]]]:
    """(train, validation) manifest rows per fold.

    Fold 0 is the official split. Fold i > 0 holds out the i-th block of as many video files as the
    official validation set has, taken from validation then train (wrapping around). Trials that share
    a file (Aff-Wild2 `_left` / `_right`) stay on one side: they share the audio.
    """
    train = [e for e in manifest if e["split"] == "train"]
    validation = [e for e in manifest if e["split"] == "validation"]
    if not train or not validation:
        raise ValueError(f"{MANIFEST}: training needs train and validation videos "
                         f"(found {len(train)} and {len(validation)})")
    result = [(train, validation)]
    files: dict[str, list[dict]] = {}
    for e in validation + train:
        files.setdefault(os.path.normpath(e["path"]), []).append(e)
    order = list(files)
    block = len({os.path.normpath(e["path"]) for e in validation})
    for fold in range(1, folds):
        held = {order[(fold * block + j) % len(order)] for j in range(block)}
        result.append(([e for f in order if f not in held for e in files[f]],
                       [e for f in order if f in held for e in files[f]]))
    return result


def feature_statistics(split: Split) -> list[torch.Tensor]:
    """Mean and std of each modality over its valid training rows (std floored: no division blow-ups).

    Past STATISTICS_BYTES of valid rows, over evenly spaced ones: bounded memory for splits read from
    the stores, and the same rows whichever way the split is held.
    """
    stats = []
    for x, valid in ((split.visual, split.visual_valid), (split.audio, split.audio_valid)):
        index = valid.nonzero().squeeze(1)
        most = max(1, STATISTICS_BYTES // (4 * x.shape[1]))
        if len(index) > most:
            index = index[torch.arange(most, device=index.device) * len(index) // most]
        rows = x[index] if len(index) else torch.zeros(1, x.shape[1], device=valid.device)
        mean, std = rows.mean(0), rows.std(0, unbiased=False)
        stats += [mean.cpu(), std.clamp_min(1e-3 * float(std.mean()) + 1e-8).cpu()]
    return stats


def distributed_setup(device_name: str) -> tuple[int, int, str]:
    """(rank, world size, device) — torchrun sets WORLD_SIZE, RANK and LOCAL_RANK."""
    device = resolve_device(device_name)
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1, device
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def train_fold(fold: int, train: Split, validation: Split, fusion: dict, params: dict,
               device: str, rank: int, world: int, live) -> tuple[dict, dict]:
    """Train one model; returns its best state_dict (on the CPU) and a summary of the run."""
    window, hop, seed = params["window"], params["hop"], params["seed"] + fold
    torch.manual_seed(seed)
    model = build_model(fusion, window, train.visual.shape[1], train.audio.shape[1])
    model.set_normalization(*feature_statistics(train))
    model.to(device)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    windows = train.windows(window, hop)
    per_rank = len(windows) // world
    steps = math.ceil(per_rank / params["batch_size"]) * params["epochs"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
                 if params.get("scheduler", "cosine") == "cosine"
                 else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0))
    order_rng = torch.Generator().manual_seed(seed)   # same order on every rank; each takes its share

    best = {"ccc_mean": -math.inf, "epoch": 0}
    best_state, stale, started = None, 0, time.perf_counter()
    for epoch in range(1, params["epochs"] + 1):
        net.train()
        order = torch.randperm(len(windows), generator=order_rng)[rank::world][:per_rank]
        losses = []
        for batch in order.to(windows.device).split(params["batch_size"]):
            x = train.gather(windows[batch], window)
            with autocast(device):
                pred = net(x["visual"], x["visual_valid"], x["audio"], x["audio_valid"])
            loss = masked_ccc_loss(pred.float(), x["labels"], x["label_mask"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), params.get("grad_clip", 1.0))
            optimizer.step()
            scheduler.step()
            losses.append(loss.detach())
        # Every rank scores the same weights on the same data, so early stopping agrees without messages.
        scores = split_ccc(np.clip(predict_split(model, validation, window, hop), -1, 1),
                           validation.labels_numpy())
        mean = float(np.nan_to_num(scores["mean"], nan=-1.0))
        if live is not None:
            live.step = epoch
            live.log_metric(f"fold-{fold}/train/loss", float(torch.stack(losses).mean()))
            for name in ("valence", "arousal", "mean"):
                live.log_metric(f"fold-{fold}/validation/ccc_{name}", float(scores[name]))
            live.make_summary()
        if mean > best["ccc_mean"]:
            best = {"ccc_valence": float(scores["valence"]), "ccc_arousal": float(scores["arousal"]),
                    "ccc_mean": mean, "epoch": epoch}
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            stale = 0
        else:
            stale += 1
            if stale >= params["patience"]:
                break
    best.update(epochs=epoch, seconds=round(time.perf_counter() - started, 2))
    return best_state, best


def save_fold(directory: str, state: dict, config: dict) -> None:
    os.makedirs(directory, exist_ok=True)
    torch.save(state, os.path.join(directory, "model.pt"))
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


class CheckpointError(OSError):
    """A model.pt that is not a plain state_dict (e.g. a pickle carrying code). An OSError, like a
    missing file, so command-line entry points report it as one line."""


def load_model(fold_dir: str, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """A trained fold's model (eval mode, on device) and its config.json."""
    with open(os.path.join(fold_dir, "config.json")) as f:
        config = json.load(f)
    model = build_model(config["fusion"], config["window"], config["dim_visual"], config["dim_audio"])
    path = os.path.join(fold_dir, "model.pt")
    try:   # weights_only: tensors and plain containers only; a pickle with code is never executed
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own message suggests weights_only=False: keep only its reason
        reason = str(exc).split("WeightsUnpickler error:")[-1].strip().split("\n")[0] or type(exc).__name__
        raise CheckpointError(f"{path}: refused to load: not a plain tensor checkpoint "
                              f"(it may carry code; {reason})") from None
    model.load_state_dict(state)
    return model.to(device).eval(), config


def run(fusion: dict, params: dict, root: str = ".") -> list[dict]:
    """Train every fold; returns each fold's summary (on every rank)."""
    rank, world, device = distributed_setup(params.get("device", "auto"))
    path = lambda p: os.path.join(root, p)   # noqa: E731
    manifest = read_manifest(path(MANIFEST))
    provenance = {"visual": FeatureReader(path(VISUAL)).provenance,
                  "audio": FeatureReader(path(AUDIO)).provenance}
    live = None
    if rank == 0:
        for old in glob.glob(path(os.path.join(MODELS, "fold-*"))):
            shutil.rmtree(old)   # a run with fewer folds must not leave stale models behind
        from dvclive import Live   # dvc.yaml declares the outputs; dvclive must not rewrite it
        live = Live(path(REPORTS), dvcyaml=False, save_dvc_exp=False)
    summaries = []
    for fold, (train_rows, validation_rows) in enumerate(fold_entries(manifest, params.get("folds", 1))):
        data = choose_data(params, train_rows + validation_rows, path(VISUAL), path(AUDIO))
        train = open_split(train_rows, path(VISUAL), path(AUDIO), device, data)
        validation = open_split(validation_rows, path(VISUAL), path(AUDIO), device, data)
        state, summary = train_fold(fold, train, validation, fusion, params, device, rank, world, live)
        summaries.append(summary)
        if rank == 0:
            for name, value in summary.items():
                live.log_metric(f"fold-{fold}/best/{name}", value, plot=False)
            save_fold(path(os.path.join(MODELS, f"fold-{fold}")), state, {
                "fold": fold, "fusion": copy.deepcopy(fusion), "window": params["window"], "hop": params["hop"],
                "dim_visual": train.visual.shape[1], "dim_audio": train.audio.shape[1],
                "provenance": provenance, "seed": params["seed"] + fold,
                "train_videos": train.video_ids, "validation_videos": validation.video_ids,
                # no wall-clock time in the model's files: CPU retraining reproduces them byte for byte
                "validation": {k: v for k, v in summary.items() if k != "seconds"}})
            print(f"fold {fold}: best validation CCC {summary['ccc_mean']:.3f} "
                  f"(valence {summary['ccc_valence']:.3f}, arousal {summary['ccc_arousal']:.3f}) "
                  f"at epoch {summary['epoch']}/{summary['epochs']}, {summary['seconds']:.1f} s on {device}")
    if live is not None:
        live.end()
    if world > 1:
        dist.destroy_process_group()
    return summaries
