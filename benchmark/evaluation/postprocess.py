"""Post-processing shared by every method: snippet indices to seconds, NMS, Soft-NMS, top-k per video.

Suppression works on one video's candidates (``segments`` [N, 2], ``scores`` [N]) and returns
indices into them, so callers carry labels or any other column along. Class-aware suppression is
calling it once per class; STALE and B-I suppress class-agnostically over a video's detections.

Overlap between two zero-length segments is 0/0; here it is 1 if they are the same point (they
are the same segment) and 0 otherwise, so a duplicate is suppressed and nothing else is.
"""
from __future__ import annotations

import numpy as np

from benchmark.evaluation.segments import SegmentTable, tiou_matrix


def snippets_to_seconds(boundaries, n_snippets: int, duration: float, clip: bool = True) -> np.ndarray:
    """Snippet-grid boundaries to seconds, for a video rescaled to ``n_snippets`` snippets.

    Snippet i spans [i, i + 1) in grid units, i.e. [i, i + 1) * duration / n_snippets seconds, so a
    detection covering snippets s..e (inclusive) has boundaries (s, e + 1). Fractional boundaries
    (regressed offsets, BMN's normalised anchors times T) are fine. ``clip`` keeps the result
    within [0, duration], as STALE and BMN do before writing their detections.
    """
    seconds = np.asarray(boundaries, dtype=np.float64) * (duration / n_snippets)
    return np.clip(seconds, 0.0, duration) if clip else seconds


def nms(segments, scores, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy hard NMS: keep the best, drop every candidate overlapping it with tIoU > threshold.

    Returns kept indices, best first; ties in score keep input order.
    """
    segments, scores = _candidates(segments, scores)
    remaining = np.argsort(-scores, kind="stable")
    keep = []
    while len(remaining) and (max_keep is None or len(keep) < max_keep):
        best, remaining = remaining[0], remaining[1:]
        keep.append(best)
        remaining = remaining[_overlap(segments[best], segments[remaining]) <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def soft_nms(segments, scores, sigma: float, max_keep: int | None = None, min_score: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian Soft-NMS (Bodla et al. 2017, as in BSN/BMN/STALE): instead of dropping overlaps,
    repeatedly take the best candidate and decay every other score by exp(-tIoU^2 / sigma).

    Returns (indices, decayed scores) in selection order; candidates whose decayed score falls to
    ``min_score`` or below are dropped. Ties keep input order. (BMN additionally skips the decay
    below a width-dependent tIoU, and its loop leaves out the last candidate; we do neither.)
    """
    segments, scores = _candidates(segments, scores)
    current, alive = scores.copy(), np.ones(len(scores), dtype=bool)
    keep, kept_scores = [], []
    # every candidate is decayed at each pick (the ones already taken too, harmlessly): whole arrays,
    # not index arrays that shrink: 1.2-1.4x faster, the same picks and scores
    while alive.any() and (max_keep is None or len(keep) < max_keep):
        best = int(np.argmax(np.where(alive, current, -np.inf)))  # the first maximum: ties keep input order
        if current[best] <= min_score:
            break
        keep.append(best)
        kept_scores.append(current[best])
        alive[best] = False
        current *= np.exp(-_overlap(segments[best], segments) ** 2 / sigma)
    return np.array(keep, dtype=np.int64), np.array(kept_scores, dtype=np.float64)


def top_k_per_video(table: SegmentTable, k: int) -> SegmentTable:
    """The ``k`` highest-scoring rows of each video, grouped by video, best first (ties: input order)."""
    order = np.lexsort((-table.score, table.video))
    video = table.video[order]
    group_start = np.flatnonzero(np.r_[True, video[1:] != video[:-1]])
    rank = np.arange(len(order)) - np.repeat(group_start, np.diff(np.r_[group_start, len(order)]))
    return table.select(order[rank < k])


def _candidates(segments, scores) -> tuple[np.ndarray, np.ndarray]:
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(segments) != len(scores):
        raise ValueError(f"{len(segments)} segments but {len(scores)} scores")
    return segments, scores


def _overlap(segment: np.ndarray, others: np.ndarray) -> np.ndarray:
    """tIoU of one segment with others; 0/0 becomes 1 for the same point, 0 otherwise (module doc)."""
    tiou = tiou_matrix(segment[None], others)[0]
    undefined = np.isnan(tiou)
    tiou[undefined] = np.all(others[undefined] == segment, axis=1)
    return tiou
