"""Concordance correlation (the official ABAW metric), the masked 1 - CCC loss, and CCC centring.

CCC(x, y) = 2 cov(x, y) / (var x + var y + (mean x - mean y)^2), population statistics, computed
over all valid frames of all videos of a split concatenated (docs/design.md §7).
"""
from __future__ import annotations

import numpy as np
import torch

INVALID = -5.0   # Aff-Wild2's "not annotated" label


def ccc(pred: np.ndarray, true: np.ndarray) -> float:
    """CCC of two 1-d sequences (population moments). NaN when both are constant."""
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(true, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"ccc needs two 1-d arrays of one length, got {x.shape} and {y.shape}")
    if len(x) == 0:
        return float("nan")
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    denom = x.var() + y.var() + (mx - my) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def split_ccc(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Official protocol: frames of all videos concatenated, `-5` labels excluded per dimension.

    pred, true: [N, 2] (valence, arousal). Returns valence, arousal and their mean.
    """
    out = {}
    for d, name in enumerate(("valence", "arousal")):
        keep = true[:, d] != INVALID
        out[name] = ccc(pred[keep, d], true[keep, d])
    out["mean"] = (out["valence"] + out["arousal"]) / 2
    return out


def masked_ccc_loss(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of 1 - CCC, counting only frames where mask is true.

    pred, true: [..., 2]; mask: [..., 2] bool (label annotated, frame real, not padding).
    Statistics are pooled over the whole batch, as the metric pools over the split.
    """
    m = mask.to(pred.dtype).reshape(-1, pred.shape[-1])
    x = pred.reshape(-1, pred.shape[-1])
    y = true.reshape(-1, true.shape[-1])
    n = m.sum(0).clamp_min(1.0)
    mx, my = (x * m).sum(0) / n, (y * m).sum(0) / n
    vx = (((x - mx) ** 2) * m).sum(0) / n
    vy = (((y - my) ** 2) * m).sum(0) / n
    cov = ((x - mx) * (y - my) * m).sum(0) / n
    ccc_per_dim = 2 * cov / (vx + vy + (mx - my) ** 2 + 1e-8)
    return (1 - ccc_per_dim).mean()


def window_ccc_loss(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LFAN's loss (sucv/ABAW2 base/loss_function.py): 1 - CCC per window and dimension, averaged.

    pred, true: [B, L, D]; mask: [B, L, D] bool. Per window, over its masked frames: variances with
    n - 1 (torch.var's default), covariance with n (their code averages the elementwise products).
    Windows with fewer than two counted frames of a dimension are left out of the mean.
    """
    m = mask.to(pred.dtype)
    n = m.sum(1, keepdim=True)                                           # [B, 1, D]
    mx = (pred * m).sum(1, keepdim=True) / n.clamp_min(1.0)
    my = (true * m).sum(1, keepdim=True) / n.clamp_min(1.0)
    vx = (((pred - mx) ** 2) * m).sum(1, keepdim=True) / (n - 1).clamp_min(1.0)
    vy = (((true - my) ** 2) * m).sum(1, keepdim=True) / (n - 1).clamp_min(1.0)
    cov = ((pred - mx) * (true - my) * m).sum(1, keepdim=True) / n.clamp_min(1.0)
    ccc = 2 * cov / (vx + vy + (mx - my) ** 2 + 1e-8)
    counted = (n >= 2).to(pred.dtype)
    return ((1 - ccc) * counted).sum() / counted.sum().clamp_min(1.0)


LOSSES = {"batch_ccc": masked_ccc_loss, "window_ccc": window_ccc_loss}


def ccc_centring(predictions: list[np.ndarray], clip: bool = True) -> np.ndarray:
    """Merge k folds' predictions of one video for one dimension (LFAN, docs/design.md §7).

    With P_i fold i's prediction, a_i = mean over j != i of CCC(P_i, P_j), m_i = mean_t P_i(t),
    w = sum a_i m_i / sum a_i; fused(t) = mean_i P_i(t) - mean_i m_i + w, then clipped to [-1, 1]
    unless `clip` is false (the caller post-processes, e.g. smooths first).
    """
    preds = np.stack([np.asarray(p, dtype=np.float64) for p in predictions])
    means = preds.mean(axis=1)
    if len(preds) == 1:
        fused = preds[0]
    else:
        fused = preds.mean(axis=0) - means.mean() + _agreement_weighted_mean(preds, means)
    return np.clip(fused, -1, 1) if clip else fused


def _agreement_weighted_mean(preds: np.ndarray, means: np.ndarray) -> float:
    """w = sum a_i m_i / sum a_i, with a_i fold i's mean CCC with the other folds."""
    k = len(preds)
    agreement = np.array([np.nanmean([ccc(preds[i], preds[j]) for j in range(k) if j != i])
                          for i in range(k)])
    agreement = np.nan_to_num(agreement, nan=0.0)
    # When no fold agrees with another (constant or anti-correlated), fall back to the plain mean.
    return (agreement * means).sum() / agreement.sum() if agreement.sum() > 0 else means.mean()


# Bootstrap over videos. A split's pooled CCC depends on its frames only through six sums per dimension
# (n, Σx, Σy, Σx², Σy², Σxy over the annotated frames), and those of a set of videos are the sums of each
# video's. A resample that takes video v w_v times is then the weighted sum w @ moments: 1,000
# resamples of Aff-Wild2's 2.8 M frames are one [1000, V] x [V, 12] product, not 1,000 concatenations
# (benchmarks/bench_bootstrap.py, reports/bootstrap.json).
MOMENTS = ("n", "sum_pred", "sum_true", "sum_pred2", "sum_true2", "sum_cross")


def video_moments(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """[2, 6]: per dimension the sums of MOMENTS over one video's annotated frames (float64)."""
    out = np.zeros((2, len(MOMENTS)))
    for d in range(2):
        keep = true[:, d] != INVALID
        x, y = pred[keep, d].astype(np.float64), true[keep, d].astype(np.float64)
        out[d] = (len(x), x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum())
    return out


def ccc_of_moments(moments: np.ndarray) -> np.ndarray:
    """CCC from summed moments [..., 6] (population statistics, as `ccc`); NaN where undefined."""
    n, sx, sy, sxx, syy, sxy = np.moveaxis(moments, -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mx, my = sx / n, sy / n
        cov = sxy / n - mx * my
        denom = (sxx / n - mx * mx) + (syy / n - my * my) + (mx - my) ** 2
        return np.where(denom > 0, 2 * cov / denom, np.nan)


def resample_counts(videos: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, videos]: how often each resample draws each video (with replacement, `videos` draws)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(videos, np.full(videos, 1.0 / videos), size=resamples).astype(np.float64)


def bootstrap_cccs(moments: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[resamples, 3]: valence, arousal and mean CCC of each resample, from per-video moments [V, 2, 6]
    and the draw counts [resamples, V]."""
    totals = np.einsum("bv,vdk->bdk", counts, moments)
    cccs = ccc_of_moments(totals)
    return np.concatenate([cccs, cccs.mean(axis=1, keepdims=True)], axis=1)


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap samples [resamples, k] per column (NaN resamples left out)."""
    tail = 100 * (1 - level) / 2
    with np.errstate(invalid="ignore"):
        return np.nanpercentile(samples, tail, axis=0), np.nanpercentile(samples, 100 - tail, axis=0)


def bootstrap_interval(moments: np.ndarray, resamples: int, seed: int) -> dict[str, tuple[float, float]]:
    """95% interval of the pooled CCC (valence, arousal, mean) over resampled videos."""
    low, high = interval(bootstrap_cccs(moments, resample_counts(len(moments), resamples, seed)))
    return {name: (float(lo), float(hi)) for name, lo, hi in zip(("valence", "arousal", "mean"), low, high)}


def paired_difference(moments_a: np.ndarray, moments_b: np.ndarray, resamples: int,
                      seed: int) -> dict[str, tuple[float, float, float]]:
    """CCC(a) - CCC(b) per dimension and for the mean, over the same videos (moments [V, 2, 6] each, in
    one video order): (difference on all videos, 95% interval low, high), each resample drawing the
    same videos for both."""
    counts = resample_counts(len(moments_a), resamples, seed)
    samples = bootstrap_cccs(moments_a, counts) - bootstrap_cccs(moments_b, counts)
    whole = bootstrap_cccs(moments_a, np.ones((1, len(moments_a)))) - bootstrap_cccs(moments_b, np.ones((1, len(moments_b))))
    low, high = interval(samples)
    return {name: (float(d), float(lo), float(hi))
            for name, d, lo, hi in zip(("valence", "arousal", "mean"), whole[0], low, high)}
