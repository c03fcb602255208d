"""Temporal segments as flat arrays, and their pairwise tIoU — the currency of every metric."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from benchmark.data.annotations import Annotations


def paired_tiou(a0, a1, b0, b1) -> np.ndarray:
    """Element-wise tIoU of segments [a0, a1] and [b0, b1] (arrays that broadcast together).

    As in the official ActivityNet evaluators, union = (len a + len b - intersection), so any two
    zero-length segments give 0/0 = nan, whether at the same point or not. We return nan and leave
    its meaning to the caller, as the official code does: detection counts it as a match at every
    threshold (evaluation/detection.py), proposal recall never does (evaluation/proposals.py).
    """
    intersection = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None)
    union = (a1 - a0) + (b1 - b0) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return intersection / union


def tiou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """tIoU between every segment of ``a`` [N, 2] and of ``b`` [M, 2] -> [N, M] (paired_tiou's
    arithmetic, so nan for any two zero-length segments)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    return paired_tiou(a[:, None, 0], a[:, None, 1], b[None, :, 0], b[None, :, 1])


@dataclass(frozen=True)
class SegmentTable:
    """A flat table of segments: one row per GT instance or prediction."""

    video: np.ndarray  # [N] str
    t0: np.ndarray  # [N] float64 seconds
    t1: np.ndarray  # [N] float64 seconds
    label: np.ndarray  # [N] str
    score: np.ndarray | None = None  # [N] float64, predictions only
    # Optional, e.g. from a file reader: column name -> (names, codes) with names[codes] equal to the column,
    # so that lookups work on the few names instead of every row (evaluation/detection.py).
    factors: dict = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.video)

    @property
    def segments(self) -> np.ndarray:
        return np.stack([self.t0, self.t1], axis=1)

    def select(self, mask: np.ndarray) -> "SegmentTable":
        return SegmentTable(
            self.video[mask], self.t0[mask], self.t1[mask], self.label[mask],
            None if self.score is None else self.score[mask],
            {column: (names, codes[mask]) for column, (names, codes) in self.factors.items()},
        )

    @classmethod
    def from_rows(cls, rows, with_score: bool) -> "SegmentTable":
        """rows: iterable of (video, t0, t1, label[, score])."""
        rows = list(rows)
        cols = list(zip(*rows)) if rows else [[]] * (5 if with_score else 4)
        return cls(
            np.asarray(cols[0], dtype=object).astype(str) if rows else np.zeros(0, dtype=str),
            np.asarray(cols[1], dtype=np.float64),
            np.asarray(cols[2], dtype=np.float64),
            np.asarray(cols[3], dtype=object).astype(str) if rows else np.zeros(0, dtype=str),
            np.asarray(cols[4], dtype=np.float64) if with_score else None,
        )

    @classmethod
    def from_detections(cls, detections: dict) -> "SegmentTable":
        """ActivityNet result format ``{video: [{"segment": [s, e], "label": name, "score": x}]}``."""
        return cls.from_rows(((vid, *d["segment"], d.get("label", ""), d["score"])
                              for vid, dets in detections.items() for d in dets), with_score=True)

    def to_detections(self) -> dict[str, list[dict]]:
        """The ActivityNet result format (:meth:`from_detections` reads it back), videos in first-seen order."""
        out: dict[str, list[dict]] = {}
        columns = [self.video.tolist(), self.t0.tolist(), self.t1.tolist(), self.label.tolist(), self.score.tolist()]
        for vid, t0, t1, label, score in zip(*columns):
            out.setdefault(vid, []).append({"segment": [t0, t1], "label": label, "score": score})
        return out

    def segments_by_video(self) -> dict[str, list[list[float]]]:
        """``{video: [[s, e], ...]}``: what a method's ``classify_segments`` hook takes."""
        out: dict[str, list[list[float]]] = {}
        for vid, t0, t1 in zip(self.video, self.t0, self.t1):
            out.setdefault(str(vid), []).append([float(t0), float(t1)])
        return out

    @classmethod
    def ground_truth(cls, annotations: Annotations, subset: str, classes=None, videos=None) -> "SegmentTable":
        """GT instances of one subset, optionally restricted to a class set and a video set."""
        classes = None if classes is None else set(classes)
        videos = None if videos is None else set(videos)
        rows = [
            (v.id, i.start, i.end, i.label)
            for v in annotations.subset(subset)
            if videos is None or v.id in videos
            for i in v.instances
            if classes is None or i.label in classes
        ]
        return cls.from_rows(rows, with_score=False)
