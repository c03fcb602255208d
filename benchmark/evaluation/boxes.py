"""Person boxes on frames as flat arrays, and their IoU — the currency of the spatio-temporal metrics.

One row per (box, label): a person with two labels (AVA is multi-label) is two rows with the same box
and person id, as in the AVA CSV. ``frame`` is the frame number of the annotation file (1-based in the
ACT layout; the keyframe second in AVA); (video, frame) is a frame's key. Boxes are x1, y1, x2, y2, in
pixels for JHMDB/UCF101-24 and normalised to [0, 1] for AVA, as the files give them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray, pixel_inclusive: bool = False) -> np.ndarray:
    """IoU of every box of ``a`` [N, 4] with every box of ``b`` [M, 4] -> [N, M].

    ``pixel_inclusive``: ACT/MOC's convention, where a box covers pixels x1..x2 inclusive, so widths
    and heights are x2 - x1 + 1; otherwise continuous area (x2 - x1), as VOC/TF-OD-API compute it."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    one = 1.0 if pixel_inclusive else 0.0
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + one, 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + one, 0, None)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_a[:, None] + area_b[None, :] - inter)


@dataclass(frozen=True)
class BoxTable:
    """A flat table of boxes: one row per GT (box, label) or prediction."""

    video: np.ndarray  # [N] str
    frame: np.ndarray  # [N] int64
    box: np.ndarray  # [N, 4] float64 x1, y1, x2, y2
    label: np.ndarray  # [N] str
    score: np.ndarray | None = None  # [N] float64, predictions (and detector boxes) only
    person: np.ndarray | None = None  # [N] int64 tube / person id within the video (GT), -1 if unknown
    # Optional: column name -> (names, codes) with names[codes] equal to the column (as in SegmentTable).
    factors: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        n = len(self.video)
        if self.box.shape != (n, 4) or len(self.frame) != n or len(self.label) != n:
            raise ValueError(f"BoxTable columns of different lengths: {n} videos, {len(self.frame)} frames, "
                             f"{self.box.shape} boxes, {len(self.label)} labels")

    def __len__(self) -> int:
        return len(self.video)

    def select(self, mask: np.ndarray) -> "BoxTable":
        return BoxTable(
            self.video[mask], self.frame[mask], self.box[mask], self.label[mask],
            None if self.score is None else self.score[mask],
            None if self.person is None else self.person[mask],
            {column: (names, codes[mask]) for column, (names, codes) in self.factors.items()},
        )

    @classmethod
    def from_rows(cls, rows, with_score: bool) -> "BoxTable":
        """rows: iterable of (video, frame, x1, y1, x2, y2, label[, score])."""
        rows = list(rows)
        if not rows:
            return cls.empty(with_score)
        cols = list(zip(*rows))
        return cls(np.asarray(cols[0], dtype=object).astype(str), np.asarray(cols[1], dtype=np.int64),
                   np.asarray(cols[2:6], dtype=np.float64).T.copy(), np.asarray(cols[6], dtype=object).astype(str),
                   np.asarray(cols[7], dtype=np.float64) if with_score else None)

    @classmethod
    def empty(cls, with_score: bool = False) -> "BoxTable":
        return cls(np.zeros(0, dtype=str), np.zeros(0, dtype=np.int64), np.zeros((0, 4)), np.zeros(0, dtype=str),
                   np.zeros(0) if with_score else None)

    def keys(self) -> np.ndarray:
        """The distinct (video, frame) keys as a structured array, sorted."""
        keys = np.empty(len(self), dtype=[("video", self.video.dtype), ("frame", np.int64)])
        keys["video"], keys["frame"] = self.video, self.frame
        return np.unique(keys)
