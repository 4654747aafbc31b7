"""Train stage: fusion models on the cached features (`python -m stages.train`, or under `torchrun`).

One model per seed of `train.seeds` and per fold: fold 0 is the official train/validation split; with
`train.folds: k > 1`, folds 1..k-1 hold out blocks of whole training media files (scikit-learn's
GroupKFold), so the k validation sets partition train + validation (LFAN, docs/design.md §7). How a
model trains is the recipe's (`train.recipe`, avfusion/recipes.py): by default one joint model,
batch-pooled masked 1 - CCC on valence and arousal, AdamW, cosine schedule, early stopping on the
validation mean CCC (computed the official way); the papers' recipes change windows, loss, optimiser
and schedule, and LFAN's trains one model per dimension. `fusion.type: ridge` is fitted by scikit-learn
instead. bf16 autocast on CUDA with every feature preloaded on the GPU; on the CPU, runs are
bit-identical for a seed on one thread (`train.threads: 1`, `repeatable_cpu_math`) and agree to about
1e-6 on all cores (`threads: 0`). Under torchrun each process trains on its share of each epoch's
windows (DDP: nccl on CUDA, gloo on the CPU); rank 0 writes the outputs.

Outputs: models/fold-<i>/model.pt (state_dict) and config.json (what `load_model` and prediction need:
fusion params, window, hop, feature dims, the extractors' provenance, every resolved training setting
and the recipe's post-processing, and what the model was trained on: data source and backbone weights,
so `avfusion predict` can say when a model is only the demo's); with several seeds the same under
models/seed-<s>/fold-<i>/ (one seed keeps the plain layout, so its files are those of a run before
seeds existed); dvclive curves and summaries under reports/train/.
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
from sklearn.model_selection import GroupKFold

from avfusion import paths
from avfusion.errors import CheckpointError, DatasetError
from avfusion.learning.featuresets import feature_set, feature_stores
from avfusion.learning.fusion import build_model
from avfusion.learning.metrics import INVALID, LOSSES, split_ccc
from avfusion.learning.outofcore import choose_data, open_split
from avfusion.learning.recipes import RECIPES, resolve
from avfusion.learning.windows import Split, autocast, predict_split, repeatable_cpu_math
from avfusion.params import resolve_device, validate
from avfusion.sources.manifest import read_manifest

STATISTICS_BYTES = 256 << 20   # rows the normalisation statistics read at most, per modality


def group_of(entry: dict) -> str:
    """The media file a manifest row's trial comes from: trials of one file (Aff-Wild2 `_left` /
    `_right`) share its audio, so cross-validation keeps them on one side."""
    return entry["media"]


def fold_entries(manifest: list[dict], folds: int) -> list[tuple[list[dict], list[dict]]]:
    """(train, validation) manifest rows per fold.

    Fold 0 is the official split. Folds 1..k-1 hold out the blocks scikit-learn's GroupKFold cuts the
    official training rows into, whole media files each (`group_of`), and train on the rest plus the
    official validation rows: the k validation blocks partition train + validation (LFAN's protocol).
    """
    train = [e for e in manifest if e["split"] == "train"]
    validation = [e for e in manifest if e["split"] == "validation"]
    if not train or not validation:
        raise DatasetError(f"{paths.manifest()}: training needs train and validation videos "
                           f"(found {len(train)} and {len(validation)})")
    result = [(train, validation)]
    if folds <= 1:
        return result
    groups = [group_of(e) for e in train]
    if len(set(groups)) < folds - 1:
        raise DatasetError(f"train.folds: {folds} folds need {folds - 1} training media files or more "
                         f"(found {len(set(groups))})")
    blocks = ([np.arange(len(train))] if folds == 2   # GroupKFold needs two blocks; one is all of train
              else [held for _, held in GroupKFold(n_splits=folds - 1).split(train, groups=groups)])
    for held in blocks:
        held = set(held.tolist())
        result.append((validation + [e for i, e in enumerate(train) if i not in held],
                       [e for i, e in enumerate(train) if i in held]))
    return result


def feature_statistics(split: Split) -> list[torch.Tensor]:
    """Mean and std of each modality per feature (std floored: no division blow-ups), each extractor's
    columns over the training rows where that extractor is valid (avfusion/featuresets.py).

    Past STATISTICS_BYTES of a modality's rows, over evenly spaced ones: bounded memory for splits
    read from the stores, and the same rows whichever way the split is held.
    """
    stats = []
    for x, parts in ((split.visual, split.visual_parts), (split.audio, split.audio_parts)):
        most = max(1, STATISTICS_BYTES // (4 * x.shape[1]))
        means, stds = [], []
        for columns, valid in parts:
            index = valid.nonzero().squeeze(1)
            if len(index) > most:
                index = index[torch.arange(most, device=index.device) * len(index) // most]
            rows = x[index][:, columns] if len(index) else torch.zeros(1, columns.stop - columns.start,
                                                                       device=valid.device)
            mean, std = rows.mean(0), rows.std(0, unbiased=False)
            means.append(mean.cpu())
            stds.append(std.clamp_min(1e-3 * float(std.mean()) + 1e-8).cpu())
        stats += [torch.cat(means), torch.cat(stds)]
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


def make_optimizer(model: torch.nn.Module, params: dict) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or Adam (L2 in the gradient, as both papers' code)."""
    kind = torch.optim.AdamW if params["optimizer"] == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])


def make_scheduler(optimizer: torch.optim.Optimizer, params: dict, steps: int):
    """(scheduler, when it steps: "batch" | "epoch" | "validation").

    cosine: to 0 over all `steps` batches; constant; step: lr × lr_factor^((e - lr_after) // lr_every)
    from 0-based epoch e > lr_after on (JCA); plateau: ReduceLROnPlateau on the validation CCC (LFAN).
    """
    kind = params["scheduler"]
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps), "batch"
    if kind == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0), "batch"
    if kind == "step":
        factor, every, after = params["lr_factor"], params["lr_every"], params["lr_after"]
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: factor ** ((epoch - after) // every) if epoch > after else 1.0), "epoch"
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=params["lr_factor"], patience=params["lr_patience"],
        min_lr=params["min_lr"]), "validation"


def seed_dir(models_dir: str, seed: int, seeds: list[int]) -> str:
    """Where the folds of one seed's models live: models/ itself for a single seed (the layout of a run
    without seeds), models/seed-<s> with several."""
    return models_dir if len(seeds) == 1 else os.path.join(models_dir, f"seed-{seed}")


def train_model(fold: int, train: Split, validation: Split, fusion: dict, params: dict, device: str,
                rank: int, world: int, live, dims: tuple[int, ...] = (0, 1), label: str = "",
                seed: int = 0, prefix: str = "") -> tuple[dict, dict]:
    """Train one model on the dimensions `dims` (both, or one with train.per_dimension); returns its
    best state_dict (on the CPU) and a summary of the run. Early stopping and the plateau schedule
    follow the validation CCC of those dimensions. torch's seed is `seed` + fold; curves are logged
    under `prefix`fold-<i>."""
    window, hop = params["window"], params["hop"]
    seed += fold
    last = params["last_window"]
    prefix = f"{prefix}fold-{fold}{label}"
    torch.manual_seed(seed)
    model = build_model(fusion, window, train.visual.shape[1], train.audio.shape[1])
    model.set_normalization(*feature_statistics(train))
    model.to(device)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    windows = train.windows(window, hop, last)
    per_rank = len(windows) // world
    steps = math.ceil(per_rank / params["batch_size"]) * params["epochs"]
    optimizer = make_optimizer(model, params)
    scheduler, schedule_on = make_scheduler(optimizer, params, steps)
    loss_fn = LOSSES[params["loss"]]
    picked = slice(dims[0], dims[-1] + 1)
    names = [("valence", "arousal")[d] for d in dims]
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
            loss = loss_fn(pred.float()[..., picked], x["labels"][..., picked], x["label_mask"][..., picked])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if params["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), params["grad_clip"])
            optimizer.step()
            if schedule_on == "batch":
                scheduler.step()
            losses.append(loss.detach())
        # Every rank scores the same weights on the same data, so early stopping agrees without messages.
        scores = split_ccc(np.clip(predict_split(model, validation, window, hop, last), -1, 1),
                           validation.labels_numpy())
        mean = float(np.nan_to_num(np.mean([scores[n] for n in names]), nan=-1.0))
        if schedule_on == "epoch":
            scheduler.step()
        elif schedule_on == "validation":
            scheduler.step(mean)
        if live is not None:
            live.step = epoch
            live.log_metric(f"{prefix}/train/loss", float(torch.stack(losses).mean()))
            for name in (*names, "mean") if len(names) > 1 else names:
                live.log_metric(f"{prefix}/validation/ccc_{name}", float(scores[name]))
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


def train_fold(fold: int, train: Split, validation: Split, fusion: dict, params: dict,
               device: str, rank: int, world: int, live, seed: int = 0, prefix: str = "") -> tuple[dict, dict]:
    """One fold's model: joint, or (train.per_dimension) a valence and an arousal model trained and
    early-stopped separately, stored as one PerDimension state_dict. Summary: each model's own best
    validation CCC; epoch / epochs the later of the two, seconds their sum."""
    if not params["per_dimension"]:
        return train_model(fold, train, validation, fusion, params, device, rank, world, live,
                           seed=seed, prefix=prefix)
    states, summaries = {}, {}
    for d, name in enumerate(("valence", "arousal")):
        state, summaries[name] = train_model(fold, train, validation, fusion, params, device, rank, world,
                                             live, dims=(d,), label=f"-{name}", seed=seed, prefix=prefix)
        states.update({f"{name}.{k}": v for k, v in state.items()})
    v, a = summaries["valence"], summaries["arousal"]
    return states, {"ccc_valence": v["ccc_valence"], "ccc_arousal": a["ccc_arousal"],
                    "ccc_mean": (v["ccc_valence"] + a["ccc_arousal"]) / 2,
                    "epoch": max(v["epoch"], a["epoch"]), "epochs": max(v["epochs"], a["epochs"]),
                    "seconds": round(v["seconds"] + a["seconds"], 2)}


def fit_ridge(fold: int, train: Split, validation: Split, fusion: dict, params: dict, live,
              prefix: str = "") -> tuple[dict, dict]:
    """`fusion.type: ridge`: scikit-learn Ridge per dimension on every training frame that is annotated
    and has a modality; the penalty is the one of `fusion.ridge_alphas` with the best validation mean
    CCC (as early stopping picks the neural models' epoch). Curves: validation CCC per penalty tried."""
    from sklearn.linear_model import Ridge  # only this model type needs scikit-learn loaded

    alphas = fusion.get("ridge_alphas") or [1.0]      # checked by the params schema
    started = time.perf_counter()
    model = build_model(fusion, params["window"], train.visual.shape[1], train.audio.shape[1])
    model.set_normalization(*feature_statistics(train))
    with torch.no_grad():
        v, a = model.standardise(train.visual, train.visual_valid, train.audio, train.audio_valid)
    x = torch.cat([v, a], dim=1).cpu().double().numpy()
    y = train.labels_numpy().astype(np.float64)
    present = (train.visual_valid | train.audio_valid).cpu().numpy()
    best, best_state = {"ccc_mean": -math.inf}, None
    for step, alpha in enumerate(alphas, start=1):
        for d in range(2):
            keep = present & (y[:, d] != INVALID)
            fit = Ridge(alpha=float(alpha)).fit(x[keep], y[keep, d])
            model.coef[d] = torch.from_numpy(fit.coef_).float()
            model.intercept[d] = float(fit.intercept_)
        scores = split_ccc(np.clip(predict_split(model, validation, params["window"], params["hop"],
                                                 params["last_window"]), -1, 1), validation.labels_numpy())
        mean = float(np.nan_to_num(scores["mean"], nan=-1.0))
        if live is not None:
            live.step = step
            live.log_metric(f"{prefix}fold-{fold}/validation/alpha", float(alpha))
            for name in ("valence", "arousal", "mean"):
                live.log_metric(f"{prefix}fold-{fold}/validation/ccc_{name}", float(scores[name]))
            live.make_summary()
        if mean > best["ccc_mean"]:
            best = {"ccc_valence": float(scores["valence"]), "ccc_arousal": float(scores["arousal"]),
                    "ccc_mean": mean, "alpha": float(alpha)}
            best_state = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
    best.update(seconds=round(time.perf_counter() - started, 2))
    return best_state, best


def save_fold(directory: str, state: dict, config: dict) -> None:
    os.makedirs(directory, exist_ok=True)
    torch.save(state, os.path.join(directory, "model.pt"))
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


def load_model(fold_dir: str, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """A trained fold's model (eval mode, on device) and its config.json."""
    with open(os.path.join(fold_dir, "config.json")) as f:
        config = json.load(f)
    model = build_model(config["fusion"], config["window"], config["dim_visual"], config["dim_audio"],
                        config.get("per_dimension", False))
    path = os.path.join(fold_dir, "model.pt")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: not found (run the train stage, or `dvc pull` the models)")
    try:   # weights_only: tensors and plain containers only; a pickle with code is never executed
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own message suggests weights_only=False: keep only its reason
        reason = str(exc).split("WeightsUnpickler error:")[-1].strip().split("\n")[0] or type(exc).__name__
        raise CheckpointError(f"{path}: refused to load: not a plain tensor checkpoint "
                              f"(it may carry code; {reason})") from None
    model.load_state_dict(state)
    return model.to(device).eval(), config


def run(fusion: dict, params: dict, trained_on: dict | None = None) -> list[dict]:
    """Train every fold of every seed; returns each model's summary, fold by fold, seeds in their order
    within a fold (on every rank).

    `train.recipe` fills in the null params first (avfusion/recipes.py); config.json records them all,
    and `trained_on` (data_source, visual_weights, audio_weights: the params they were set by).
    """
    fusion, params, eval_defaults = resolve(validate("fusion", fusion), validate("train", params))
    settings = {"fusion": {k: fusion[k] for k in RECIPES["default"]["fusion"]},
                "train": {k: params[k] for k in ("recipe", *RECIPES["default"]["train"])}}
    # a store not extracted stops here, in one line, before anything is trained or removed
    visual, audio, provenance = feature_stores(feature_set(fusion))
    rank, world, device = distributed_setup(params.get("device", "auto"))
    manifest = read_manifest()
    seeds = params["seeds"]
    live = None
    if rank == 0:
        for old in glob.glob(os.path.join(paths.models_dir(), "fold-*")) + glob.glob(
                os.path.join(paths.models_dir(), "seed-*")):
            shutil.rmtree(old)   # a run with fewer folds or seeds must not leave stale models behind
        from dvclive import Live  # dvc.yaml declares the outputs; dvclive must not rewrite it
        live = Live(paths.reports("train"), dvcyaml=False, save_dvc_exp=False)
        live.summary["settings"] = settings   # what ran, beside the scores, for `dvc exp show`
    summaries = []
    for fold, (train_rows, validation_rows) in enumerate(fold_entries(manifest, params.get("folds", 1))):
        data = choose_data(params, train_rows + validation_rows, visual, audio)
        train = open_split(train_rows, visual, audio, device, data)
        validation = open_split(validation_rows, visual, audio, device, data)
        for seed in seeds:
            prefix = "" if len(seeds) == 1 else f"seed-{seed}/"
            with repeatable_cpu_math(device, params["threads"]):
                if fusion["type"] == "ridge":
                    state, summary = fit_ridge(fold, train, validation, fusion, params, live, prefix)
                else:
                    state, summary = train_fold(fold, train, validation, fusion, params, device, rank, world,
                                                live, seed, prefix)
            summaries.append(summary)
            if rank == 0:
                for name, value in summary.items():
                    live.log_metric(f"{prefix}fold-{fold}/best/{name}", value, plot=False)
                save_fold(os.path.join(seed_dir(paths.models_dir(), seed, seeds), f"fold-{fold}"), state, {
                    "fold": fold, "fusion": copy.deepcopy(fusion), "window": params["window"], "hop": params["hop"],
                    "last_window": params["last_window"], "per_dimension": params["per_dimension"],
                    "train": settings["train"], "eval": eval_defaults,
                    "dim_visual": train.visual.shape[1], "dim_audio": train.audio.shape[1],
                    "provenance": provenance, "trained_on": trained_on, "seed": seed + fold,
                    "train_videos": train.video_ids, "validation_videos": validation.video_ids,
                    # no wall-clock time in the model's files: CPU retraining reproduces them byte for byte
                    "validation": {k: v for k, v in summary.items() if k != "seconds"}})
                chosen = (f"alpha {summary['alpha']:g}" if "alpha" in summary
                          else f"epoch {summary['epoch']}/{summary['epochs']}")
                print(f"{prefix}fold {fold}: best validation CCC {summary['ccc_mean']:.3f} "
                      f"(valence {summary['ccc_valence']:.3f}, arousal {summary['ccc_arousal']:.3f}) "
                      f"at {chosen}, {summary['seconds']:.1f} s on {device}")
    if live is not None:
        live.end()
    if world > 1:
        dist.destroy_process_group()
    return summaries
