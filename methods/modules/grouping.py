"""Grouping scored snippets into segments, and labelling segments from per-snippet class scores.

Shared by the methods that score every snippet and have no proposal stage: B-II (DenseCLIP-style)
and the training-free CLIP reference. Segments here are in snippet indices ``[lo, hi)`` (``hi``
exclusive, so a segment covers snippets ``lo .. hi - 1``); seconds come from
``benchmark.evaluation.postprocess.snippets_to_seconds``.

The grouping is class-agnostic and deliberately simple:
- ``threshold_runs``: maximal runs of consecutive snippets whose score is >= θ, for each θ of a
  set (several thresholds give nested candidates of several lengths);
- ``boundary_pairs``: BSN-style candidates, every start candidate paired with every later end
  candidate, a candidate being a strict local peak of the start (end) probability or a snippet
  above a fraction of that video's maximum.
Duplicates are removed; ranking and overlap removal are left to the scorer and Soft-NMS.
"""
from __future__ import annotations

import numpy as np

from benchmark.evaluation.postprocess import snippets_to_seconds, soft_nms


def runs(mask: np.ndarray) -> np.ndarray:
    """Maximal runs of True in a 1-D mask -> [M, 2] int64 rows ``[lo, hi)``, in temporal order."""
    edges = np.diff(np.concatenate([[0], np.asarray(mask, dtype=np.int8), [0]]))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1).astype(np.int64)


def unique_segments(segments: np.ndarray, min_length: int = 1) -> np.ndarray:
    """Rows of ``segments`` [M, 2] at least ``min_length`` snippets long, duplicates removed (sorted)."""
    segments = np.asarray(segments, dtype=np.int64).reshape(-1, 2)
    segments = segments[segments[:, 1] - segments[:, 0] >= min_length]
    return np.unique(segments, axis=0)


def threshold_runs(score: np.ndarray, thresholds, min_length: int = 1) -> np.ndarray:
    """Runs of snippets with ``score >= θ`` for every θ in ``thresholds`` -> unique [M, 2] ``[lo, hi)``."""
    found = [runs(np.asarray(score) >= theta) for theta in thresholds]
    return unique_segments(np.concatenate(found) if found else np.zeros((0, 2)), min_length)


def boundary_candidates(prob: np.ndarray, peak_fraction: float) -> np.ndarray:
    """Snippets that are a strict local maximum of ``prob`` or reach ``peak_fraction`` of its maximum."""
    prob = np.asarray(prob, dtype=np.float64)
    padded = np.concatenate([[-np.inf], prob, [-np.inf]])
    peak = (prob > padded[:-2]) & (prob > padded[2:])
    return np.flatnonzero(peak | (prob >= peak_fraction * prob.max()))


def boundary_pairs(start: np.ndarray, end: np.ndarray, peak_fraction: float, max_length: int,
                   max_candidates: int = 8) -> np.ndarray:
    """Every start candidate s paired with every end candidate e >= s with e - s < ``max_length``.

    ``end`` scores the *last* snippet of an action, so a pair (s, e) is the segment ``[s, e + 1)``.
    At most ``max_candidates`` of the highest-probability candidates are kept on each side, which
    bounds the pairs at ``max_candidates²`` a video.
    """
    starts, ends = (_strongest(boundary_candidates(p, peak_fraction), p, max_candidates) for p in (start, end))
    s, e = np.meshgrid(starts, ends, indexing="ij")
    keep = (e >= s) & (e - s < max_length)
    return unique_segments(np.stack([s[keep], e[keep] + 1], axis=1))


def _strongest(candidates: np.ndarray, prob: np.ndarray, k: int) -> np.ndarray:
    return candidates[np.argsort(-np.asarray(prob)[candidates], kind="stable")[:k]]


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0 of [T, ...], edges repeated; ``window`` odd (1 = identity)."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"smoothing window must be a positive odd number of snippets, got {window}")
    x = np.asarray(x, dtype=np.float64)
    half = window // 2
    padded = np.concatenate([np.repeat(x[:1], half, axis=0), x, np.repeat(x[-1:], half, axis=0)])
    csum = np.cumsum(np.concatenate([np.zeros_like(x[:1]), padded]), axis=0)
    return (csum[window:] - csum[:-window]) / window


def segment_means(per_snippet: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Mean of ``per_snippet`` [T, ...] over each segment ``[lo, hi)`` of [M, 2] -> [M, ...]."""
    per_snippet = np.asarray(per_snippet, dtype=np.float64)
    segments = np.asarray(segments, dtype=np.int64).reshape(-1, 2)
    csum = np.cumsum(np.concatenate([np.zeros_like(per_snippet[:1]), per_snippet]), axis=0)
    length = np.maximum(segments[:, 1] - segments[:, 0], 1).reshape((-1,) + (1,) * (per_snippet.ndim - 1))
    return (csum[segments[:, 1]] - csum[segments[:, 0]]) / length


def top_k_labels(class_probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best classes of each row of [M, K] -> (segment row [M·k], class [M·k]), best first per row."""
    k = min(k, class_probs.shape[1])
    best = np.argsort(-class_probs, axis=1, kind="stable")[:, :k]
    return np.repeat(np.arange(len(class_probs)), k), best.reshape(-1)


def seconds_to_snippets(segments: np.ndarray, duration: float, T: int) -> np.ndarray:
    """Segments in seconds [M, 2] -> snippet indices ``[lo, hi)`` covering them, never empty.

    Snippet i covers ``[i, i + 1) · duration / T``; a segment takes every snippet it touches.
    """
    x = np.asarray(segments, dtype=np.float64).reshape(-1, 2) * T / duration
    lo = np.clip(np.floor(x[:, 0]), 0, T - 1).astype(np.int64)
    hi = np.clip(np.ceil(x[:, 1]), 1, T).astype(np.int64)
    return np.stack([lo, np.maximum(hi, lo + 1)], axis=1)


def segments_to_detections(segments: np.ndarray, labels, scores: np.ndarray, T: int, duration: float,
                           soft_nms_sigma: float, max_detections: int) -> list[dict]:
    """One video's labelled snippet segments -> ActivityNet-style detections in seconds.

    Class-agnostic Gaussian Soft-NMS over the video (as STALE does), at most ``max_detections``.
    """
    seconds = snippets_to_seconds(np.asarray(segments, dtype=np.float64).reshape(-1, 2), T, duration)
    keep, kept_scores = soft_nms(seconds, scores, soft_nms_sigma, max_keep=max_detections)
    return [{"segment": [float(seconds[i, 0]), float(seconds[i, 1])], "label": str(labels[i]), "score": float(s)}
            for i, s in zip(keep, kept_scores)]


def label_given_segments(test_view, probs: np.ndarray, segments: dict, top_k: int,
                         classes=None) -> dict[str, list[dict]]:
    """The ``classify_segments`` hook of a per-snippet classifier: each given segment (seconds) gets
    the ``top_k`` classes of its mean ``probs`` [N, T, K] over the snippets it touches, score = that mean.
    ``classes`` names the K columns (default: the test view's classes)."""
    classes, out = np.asarray(test_view.classes if classes is None else classes), {}
    for n, video in enumerate(test_view.videos):
        given = np.asarray(segments.get(video.id, []), dtype=np.float64).reshape(-1, 2)
        class_probs = segment_means(probs[n], seconds_to_snippets(given, video.duration, test_view.T))
        rows, labels = top_k_labels(class_probs, top_k)
        out[video.id] = [{"segment": [float(given[r, 0]), float(given[r, 1])], "label": str(classes[c]),
                          "score": float(class_probs[r, c])} for r, c in zip(rows, labels)]
    return out
