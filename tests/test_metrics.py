"""CCC, the masked CCC loss and CCC centring against values worked out by hand."""
import numpy as np
import pytest
import torch

from avfusion.learning.metrics import (
    INVALID,
    bootstrap_cccs,
    bootstrap_interval,
    ccc,
    ccc_centring,
    ccc_of_moments,
    masked_ccc_loss,
    paired_difference,
    resample_counts,
    split_ccc,
    video_moments,
)


def test_ccc_perfect_agreement_is_one():
    assert ccc(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(1.0)


def test_ccc_penalises_a_shift():
    # x = [1,2,3], y = [2,3,4]: cov = var x = var y = 2/3, (mean x - mean y)^2 = 1
    # CCC = 2 * 2/3 / (2/3 + 2/3 + 1) = (4/3) / (7/3) = 4/7 (Pearson r would be 1)
    assert ccc(np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0])) == pytest.approx(4 / 7)


def test_ccc_penalises_a_scale():
    # x = [0,2], y = [0,1]: means 1 and 0.5, var x = 1, var y = 0.25, cov = 0.5
    # CCC = 2 * 0.5 / (1 + 0.25 + 0.25) = 1 / 1.5 = 2/3
    assert ccc(np.array([0.0, 2.0]), np.array([0.0, 1.0])) == pytest.approx(2 / 3)


def test_ccc_anticorrelated_is_minus_one():
    # x = [0,1], y = [1,0]: cov = -0.25, both variances 0.25, equal means -> -0.5 / 0.5
    assert ccc(np.array([0.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(-1.0)


def test_ccc_of_constants_is_nan():
    assert np.isnan(ccc(np.zeros(4), np.zeros(4)))


def test_split_ccc_excludes_minus_five_per_dimension():
    pred = np.array([[0.0, 0.0], [1.0, 1.0], [0.9, 0.3], [0.5, 0.5]])
    # Valence of frame 2 and arousal of frame 3 are not annotated: what is left agrees perfectly
    # (valence frames 0,1,3: pred [0,1,.5] = true; arousal frames 0,1,2: pred [0,1,.3] = true).
    true = np.array([[0.0, 0.0], [1.0, 1.0], [INVALID, 0.3], [0.5, INVALID]])
    out = split_ccc(pred, true)
    assert out == pytest.approx({"valence": 1.0, "arousal": 1.0, "mean": 1.0})
    # Counting -5 as a label would wreck it.
    assert ccc(pred[:, 0], true[:, 0]) < 0.5


def test_concatenated_ccc_differs_from_average_of_per_video_ccc():
    # Video A: pred [0,1], true [0,1] -> CCC 1.  Video B: pred [.5,.5], true [0,1] -> cov 0, CCC 0.
    # Per-video mean = 0.5.  Concatenated: pred [0,1,.5,.5], true [0,1,0,1], both means .5,
    # cov = (.25 + .25 + 0 + 0)/4 = .125, var pred = .125, var true = .25 -> CCC = .25/.375 = 2/3.
    pred_a, true_a = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    pred_b, true_b = np.array([0.5, 0.5]), np.array([0.0, 1.0])
    per_video = (ccc(pred_a, true_a) + ccc(pred_b, true_b)) / 2
    pred = np.stack([np.r_[pred_a, pred_b]] * 2, axis=1)
    true = np.stack([np.r_[true_a, true_b]] * 2, axis=1)
    assert per_video == pytest.approx(0.5)
    assert split_ccc(pred, true)["valence"] == pytest.approx(2 / 3)


def test_masked_loss_is_one_minus_ccc_and_ignores_masked_frames():
    # Valence x = [1,2,3] vs y = [2,3,4] -> CCC 4/7; arousal identical -> CCC 1.
    # Loss = mean(1 - 4/7, 1 - 1) = 3/14. A fourth, masked frame holds garbage.
    pred = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [100.0, -100.0]])
    true = torch.tensor([[2.0, 1.0], [3.0, 2.0], [4.0, 3.0], [INVALID, INVALID]])
    mask = torch.tensor([[True, True]] * 3 + [[False, False]])
    loss = masked_ccc_loss(pred, true, mask)
    assert loss.item() == pytest.approx(3 / 14, abs=1e-6)


def test_masked_loss_pools_over_the_batch_dimension():
    # The same 3 frames split over two windows [B=2, L=2] with one padded slot give the same loss.
    pred = torch.tensor([[[1.0, 1.0], [2.0, 2.0]], [[3.0, 3.0], [0.0, 0.0]]])
    true = torch.tensor([[[2.0, 1.0], [3.0, 2.0]], [[4.0, 3.0], [0.0, 0.0]]])
    mask = torch.tensor([[[True, True], [True, True]], [[True, True], [False, False]]])
    assert masked_ccc_loss(pred, true, mask).item() == pytest.approx(3 / 14, abs=1e-6)


def test_masked_loss_has_gradients():
    pred = torch.tensor([[0.1, 0.2], [0.3, -0.1], [0.0, 0.4]], requires_grad=True)
    true = torch.tensor([[0.2, 0.1], [0.5, 0.0], [-0.2, 0.3]])
    masked_ccc_loss(pred, true, torch.ones(3, 2, dtype=torch.bool)).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_centring_of_one_fold_is_the_clipped_prediction():
    np.testing.assert_allclose(ccc_centring([np.array([0.5, 1.5, -2.0])]), [0.5, 1.0, -1.0])


def test_centring_of_identical_folds_returns_them():
    # Every a_i = 1, every m_i = 0.2 -> w = 0.2; fused = mean - 0.2 + 0.2 = the prediction.
    p = np.array([0.1, 0.3])
    np.testing.assert_allclose(ccc_centring([p, p.copy()]), p)


def test_centring_on_three_folds_by_hand():
    # P1 = [0, .2] (m .1), P2 = [.1, .3] (m .2), P3 = [.3, .5] (m .4); all variances .01, covs .01.
    # CCC(P1,P2) = .02 / (.02 + .01) = 2/3; CCC(P1,P3) = .02 / (.02 + .09) = 2/11;
    # CCC(P2,P3) = .02 / (.02 + .04) = 1/3.
    # a1 = (2/3 + 2/11)/2 = 14/33, a2 = (2/3 + 1/3)/2 = 1/2, a3 = (2/11 + 1/3)/2 = 17/66
    # w = (28*.1 + 33*.2 + 17*.4)/66 / (78/66) = 16.2/78
    # fused = mean_i P_i - mean_i m_i + w = [.4/3, 1/3] - .7/3 + 16.2/78
    folds = [np.array([0.0, 0.2]), np.array([0.1, 0.3]), np.array([0.3, 0.5])]
    w = 16.2 / 78
    expected = np.array([0.4 / 3, 1.0 / 3]) - 0.7 / 3 + w
    np.testing.assert_allclose(ccc_centring(folds), expected, atol=1e-12)
    # The outlying fold P3 agrees least, so the level moves towards P1/P2 versus the plain mean.
    assert ccc_centring(folds).mean() < np.mean(folds)


def test_centring_clips_to_the_label_range():
    folds = [np.array([0.9, 1.3]), np.array([0.95, 1.35])]
    assert ccc_centring(folds).max() == 1.0


def test_centring_falls_back_to_the_mean_when_no_fold_agrees():
    # Two anti-correlated folds: a_1 = a_2 = -1, so weights are meaningless; the plain mean is used.
    folds = [np.array([0.0, 0.2]), np.array([0.2, 0.0])]
    np.testing.assert_allclose(ccc_centring(folds), [0.1, 0.1])


def _videos(rng, count, frames=50, noise=0.3, shift=0.0):
    """(pred, true) per video: true a random walk in [-1, 1], pred = true + shift + noise; some -5."""
    out = []
    for _ in range(count):
        true = np.clip(np.cumsum(rng.normal(0, 0.1, (frames, 2)), axis=0), -1, 1)
        pred = true + shift + rng.normal(0, noise, true.shape)
        true[rng.random(true.shape) < 0.1] = INVALID
        out.append((pred, true))
    return out


def test_moments_give_the_pooled_ccc_of_concatenated_videos():
    videos = _videos(np.random.default_rng(0), 5)
    moments = np.stack([video_moments(p, t) for p, t in videos])
    pooled = split_ccc(np.concatenate([p for p, _ in videos]), np.concatenate([t for _, t in videos]))
    assert ccc_of_moments(moments.sum(0)) == pytest.approx([pooled["valence"], pooled["arousal"]], abs=1e-12)
    # each resample is the official CCC of the drawn videos' frames concatenated (a video drawn twice counts twice)
    counts = resample_counts(5, 4, seed=3)
    for row, drawn in zip(bootstrap_cccs(moments, counts), counts):
        picked = [v for v, c in zip(videos, drawn) for _ in range(int(c))]
        official = split_ccc(np.concatenate([p for p, _ in picked]), np.concatenate([t for _, t in picked]))
        assert row == pytest.approx([official["valence"], official["arousal"], official["mean"]], abs=1e-12)


def test_interval_brackets_the_ccc_and_repeats_with_its_seed():
    videos = _videos(np.random.default_rng(1), 20)
    moments = np.stack([video_moments(p, t) for p, t in videos])
    whole = ccc_of_moments(moments.sum(0))
    got = bootstrap_interval(moments, 500, seed=0)
    for d, name in enumerate(("valence", "arousal")):
        low, high = got[name]
        assert low < whole[d] < high and high - low < 0.2
    assert bootstrap_interval(moments, 500, seed=0) == got != bootstrap_interval(moments, 500, seed=1)


def test_paired_difference_covers_a_known_difference_and_is_zero_for_identical_predictions():
    rng = np.random.default_rng(2)
    videos = _videos(rng, 30, noise=0.2)
    true = [t for _, t in videos]
    a = np.stack([video_moments(p, t) for p, t in videos])
    # b: the same predictions shifted by 0.3, which lowers CCC by a known amount on all videos
    b = np.stack([video_moments(p + 0.3, t) for p, t in videos])
    known = [ccc_of_moments(a.sum(0))[d] - ccc_of_moments(b.sum(0))[d] for d in range(2)]
    # the population difference, from a large sample of the same process, is inside the interval
    big = _videos(np.random.default_rng(3), 400, noise=0.2)
    big_a = np.stack([video_moments(p, t) for p, t in big]).sum(0)
    big_b = np.stack([video_moments(p + 0.3, t) for p, t in big]).sum(0)
    population = ccc_of_moments(big_a) - ccc_of_moments(big_b)
    got = paired_difference(a, b, 1000, seed=0)
    for d, name in enumerate(("valence", "arousal")):
        difference, low, high = got[name]
        assert difference == pytest.approx(known[d]) and difference > 0.05
        assert low < population[d] < high and low > 0      # the interval excludes zero
    same = paired_difference(a, np.stack([video_moments(p, t) for p, t in zip([p for p, _ in videos], true)]),
                             1000, seed=0)
    assert all(v == (0.0, 0.0, 0.0) for v in same.values())
