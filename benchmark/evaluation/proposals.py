"""Average recall vs average number of proposals (AR-AN), with the official ``eval_proposal.py`` semantics.

Proposals are class-agnostic: every GT instance of the evaluated set counts, whatever its class.
What the official code does, and so what we do:

- The evaluated videos are those with GT. With ``P`` proposals in total (all videos of the
  proposal table, including videos without GT) and ``V`` evaluated videos, each video keeps its
  top ``int(n_v * ratio)`` proposals (at most ``n_v``), ratio = max_avg_nr_proposals * V / P:
  the budget of a video is proportional to its own proposal count, not a fixed top-N.
- The curve has 100 points: at point j = 1..100, a video with ``m_v`` kept proposals uses its
  top ``int(m_v * j/100 * max_avg_nr_proposals * V / M)`` of them (M = all kept proposals), so
  the average number per video (AN) is j/100 * max_avg_nr_proposals.
- A GT instance is recalled at a threshold if one of the used proposals has tIoU >= threshold.
  Unlike detection, a 0/0 tIoU (zero-length GT and proposal) is nan and never recalls.
- AR is recall averaged over the tIoU thresholds; the AUC is the trapezoidal area under AR-AN
  divided by the last AN, reported x100 as the official code prints it.
- Ties between proposal scores: stable sort (file order), where the official code's order is arbitrary.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmark.errors import InputError
from benchmark.evaluation.detection import ACTIVITYNET_TIOU, tiou_key
from benchmark.evaluation.segments import SegmentTable, tiou_matrix

AVERAGE_NUMBERS = (1, 5, 10, 50, 100)
CURVE_POINTS = 100


@dataclass(frozen=True)
class ProposalResult:
    tiou: np.ndarray  # [K]
    average_number: np.ndarray  # [100] AN of each point of the curve
    recall: np.ndarray  # [K, 100] recall per threshold and curve point (fraction)
    ar_at: dict[int, float]  # AN -> AR (fraction), for the ANs that are points of the curve
    auc: float  # area under AR-AN / max AN, x100
    meta: dict = field(default_factory=dict)

    @property
    def average_recall(self) -> np.ndarray:
        return self.recall.mean(axis=0)

    def to_json(self) -> dict:
        return {
            "tiou": [float(t) for t in self.tiou],
            "ar_at_an": {str(an): ar for an, ar in self.ar_at.items()},
            "auc": self.auc,
            "recall_at_an100_per_tiou": {tiou_key(t): float(r) for t, r in zip(self.tiou, self.recall[:, -1])},
            "meta": self.meta,
        }


def evaluate_proposals(gt: SegmentTable, proposals: SegmentTable, tiou_thresholds=ACTIVITYNET_TIOU,
                       max_avg_nr_proposals: int = 100, average_numbers=AVERAGE_NUMBERS) -> ProposalResult:
    """AR at each AN in ``average_numbers`` and AUC of the AR-AN curve (see module doc)."""
    if len(gt) == 0:
        raise InputError("no ground-truth instances in the evaluated set")
    if proposals.score is None:
        raise ValueError("proposals need scores")
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)
    videos = pd.unique(gt.video)
    n_videos = len(videos)
    meta = {"gt_instances": len(gt), "gt_videos": n_videos, "proposals": len(proposals),
            "proposals_on_videos_without_gt": int((~np.isin(proposals.video, videos)).sum())}

    gt_of = _rows_by_video(gt.video)
    proposals_of = _rows_by_video(proposals.video)
    # Each video's proposals in descending score order, cut to its share of the budget.
    ratio = max_avg_nr_proposals * float(n_videos) / len(proposals) if len(proposals) else 0.0
    kept = {}
    for vid in videos:
        rows = proposals_of.get(vid, np.zeros(0, dtype=np.int64))
        rows = rows[np.argsort(-proposals.score[rows], kind="stable")]
        kept[vid] = rows[: min(int(len(rows) * ratio), len(rows))]
    total_kept = sum(len(rows) for rows in kept.values())
    meta["proposals_used"] = total_kept

    fractions = np.zeros(CURVE_POINTS)
    if total_kept:
        # the same float expression as the official code, since int() truncates it below
        fractions = np.arange(1, CURVE_POINTS + 1) / float(CURVE_POINTS) * (max_avg_nr_proposals * float(n_videos) / total_kept)
    matches = np.zeros((len(thresholds), CURVE_POINTS))
    gt_segments, proposal_segments = gt.segments, proposals.segments
    for vid in videos:
        rows = kept[vid]
        if len(rows) == 0:
            continue
        tiou = tiou_matrix(gt_segments[gt_of[vid]], proposal_segments[rows])
        with np.errstate(invalid="ignore"):
            hit = tiou[None] >= thresholds[:, None, None]  # [K, gt, proposals]; nan never hits
        # The first (best-scored) proposal that recalls each GT; len(rows) if none does.
        first_hit = np.where(hit.any(axis=2), hit.argmax(axis=2), len(rows))
        budget = np.minimum((len(rows) * fractions).astype(int), len(rows))  # [100]
        matches += (first_hit[:, :, None] < budget[None, None, :]).sum(axis=1)
    recall = matches / len(gt)

    average_number = fractions * (float(total_kept) / n_videos)
    average_recall = recall.mean(axis=0)
    auc = 0.0
    if total_kept:
        area = np.sum(np.diff(average_number) * (average_recall[1:] + average_recall[:-1]) / 2.0)  # trapezoid rule
        auc = float(100.0 * area / average_number[-1])
    # Point j of the curve sits at AN = j/100 * max: read the ANs that are points of it.
    ar_at = {}
    for an in average_numbers:
        point = an * CURVE_POINTS / max_avg_nr_proposals
        if point == int(point) and 1 <= point <= CURVE_POINTS:
            ar_at[an] = float(average_recall[int(point) - 1])
    return ProposalResult(thresholds, average_number, recall, ar_at, auc, meta)


def _rows_by_video(video: np.ndarray) -> dict[str, np.ndarray]:
    codes, names = pd.factorize(video)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    return {name: order[bounds[i]:bounds[i + 1]] for i, name in enumerate(names)}
