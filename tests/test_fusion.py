"""Fusion models: JCA against the paper's equations, LFAN's causality, and every type's forward/backward."""
import math

import pytest
import torch

from avfusion.learning.fusion import LFAN, TYPES, JointCrossAttention, build_model

B, L, DV, DA = 3, 16, 20, 12


def jca_by_equations(block, xa, xv):
    """docs/design.md §6 written out per sample, independently of the module's batched code."""
    p = dict(block.named_parameters())
    outs_a, outs_v = [], []
    for a, v in zip(xa, xv):                                     # a, v: [L, dim]
        j = torch.cat([a, v], dim=1)                             # [L, d]
        d = j.shape[1]
        c_a = torch.tanh(torch.einsum("ti,ts,sj->ij", a, p["W_ja"], j) / math.sqrt(d))
        c_v = torch.tanh(torch.einsum("ti,ts,sj->ij", v, p["W_jv"], j) / math.sqrt(d))
        h_a = torch.relu(torch.einsum("kt,ti->ki", p["W_a"], a) + torch.einsum("kj,ij->ki", p["W_ca"], c_a))
        h_v = torch.relu(torch.einsum("kt,ti->ki", p["W_v"], v) + torch.einsum("kj,ij->ki", p["W_cv"], c_v))
        outs_a.append(torch.einsum("tk,ki->ti", p["W_ha"], h_a) + a)
        outs_v.append(torch.einsum("tk,ki->ti", p["W_hv"], h_v) + v)
    return torch.stack(outs_a), torch.stack(outs_v)


def test_jca_parameters_are_the_equations_matrices():
    block = JointCrossAttention(length=L, dim=128, hidden=32)
    shapes = {name: tuple(p.shape) for name, p in block.named_parameters()}
    assert shapes == {"W_ja": (L, L), "W_jv": (L, L), "W_a": (32, L), "W_v": (32, L),
                      "W_ca": (32, 256), "W_cv": (32, 256), "W_ha": (L, 32), "W_hv": (L, 32)}


@pytest.mark.parametrize("dim, hidden", [(128, 32), (8, 4)])
def test_jca_matches_an_independent_implementation(dim, hidden):
    torch.manual_seed(0)
    block = JointCrossAttention(L, dim, hidden)
    with torch.no_grad():
        for p in block.parameters():     # larger than the init, so tanh and ReLU are exercised
            p.normal_(0, 0.5)
    xa, xv = torch.randn(B, L, dim), torch.randn(B, L, dim)
    got_a, got_v = block(xa, xv)
    want_a, want_v = jca_by_equations(block, xa, xv)
    assert got_a.shape == (B, L, dim) and got_v.shape == (B, L, dim)
    torch.testing.assert_close(got_a, want_a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_v, want_v, rtol=1e-4, atol=1e-4)


def test_jca_model_head_and_projections():
    model = build_model({"type": "jca", "dim": 128, "hidden": 32, "dropout": 0.6}, L, DV, DA)
    assert model.project_audio.bias is not None and model.project_visual.out_features == 128
    for head in model.heads:
        assert [type(m).__name__ for m in head] == ["Linear", "Dropout", "Linear"]
        assert (head[0].in_features, head[0].out_features, head[1].p, head[2].out_features) == (256, 128, 0.6, 1)


def inputs(batch=B, length=L, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, length, DV, generator=g), torch.rand(batch, length, generator=g) > 0.2,
            torch.randn(batch, length, DA, generator=g), torch.rand(batch, length, generator=g) > 0.2)


def test_lfan_is_causal_and_shaped():
    torch.manual_seed(0)
    model = LFAN(DV, DA).eval()
    visual, visual_valid, audio, audio_valid = inputs(length=40)
    out = model(visual, visual_valid, audio, audio_valid)
    assert out.shape == (B, 40, 2)
    cut = 25
    visual2, audio2 = visual.clone(), audio.clone()
    visual2[:, cut:] += torch.randn_like(visual2[:, cut:])
    audio2[:, cut:] += torch.randn_like(audio2[:, cut:])
    out2 = model(visual2, visual_valid, audio2, audio_valid)
    torch.testing.assert_close(out2[:, :cut], out[:, :cut])
    assert not torch.allclose(out2[:, cut:], out[:, cut:])


def test_lfan_structure():
    model = LFAN(DV, DA)
    assert len(model.tcn_visual.blocks) == 4 and len(model.tcn_audio.blocks) == 4
    assert [b.conv1.dilation[0] for b in model.tcn_visual.blocks] == [1, 2, 4, 8]
    assert model.tcn_visual.blocks[-1].conv2.out_channels == 128
    assert model.tcn_audio.blocks[-1].conv2.out_channels == 32
    assert model.norm.normalized_shape == (2, 32) and model.head.in_features == 128 + 64


@pytest.mark.parametrize("kind", [t for t in TYPES if t != "ridge"])   # ridge: fitted, no gradients
def test_every_type_runs_forward_and_backward_in_range(kind):
    torch.manual_seed(0)
    model = build_model({"type": kind, "dim": 16, "hidden": 8, "dropout": 0.1}, L, DV, DA)
    out = model(*inputs())
    assert out.shape == (B, L, 2) and out.abs().max() < 1
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind", TYPES)
def test_absent_frames_are_ignored(kind):
    """Whatever an absent frame's features hold, the output is the same."""
    torch.manual_seed(0)
    model = build_model({"type": kind, "dim": 16, "hidden": 8}, L, DV, DA).eval()
    visual, visual_valid, audio, audio_valid = inputs()
    garbage_v = torch.where(visual_valid[..., None], visual, 1e3)
    garbage_a = torch.where(audio_valid[..., None], audio, -1e3)
    torch.testing.assert_close(model(garbage_v, visual_valid, garbage_a, audio_valid),
                               model(visual, visual_valid, audio, audio_valid))


def test_unknown_type_is_named():
    with pytest.raises(ValueError, match="transformer"):
        build_model({"type": "transformer"}, L, DV, DA)
