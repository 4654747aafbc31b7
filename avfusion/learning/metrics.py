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
