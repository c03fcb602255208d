"""Detection mAP with the semantics of the official ActivityNet ``eval_detection.py``, vectorised.

What the official evaluator does, and so what this module does:

- Per class, predictions are taken in descending score order. At each tIoU threshold a prediction
  is compared with the ground-truth (GT) instances of its class *in its video*, visited in
  descending tIoU order: an already-matched GT is skipped, the first unmatched GT with
  tIoU >= threshold makes the prediction a true positive (and is now matched), and a GT below the
  threshold ends the walk (false positive). Equivalently: the prediction takes the unmatched GT of
  highest tIoU, and is a true positive if that tIoU reaches the threshold.
- AP is the all-point interpolated average precision (precision made monotone from the right,
  summed over the recall steps); mAP is the plain mean over the classes that have at least one GT
  instance in the evaluated set; "average" is the mean of mAP over the tIoU thresholds.
- A prediction on a video without GT of its class is a false positive, whatever the video (also
  videos outside the evaluated subset). Predicted labels without any GT in the evaluated set are
  left out and counted in ``meta`` (the official code raises a KeyError on them; they could not
  change any evaluated class's AP anyway).
- Segments are never clipped to the video.

Corner cases, documented because they decide numbers:

- Zero-length segments. tIoU is intersection / (len_a + len_b - intersection), so a zero-length
  prediction against a zero-length GT is 0/0 = nan, wherever the two points are. The official code
  never tests for nan: ``nan < threshold`` is False, so the nan GT counts as a match at every
  threshold, and ``argsort`` puts nan after every number, so after its reversal the nan GT is
  visited first. We do the same (nan is treated as +inf). The real ActivityNet v1.3 GT has 12
  zero-length segments (3 in validation); a prediction equal to one of them matches, as it should.
- Tied scores. The official code orders predictions with ``argsort()[::-1]`` (not stable), so its
  order among tied scores is arbitrary. We use a stable sort on -score: tied predictions keep their
  order in the prediction table (file order). Accuracy versus the official code is claimed for
  inputs without tied scores.
- Tied tIoU between two GT of one prediction. For the few GT a video has, numpy's argsort falls
  back to insertion sort, which is stable, so after the reversal the *later* GT (in file order) is
  visited first. We pick the later GT too. This matters: which GT gets locked changes the next
  predictions' matches.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from benchmark.errors import InputError
from benchmark.evaluation.segments import SegmentTable, paired_tiou

# Exactly the official defaults (np.linspace, so the thresholds are the same floats).
ACTIVITYNET_TIOU = np.linspace(0.5, 0.95, 10)
THUMOS_TIOU = np.linspace(0.3, 0.7, 5)


def parse_tiou(text: str) -> np.ndarray:
    """Parse a tIoU set: ``start:stop:count`` (inclusive, as np.linspace) or ``0.3,0.4,0.5``."""
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            if not count.strip().isdigit() or int(count) < 1:
                raise ValueError
            thresholds = np.linspace(float(start), float(stop), int(count))
        else:
            thresholds = np.array([float(t) for t in text.split(",")])
    except ValueError:
        raise InputError(f"tIoU set {text!r}: expected start:stop:count (e.g. 0.5:0.95:10) or a list (e.g. 0.3,0.4,0.5)") from None
    if not np.all((thresholds > 0) & (thresholds <= 1)):
        raise InputError(f"tIoU set {text!r}: thresholds must lie in (0, 1]")
    if len(np.unique(thresholds)) != len(thresholds):
        raise InputError(f"tIoU set {text!r}: thresholds repeat")
    return thresholds


def tiou_key(threshold: float) -> str:
    """The JSON/table name of a threshold: 0.6000000000000001 -> '0.6'."""
    return f"{threshold:g}"


# ---------------------------------------------------------------------------------------------
# Average precision
# ---------------------------------------------------------------------------------------------

def precision_recall(tp: np.ndarray, n_gt: int, n_norm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall [K, N] after each prediction; tp [K, N] bool in descending score order.

    With ``n_norm``, precision is DETAD's normalised one, P_N = R·N / (R·N + FP) with N = n_norm
    (see evaluation/diagnostics.py); None gives the plain TP / (TP + FP).
    """
    tp = np.atleast_2d(np.asarray(tp, dtype=bool))
    hits = np.cumsum(tp, axis=1, dtype=np.float64)
    seen = np.arange(1, tp.shape[1] + 1)
    recall = hits / n_gt
    if n_norm is None:
        return hits / seen, recall
    return recall * n_norm / (recall * n_norm + (seen - hits)), recall


def average_precision(tp: np.ndarray, n_gt: int, n_norm: float | None = None) -> np.ndarray:
    """All-point interpolated AP of one class, for every threshold at once.

    tp: [K, N] bool, one row per tIoU threshold, predictions in descending score order.
    AP = sum over recall steps of (r_i - r_{i-1}) * max_{j >= i} p_j (the VOC 2011 / ActivityNet
    definition); a step to recall 1 that is never reached carries precision 0. With ``n_norm``,
    p is the normalised precision P_N (precision_recall), which gives DETAD's AP_N.
    """
    tp = np.atleast_2d(np.asarray(tp, dtype=bool))
    if tp.shape[1] == 0:
        return np.zeros(tp.shape[0])
    precision, recall = precision_recall(tp, n_gt, n_norm)
    edge = np.zeros((tp.shape[0], 1))
    monotone_precision = np.maximum.accumulate(np.hstack([precision, edge])[:, ::-1], axis=1)[:, ::-1]
    recall = np.hstack([edge, recall, edge + 1])
    return np.sum((recall[:, 1:] - recall[:, :-1]) * monotone_precision, axis=1)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DetectionResult:
    tiou: np.ndarray  # [K] thresholds
    map: np.ndarray  # [K] mAP (fraction) per threshold
    per_class: dict[str, np.ndarray]  # class -> [K] AP
    meta: dict = field(default_factory=dict)  # counts: what was evaluated, what was left out

    @property
    def average(self) -> float:
        """mAP averaged over the tIoU thresholds (ActivityNet's "Avg")."""
        return float(self.map.mean())

    def to_json(self) -> dict:
        keys = [tiou_key(t) for t in self.tiou]
        return {
            "tiou": {k: float(m) for k, m in zip(keys, self.map)},
            "average": self.average,
            "per_class": {
                name: {**{k: float(a) for k, a in zip(keys, ap)}, "average": float(ap.mean())}
                for name, ap in self.per_class.items()
            },
            "meta": self.meta,
        }


def evaluate_detection(gt: SegmentTable, pred: SegmentTable, tiou_thresholds=ACTIVITYNET_TIOU, videos=None) -> DetectionResult:
    """mAP of ``pred`` against ``gt`` at each threshold (official ActivityNet semantics, see module doc).

    ``gt`` is the evaluated set (e.g. the unseen-class instances of the validation videos).
    ``videos``, if given, restricts the evaluation to those videos: GT and predictions elsewhere are
    left out (and counted). Without it, predictions on any video count, as in the official code.
    """
    _require_scores(pred)
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)
    meta = {"predictions": len(pred)}
    if videos is not None:
        videos = np.asarray(list(videos), dtype=str)
        gt = gt.select(np.isin(gt.video, videos))
        inside = np.isin(pred.video, videos)
        meta["predictions_outside_video_set"] = int((~inside).sum())
        pred = pred.select(inside)
    if len(gt) == 0:
        raise InputError("no ground-truth instances in the evaluated set")

    groups = _Groups.of(gt, pred)
    known = groups.pred_class >= 0
    meta.update(
        gt_instances=len(gt),
        gt_videos=len(groups.gt_videos),
        gt_zero_length=int((gt.t1 == gt.t0).sum()),
        classes=len(groups.classes),
        predictions_evaluated=int(known.sum()),
        predictions_ignored_label=int((~known).sum()),
        ignored_labels=len(np.unique(pred.label[~known])),
        predictions_on_videos_without_gt=int((known & (groups.pred_video < 0)).sum()),
    )

    tp = _match(gt, pred, groups, thresholds) >= 0  # [K, evaluated predictions], in groups.order
    n_gt = np.bincount(groups.gt_class, minlength=len(groups.classes))
    bounds = np.searchsorted(groups.pred_class[groups.order], np.arange(len(groups.classes) + 1))
    per_class = {
        str(name): average_precision(tp[:, bounds[c]:bounds[c + 1]], n_gt[c]) for c, name in enumerate(groups.classes)
    }
    ap = np.stack(list(per_class.values()), axis=1)  # [K, C]
    return DetectionResult(thresholds, ap.mean(axis=1), per_class, meta)


def match_predictions(gt: SegmentTable, pred: SegmentTable, tiou_thresholds=ACTIVITYNET_TIOU) -> np.ndarray:
    """The official greedy matching (module doc) -> [K, P] int64: at each threshold, the row of
    ``gt`` that each prediction of ``pred`` matched, or -1 for a false positive.

    Predictions of a label without GT are -1 too (evaluate_detection leaves them out). This is the
    matching behind evaluate_detection's true positives; the diagnostics need the matched GT itself.
    """
    _require_scores(pred)
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)
    groups = _Groups.of(gt, pred)
    matched = np.full((len(thresholds), len(pred)), -1, dtype=np.int64)
    matched[:, groups.order] = _match(gt, pred, groups, thresholds)
    return matched


def _require_scores(pred: SegmentTable) -> None:
    if pred.score is None:
        raise ValueError("predictions need scores")


@dataclass(frozen=True)
class _Groups:
    """Predictions and GT as integer (class, video) group ids, and the order they are matched in."""

    classes: np.ndarray  # the GT's classes, sorted
    gt_videos: np.ndarray  # videos with GT, sorted
    gt_class: np.ndarray  # [G] position in classes
    pred_class: np.ndarray  # [P] position in classes, -1: a label without GT
    pred_video: np.ndarray  # [P] position in gt_videos, -1: a video without GT
    order: np.ndarray  # predictions with a GT class, by class then descending score
    gt_key: np.ndarray  # [G] group id
    pred_key: np.ndarray  # group id of pred[order]; -1 (a video without GT) matches no GT group

    @classmethod
    def of(cls, gt: SegmentTable, pred: SegmentTable) -> "_Groups":
        # Strings become integer codes once.
        classes, gt_videos = np.unique(gt.label), np.unique(gt.video)
        gt_class, pred_class = positions(classes, gt, "label"), positions(classes, pred, "label")
        gt_video, pred_video = positions(gt_videos, gt, "video"), positions(gt_videos, pred, "video")
        # By class, then by descending score, ties in file order (module doc): a stable sort by score, then a
        # stable one by class (a radix sort while the class codes fit 16 bits: 10x faster than np.lexsort).
        order = np.flatnonzero(pred_class >= 0)
        order = order[np.argsort(-pred.score[order], kind="stable")]
        order = order[np.argsort(pred_class[order].astype(np.int16 if len(classes) < 2**15 else np.int64), kind="stable")]
        gt_key = gt_class * len(gt_videos) + gt_video
        pred_key = np.where(pred_video[order] < 0, -1, pred_class[order] * len(gt_videos) + pred_video[order])
        return cls(classes, gt_videos, gt_class, pred_class, pred_video, order, gt_key, pred_key)


def positions(names: np.ndarray, table: SegmentTable, column: str) -> np.ndarray:
    """The position of each value of ``table``'s ``column`` in the sorted array ``names``, -1 where it is not
    there; through the table's factorisation of the column when it has one (the few distinct values)."""
    if column in table.factors:
        values, codes = table.factors[column]
        return _search(names, values)[codes]
    return _search(names, getattr(table, column))


def _search(names: np.ndarray, values: np.ndarray) -> np.ndarray:
    if len(names) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(names, values), len(names) - 1)
    return np.where(names[at] == values, at, -1)


def _match(gt: SegmentTable, pred: SegmentTable, groups: _Groups, thresholds: np.ndarray) -> np.ndarray:
    """The official greedy matching, for all thresholds and all (class, video) groups at once.

    Returns [K, len(groups.order)]: the matched GT row of each prediction of ``pred[groups.order]``
    (score order within each class, hence within each group), or -1.

    Matching is sequential only inside a group: a GT belongs to one group, so locks never cross
    groups. We therefore process "rounds": round r takes the r-th best prediction of every group
    at once. The loop runs (largest group) times, not N times.
    """
    gt_key, pred_key = groups.gt_key, groups.pred_key
    pred_t0, pred_t1 = pred.t0[groups.order], pred.t1[groups.order]
    n_thresholds = len(thresholds)
    matched = np.full((n_thresholds, len(pred_key)), -1, dtype=np.int32)  # half the memory of int64

    # GT sorted by group, file order inside a group (for the tie rule).
    gt_order = np.argsort(gt_key, kind="stable")
    gt_key_sorted = gt_key[gt_order]
    first_gt = np.searchsorted(gt_key_sorted, pred_key, side="left")
    n_group_gt = np.searchsorted(gt_key_sorted, pred_key, side="right") - first_gt
    # Predictions in a group without GT stay false positives. In a group with one GT (most groups: a video
    # rarely holds two instances of a class), the first prediction in score order that reaches the threshold
    # takes it: no rounds needed.
    _match_single(gt, pred_t0, pred_t1, pred_key, np.flatnonzero(n_group_gt == 1), gt_order, first_gt, thresholds, matched)
    matchable = np.flatnonzero(n_group_gt > 1)
    if len(matchable) == 0:
        return matched

    # Rank of each matchable prediction inside its group (its position in score order).
    by_group = matchable[np.argsort(pred_key[matchable], kind="stable")]
    keys = pred_key[by_group]
    group_start = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    rank = np.arange(len(by_group)) - np.repeat(group_start, np.diff(np.r_[group_start, len(by_group)]))
    # Lay predictions out round by round, so that every round is one contiguous slice.
    in_rounds = np.argsort(rank, kind="stable")
    preds, rank = by_group[in_rounds], rank[in_rounds]
    round_bounds = np.searchsorted(rank, np.arange(rank[-1] + 2))

    # Candidate pairs (prediction, GT of its group), laid out in the same order.
    pair_count = n_group_gt[preds]
    pair_start = np.r_[0, np.cumsum(pair_count)]
    pair_pred = np.repeat(preds, pair_count)
    pair_gt = gt_order[np.repeat(first_gt[preds] - pair_start[:-1], pair_count) + np.arange(pair_start[-1])]
    pair_tiou = paired_tiou(pred_t0[pair_pred], pred_t1[pair_pred], gt.t0[pair_gt], gt.t1[pair_gt])
    pair_tiou[np.isnan(pair_tiou)] = np.inf  # 0/0: a match at every threshold, visited first

    locked = np.zeros((n_thresholds, len(gt_key)), dtype=bool)
    for r in range(len(round_bounds) - 1):
        first, last = round_bounds[r], round_bounds[r + 1]
        p0, p1 = pair_start[first], pair_start[last]
        starts = pair_start[first:last] - p0
        gt_idx = pair_gt[p0:p1]
        candidate = np.where(locked[:, gt_idx], -np.inf, pair_tiou[p0:p1])  # [K, pairs]
        best = np.maximum.reduceat(candidate, starts, axis=1)  # [K, predictions of the round]
        hit = best >= thresholds[:, None]
        # The GT that gives the best tIoU; on ties the later one in file order (module doc).
        at_best = candidate == np.repeat(best, pair_count[first:last], axis=1)
        chosen = np.maximum.reduceat(np.where(at_best, np.arange(p1 - p0), -1), starts, axis=1)
        k, j = np.nonzero(hit)
        won = gt_idx[chosen[k, j]]
        locked[k, won] = True
        matched[k, preds[first + j]] = won
    return matched


def _match_single(gt: SegmentTable, pred_t0, pred_t1, pred_key, rows, gt_order, first_gt, thresholds, matched) -> None:
    """The matching of the predictions ``rows`` (positions in ``pred_key``), whose group has exactly one GT: at
    each threshold, the group's first prediction (score order) with tIoU >= threshold takes it. Writes ``matched``."""
    if len(rows) == 0:
        return
    rows = rows[np.argsort(pred_key[rows], kind="stable")]  # group by group, score order inside
    the_gt = gt_order[first_gt[rows]]
    tiou = paired_tiou(pred_t0[rows], pred_t1[rows], gt.t0[the_gt], gt.t1[the_gt])
    tiou[np.isnan(tiou)] = np.inf  # 0/0: a match at every threshold (module doc)
    hit = tiou[None, :] >= thresholds[:, None]  # [K, rows]
    keys = pred_key[rows]
    group_start = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    hits = np.cumsum(hit, axis=1)
    before = np.repeat(hits[:, group_start] - hit[:, group_start], np.diff(np.r_[group_start, len(rows)]), axis=1)
    k, j = np.nonzero(hit & (hits - before == 1))
    matched[k, rows[j]] = the_gt[j]
