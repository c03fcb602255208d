"""Post-processing: snippet grid to seconds, hard NMS, Gaussian Soft-NMS, top-k per video."""
import math

import numpy as np
import pytest

from benchmark.evaluation.postprocess import nms, snippets_to_seconds, soft_nms, top_k_per_video
from benchmark.evaluation.segments import SegmentTable


def test_snippets_to_seconds():
    # 100 snippets over 50 s: 0.5 s each; snippets 10..19 inclusive are boundaries (10, 20)
    np.testing.assert_allclose(snippets_to_seconds([10, 20], 100, 50.0), [5.0, 10.0])
    np.testing.assert_allclose(snippets_to_seconds([[-2, 3.5], [99, 104]], 100, 50.0), [[0.0, 1.75], [49.5, 50.0]])
    np.testing.assert_allclose(snippets_to_seconds([-2, 104], 100, 50.0, clip=False), [-1.0, 52.0])


# Three candidates: A and B overlap at tIoU 8/12 = 2/3, C is disjoint from both.
SEGMENTS = [[0, 10], [2, 12], [20, 30]]
SCORES = [0.9, 0.8, 0.7]


def test_nms_drops_overlaps_above_threshold():
    assert nms(SEGMENTS, SCORES, iou_threshold=0.5).tolist() == [0, 2]
    assert nms(SEGMENTS, SCORES, iou_threshold=0.7).tolist() == [0, 1, 2]
    assert nms(SEGMENTS, SCORES, iou_threshold=0.7, max_keep=2).tolist() == [0, 1]


def test_nms_orders_by_score_and_keeps_input_order_on_ties():
    assert nms([[20, 30], [0, 10], [0, 10]], [0.5, 0.5, 0.9], iou_threshold=0.5).tolist() == [2, 0]
    assert nms([[0, 10], [40, 50]], [0.5, 0.5], iou_threshold=0.5).tolist() == [0, 1]


def test_soft_nms_gaussian_decay():
    keep, scores = soft_nms(SEGMENTS, SCORES, sigma=0.5)
    decayed_b = 0.8 * math.exp(-(2 / 3) ** 2 / 0.5)  # ≈ 0.328 < C's 0.7
    assert keep.tolist() == [0, 2, 1]
    np.testing.assert_allclose(scores, [0.9, 0.7, decayed_b])


def test_soft_nms_decay_is_cumulative():
    # A=[0,10], C=[20,30], D=[5,25]: D overlaps A and C at 5/25 each, A and C do not overlap.
    # A is picked and decays D to 0.85 e^-0.04 = 0.817 > 0.8; D is picked next and decays C.
    segments = [[0, 10], [20, 30], [5, 25]]
    keep, scores = soft_nms(segments, [0.9, 0.8, 0.85], sigma=1.0)
    d = 0.85 * math.exp(-0.2 ** 2)
    c = 0.8 * math.exp(-0.2 ** 2)
    assert keep.tolist() == [0, 2, 1]
    np.testing.assert_allclose(scores, [0.9, d, c])


def test_soft_nms_limits():
    keep, scores = soft_nms(SEGMENTS, SCORES, sigma=0.5, max_keep=2)
    assert keep.tolist() == [0, 2]
    keep, _ = soft_nms(SEGMENTS, SCORES, sigma=0.5, min_score=0.5)
    assert keep.tolist() == [0, 2]
    keep, scores = soft_nms(np.zeros((0, 2)), [], sigma=0.5)
    assert keep.shape == (0,) and scores.shape == (0,)


def test_zero_length_duplicates_suppress_each_other_only():
    segments = [[5, 5], [5, 5], [7, 7]]
    assert nms(segments, [0.9, 0.8, 0.7], iou_threshold=0.5).tolist() == [0, 2]
    keep, scores = soft_nms(segments, [0.9, 0.8, 0.7], sigma=0.5)
    assert keep.tolist() == [0, 2, 1]
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.8 * math.exp(-1 / 0.5)])


def slow_soft_nms(segments, scores, sigma, max_keep=None, min_score=0.0):
    """Soft-NMS written from its definition, one pair at a time (reference for the vectorised one)."""
    remaining, current, keep, kept = list(range(len(scores))), [float(s) for s in scores], [], []
    while remaining and (max_keep is None or len(keep) < max_keep):
        best = max(remaining, key=lambda i: (current[i], -i))  # highest score, then first in input order
        if current[best] <= min_score:
            break
        keep.append(best)
        kept.append(current[best])
        remaining.remove(best)
        (a0, a1) = segments[best]
        for i in remaining:
            b0, b1 = segments[i]
            inter = max(0.0, min(a1, b1) - max(a0, b0))
            union = (a1 - a0) + (b1 - b0) - inter
            tiou = inter / union if union > 0 else float((a0, a1) == (b0, b1))
            current[i] *= math.exp(-tiou ** 2 / sigma)
    return keep, kept


@pytest.mark.parametrize("seed", range(5))
def test_soft_nms_matches_a_pairwise_reference(seed):
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, 40, 150).astype(float)
    segments = np.stack([starts, starts + rng.integers(0, 15, 150)], axis=1)  # zero-length ones included
    scores = rng.choice([0.2, 0.5, 0.7, 0.9], 150) * rng.choice([1.0, 1.0, 0.5], 150)  # many ties
    keep, kept = soft_nms(segments, scores, sigma=0.5, max_keep=100, min_score=0.01)
    ref_keep, ref_kept = slow_soft_nms(segments.tolist(), scores, 0.5, max_keep=100, min_score=0.01)
    assert keep.tolist() == ref_keep
    np.testing.assert_allclose(kept, ref_kept, rtol=1e-12)


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="2 segments but 3 scores"):
        nms([[0, 1], [1, 2]], [0.1, 0.2, 0.3], 0.5)


def test_top_k_per_video():
    table = SegmentTable.from_rows([
        ("b", 0, 1, "x", 0.1), ("a", 0, 1, "x", 0.3), ("b", 1, 2, "x", 0.9),
        ("a", 1, 2, "y", 0.5), ("a", 2, 3, "x", 0.4), ("b", 2, 3, "x", 0.9),
    ], with_score=True)
    top = top_k_per_video(table, 2)
    assert list(zip(top.video, top.score)) == [("a", 0.5), ("a", 0.4), ("b", 0.9), ("b", 0.9)]
    assert list(top.t0) == [1, 2, 1, 2]  # tie at 0.9 keeps input order
    assert len(top_k_per_video(table, 0)) == 0
    assert len(top_k_per_video(table.select(np.zeros(6, dtype=bool)), 3)) == 0
