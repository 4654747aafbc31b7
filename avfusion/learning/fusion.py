"""Fusion models (`fusion.type`, docs/design.md §6): per-frame valence and arousal from visual + audio windows.

Every model takes `(visual [B, L, Dv], visual_valid [B, L], audio [B, L, Da], audio_valid [B, L])` and
returns `[B, L, 2]`: in (-1, 1) through tanh (`fusion.output: tanh`), or unbounded with `linear` (the
papers' choice; predictions are clipped at test time). The shared base standardises each modality with
training-set statistics (stored as buffers, so a checkpoint carries them) and zeroes absent frames (no
face, silence, padding), so they cannot inject garbage.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

TYPES = ("jca", "lfan", "cross_attention", "concat", "late", "audio_only", "visual_only", "ridge")
OUTPUTS = ("tanh", "linear")


class FusionModel(nn.Module):
    def __init__(self, dim_visual: int, dim_audio: int):
        super().__init__()
        self.output = "tanh"   # or "linear"; build_model sets it from fusion.output
        self.register_buffer("visual_mean", torch.zeros(dim_visual))
        self.register_buffer("visual_std", torch.ones(dim_visual))
        self.register_buffer("audio_mean", torch.zeros(dim_audio))
        self.register_buffer("audio_std", torch.ones(dim_audio))

    def set_normalization(self, visual_mean, visual_std, audio_mean, audio_std) -> None:
        for name, value in zip(("visual_mean", "visual_std", "audio_mean", "audio_std"),
                               (visual_mean, visual_std, audio_mean, audio_std)):
            getattr(self, name).copy_(torch.as_tensor(value))

    def standardise(self, visual, visual_valid, audio, audio_valid) -> tuple[torch.Tensor, torch.Tensor]:
        """Each modality standardised with the training statistics, absent frames zero."""
        v = (visual - self.visual_mean) / self.visual_std * visual_valid[..., None]
        a = (audio - self.audio_mean) / self.audio_std * audio_valid[..., None]
        return v, a

    def forward(self, visual, visual_valid, audio, audio_valid) -> torch.Tensor:
        v, a = self.standardise(visual, visual_valid, audio, audio_valid)
        y = self.fuse(v, visual_valid, a, audio_valid)
        return torch.tanh(y) if self.output == "tanh" else y

    def fuse(self, visual, visual_valid, audio, audio_valid) -> torch.Tensor:
        """Unbounded [B, L, 2] from standardised, absent-zeroed features."""
        raise NotImplementedError


def _uniform_(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
    """nn.Linear's default range for a matrix that multiplies fan_in inputs."""
    bound = 1 / math.sqrt(fan_in)
    return nn.init.uniform_(weight, -bound, bound)


class JointCrossAttention(nn.Module):
    """The joint cross-attention block of Praveen et al. (CVPRW 2022), exactly the paper's equations.

    With X_a, X_v (L x dim), J = [X_a, X_v] (L x d), d = 2 dim, k = hidden:
        C_a = tanh(X_aᵀ W_ja J / √d)            C_v = tanh(X_vᵀ W_jv J / √d)          (dim x d)
        H_a = ReLU(W_a X_a + W_ca C_aᵀ)         H_v = ReLU(W_v X_v + W_cv C_vᵀ)       (k x dim)
        X_att_a = W_ha H_a + X_a                X_att_v = W_hv H_v + X_v              (L x dim)
    Each W_* holds the matrix as written (no bias, no softmax, no normalisation). The authors' released
    code differs (it fed raw visual features to the head; a later version trains another co-attention
    module); this follows the paper.
    """

    def __init__(self, length: int, dim: int = 128, hidden: int = 32):
        super().__init__()
        d = 2 * dim
        self.scale = math.sqrt(d)
        shapes = {"W_ja": (length, length), "W_jv": (length, length),
                  "W_a": (hidden, length), "W_v": (hidden, length),
                  "W_ca": (hidden, d), "W_cv": (hidden, d),
                  "W_ha": (length, hidden), "W_hv": (length, hidden)}
        for name, (rows, cols) in shapes.items():
            self.register_parameter(name, nn.Parameter(_uniform_(torch.empty(rows, cols), cols)))

    def forward(self, xa: torch.Tensor, xv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        j = torch.cat([xa, xv], dim=-1)                                       # [B, L, d]
        c_a = torch.tanh(xa.mT @ self.W_ja @ j / self.scale)                  # [B, dim, d]
        c_v = torch.tanh(xv.mT @ self.W_jv @ j / self.scale)
        h_a = torch.relu(self.W_a @ xa + self.W_ca @ c_a.mT)                  # [B, k, dim]
        h_v = torch.relu(self.W_v @ xv + self.W_cv @ c_v.mT)
        return self.W_ha @ h_a + xa, self.W_hv @ h_v + xv                     # [B, L, dim]


class JCA(FusionModel):
    """Linear projections to dim, the JCA block, and FC(2 dim -> dim) -> Dropout -> FC(dim -> 1) per dimension.

    The head is as written in the paper (no activation between the two FCs); with `fusion.output: tanh`
    the model's tanh bounds it, with `linear` (the paper) predictions are clipped at test time.
    """

    def __init__(self, dim_visual, dim_audio, window, dim=128, hidden=32, dropout=0.6):
        super().__init__(dim_visual, dim_audio)
        self.project_audio = nn.Linear(dim_audio, dim)
        self.project_visual = nn.Linear(dim_visual, dim)
        self.block = JointCrossAttention(window, dim, hidden)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * dim, dim), nn.Dropout(dropout), nn.Linear(dim, 1)) for _ in range(2))

    def fuse(self, visual, visual_valid, audio, audio_valid):
        xa, xv = self.block(self.project_audio(audio), self.project_visual(visual))
        x = torch.cat([xa, xv], dim=-1)
        return torch.cat([head(x) for head in self.heads], dim=-1)


class CausalBlock(nn.Module):
    """TCN residual block (Bai et al. 2018): two dilated causal weight-normed convolutions.

    Dropout `element` zeroes single values; `channel` zeroes whole channels of a window (LFAN's code
    applies Dropout2d to [B, C, L], which drops channels; Dropout1d is that without the 3-d warning).
    """

    def __init__(self, cin, cout, kernel, dilation, dropout, dropout_kind="element"):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv1 = weight_norm(nn.Conv1d(cin, cout, kernel, dilation=dilation))
        self.conv2 = weight_norm(nn.Conv1d(cout, cout, kernel, dilation=dilation))
        self.act = nn.LeakyReLU()
        self.drop = nn.Dropout1d(dropout) if dropout_kind == "channel" else nn.Dropout(dropout)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):                                   # [B, C, L]
        y = self.drop(self.act(self.conv1(nn.functional.pad(x, (self.pad, 0)))))
        y = self.drop(self.act(self.conv2(nn.functional.pad(y, (self.pad, 0)))))
        return self.act(y + self.skip(x))


class TCN(nn.Module):
    def __init__(self, cin, channels, kernel=5, dilations=(1, 2, 4, 8), dropout=0.1, dropout_kind="element"):
        super().__init__()
        self.blocks = nn.Sequential(*(CausalBlock(cin if i == 0 else channels, channels, kernel, d, dropout,
                                                  dropout_kind) for i, d in enumerate(dilations)))

    def forward(self, x):                                   # [B, L, C] -> [B, L, channels]
        return self.blocks(x.mT).mT


class LFAN(FusionModel):
    """Leader-follower attentive fusion (Zhang et al., ABAW2 2021); visual leads, audio follows.

    Per frame, each modality m gets a query, key and value (attention-dim each) by its own affine maps;
    S = softmax(K Qᵀ / √a) row-wise (M x M); F = LayerNorm over the (M x a) block of (S V + V);
    the head sees [leader TCN feature, flatten(F)] (the leader's skip around the attention).
    """

    def __init__(self, dim_visual, dim_audio, leader=128, follower=32, attention=32, kernel=5, dropout=0.1,
                 dropout_kind="element"):
        super().__init__(dim_visual, dim_audio)
        self.tcn_visual = TCN(dim_visual, leader, kernel, dropout=dropout, dropout_kind=dropout_kind)
        self.tcn_audio = TCN(dim_audio, follower, kernel, dropout=dropout, dropout_kind=dropout_kind)
        self.qkv = nn.ModuleList([nn.Linear(leader, 3 * attention), nn.Linear(follower, 3 * attention)])
        self.scale = math.sqrt(attention)
        self.norm = nn.LayerNorm([2, attention])
        self.head = nn.Linear(leader + 2 * attention, 2)

    def fuse(self, visual, visual_valid, audio, audio_valid):
        lead = self.tcn_visual(visual)
        streams = [lead, self.tcn_audio(audio)]
        q, k, v = torch.stack([m(s) for m, s in zip(self.qkv, streams)], dim=-2).chunk(3, dim=-1)  # [B, L, M, a]
        s = torch.softmax(k @ q.mT / self.scale, dim=-1)                                            # [B, L, M, M]
        f = self.norm(s @ v + v)
        return self.head(torch.cat([lead, f.flatten(-2)], dim=-1))


def _head(cin, hidden, dropout, out=2):
    return nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out))


class CrossAttention(FusionModel):
    """Vanilla cross-attention (Praveen et al., FG 2021): C = X_a W X_vᵀ, softmax over each column.

    Each modality's frames attend over the other's frames in the window (absent frames are not attended);
    the head sees both projections and both attended sequences.

    Checked against the authors' code for the paper (praveena2j/Cross-Attentional-AV-Fusion, models/cam.py):
    the same correlation C = X_a W X_vᵀ, the same column-wise softmaxes (audio attended per visual frame,
    visual attended per audio frame) and the same attended sums. Differences:
    - inputs: the paper's I3D clip features (visual) and 2D-CNN spectrogram features (audio), 1024-d,
      one vector per clip; here cached per-frame embeddings, each linearly projected to `fusion.dim`;
    - C is divided by √dim here (as in JCA); the released code does not scale it;
    - W is drawn like nn.Linear's weights here; the released code uses Xavier-normal;
    - the head also sees the projections X_a, X_v (a skip); the paper feeds only the attended features
      to its fully connected layers;
    - the paper's (and code's) training (the visual backbone fine-tuned, clip sub-sequences) is not
      reproduced: it trains like every other model here (`train` params);
    - absent frames (no face, silence, padding) are masked out of the softmax; the paper has none.
    """

    def __init__(self, dim_visual, dim_audio, dim=128, dropout=0.6):
        super().__init__(dim_visual, dim_audio)
        self.project_audio = nn.Linear(dim_audio, dim)
        self.project_visual = nn.Linear(dim_visual, dim)
        self.W = nn.Parameter(_uniform_(torch.empty(dim, dim), dim))
        self.scale = math.sqrt(dim)
        self.head = _head(4 * dim, dim, dropout)

    def fuse(self, visual, visual_valid, audio, audio_valid):
        xa, xv = self.project_audio(audio), self.project_visual(visual)
        c = xa @ self.W @ xv.mT / self.scale                   # [B, L_audio, L_visual]
        blocked = torch.finfo(c.dtype).min
        # column softmax: per visual frame, weights over audio frames -> audio attended at that time
        audio_for_visual = torch.softmax(c.masked_fill(~audio_valid[..., :, None], blocked), dim=-2).mT @ xa
        visual_for_audio = torch.softmax(c.masked_fill(~visual_valid[..., None, :], blocked), dim=-1) @ xv
        return self.head(torch.cat([xa, xv, audio_for_visual, visual_for_audio], dim=-1))


class Concat(FusionModel):
    """Early fusion: one per-frame MLP on the concatenated features."""

    def __init__(self, dim_visual, dim_audio, dim=128, dropout=0.6):
        super().__init__(dim_visual, dim_audio)
        self.head = _head(dim_visual + dim_audio, dim, dropout)

    def fuse(self, visual, visual_valid, audio, audio_valid):
        return self.head(torch.cat([visual, audio], dim=-1))


class Late(FusionModel):
    """Late fusion: the average of a visual and an audio per-frame head (before the shared tanh)."""

    def __init__(self, dim_visual, dim_audio, dim=128, dropout=0.6):
        super().__init__(dim_visual, dim_audio)
        self.visual_head = _head(dim_visual, dim, dropout)
        self.audio_head = _head(dim_audio, dim, dropout)

    def fuse(self, visual, visual_valid, audio, audio_valid):
        return (self.visual_head(visual) + self.audio_head(audio)) / 2


class Unimodal(FusionModel):
    """A per-frame MLP on one modality (the baselines fusion has to beat)."""

    def __init__(self, dim_visual, dim_audio, modality, dim=128, dropout=0.6):
        super().__init__(dim_visual, dim_audio)
        self.modality = modality
        self.head = _head(dim_visual if modality == "visual" else dim_audio, dim, dropout)

    def fuse(self, visual, visual_valid, audio, audio_valid):
        return self.head(visual if self.modality == "visual" else audio)


class Ridge(FusionModel):
    """Per-frame ridge regression on the concatenated standardised features (the AVEC-style linear probe).

    Fitted by scikit-learn in the train stage (avfusion/train.py `fit_ridge`); the coefficients live in
    buffers, so the checkpoint is a plain tensor state_dict like every other model's. Always linear.
    """

    def __init__(self, dim_visual, dim_audio):
        super().__init__(dim_visual, dim_audio)
        self.output = "linear"
        self.register_buffer("coef", torch.zeros(2, dim_visual + dim_audio))
        self.register_buffer("intercept", torch.zeros(2))

    def fuse(self, visual, visual_valid, audio, audio_valid):
        return torch.cat([visual, audio], dim=-1) @ self.coef.T + self.intercept


class PerDimension(nn.Module):
    """One model per dimension (`train.per_dimension`): valence from the first, arousal from the second."""

    def __init__(self, valence: FusionModel, arousal: FusionModel):
        super().__init__()
        self.valence, self.arousal = valence, arousal

    def forward(self, visual, visual_valid, audio, audio_valid) -> torch.Tensor:
        args = (visual, visual_valid, audio, audio_valid)
        return torch.cat([self.valence(*args)[..., :1], self.arousal(*args)[..., 1:]], dim=-1)


def build_model(fusion: dict, window: int, dim_visual: int, dim_audio: int,
                per_dimension: bool = False) -> nn.Module:
    """The model named by fusion["type"], sized by the `fusion` params section (two of them, one per
    dimension, with per_dimension)."""
    if per_dimension:
        return PerDimension(*(build_model(fusion, window, dim_visual, dim_audio) for _ in range(2)))
    kind = fusion["type"]
    dim, hidden, dropout = fusion.get("dim", 128), fusion.get("hidden", 32), fusion.get("dropout", 0.6)
    if kind == "jca":
        model = JCA(dim_visual, dim_audio, window, dim, hidden, dropout)
    elif kind == "lfan":
        model = LFAN(dim_visual, dim_audio, leader=dim, follower=hidden, attention=hidden,
                     kernel=fusion.get("tcn_kernel", 5), dropout=fusion.get("tcn_dropout", 0.1),
                     dropout_kind=fusion.get("tcn_dropout_kind") or "element")
    elif kind == "cross_attention":
        model = CrossAttention(dim_visual, dim_audio, dim, dropout)
    elif kind == "concat":
        model = Concat(dim_visual, dim_audio, dim, dropout)
    elif kind == "late":
        model = Late(dim_visual, dim_audio, dim, dropout)
    elif kind in ("audio_only", "visual_only"):
        model = Unimodal(dim_visual, dim_audio, kind.split("_")[0], dim, dropout)
    elif kind == "ridge":
        return Ridge(dim_visual, dim_audio)
    else:
        raise ValueError(f"fusion.type {kind!r} is not one of {', '.join(TYPES)}")
    output = fusion.get("output") or "tanh"
    if output not in OUTPUTS:
        raise ValueError(f"fusion.output must be one of {', '.join(OUTPUTS)}, not {output!r}")
    model.output = output
    return model
