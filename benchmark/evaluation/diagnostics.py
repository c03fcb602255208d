"""Error diagnosis of temporal action detectors, after DETAD (Alwassel et al., ECCV 2018).

Three analyses, each a function of a ground-truth and a prediction :class:`SegmentTable`:

- :func:`false_positive_profile` — every false positive among each class's top-(10·N_j)
  predictions gets one of DETAD's five error types, and we measure the mAP_N gained by removing
  each type;
- :func:`sensitivity` — mAP_N and the false-negative rate per bin of a GT characteristic
  (coverage, length, instances per video);
- error propagation (STALE Table 3, generalised) — the data side only: :func:`oracle_labels`
  (predicted segments, GT labels), :func:`jitter_to_tiou` (GT segments degraded to an exact
  tIoU, to feed a method's classifier), and :func:`error_propagation` / :func:`noise_curve`,
  which turn the resulting DetectionResult objects into tables. Applying a method's classifier to
  given segments belongs to the method plugins.

Conventions shared with DETAD's released code (``HumamAlwassel/DETAD``):

- **Matching** is the official ActivityNet greedy one, with ``evaluation/detection.py``'s rules
  for ties and 0/0 tIoU: per class, predictions in descending score order (stable) each take the
  unmatched same-class GT of highest tIoU ≥ t in their video (the later GT on tIoU ties); a 0/0
  tIoU counts as above every threshold. We need the matched GT of each prediction, which
  ``detection.match_predictions`` returns (the same matching ``evaluate_detection`` scores).
- **Normalised precision** (DETAD, after Hoiem et al.'s for object detectors):
  ``P_N = R·N / (R·N + FP)`` with ``N`` the average number of GT instances per class, so that
  classes with many and few instances are comparable; AP_N is the all-point interpolated area
  under (R, P_N), ``detection.average_precision`` with ``n_norm=N``. DETAD's Python 2 code takes
  ``N`` with integer division; we use the exact mean.
- **Classes** are those with at least one GT instance (DETAD builds its class index from the GT);
  predictions of any other label are ignored by every analysis here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from benchmark.evaluation.detection import DetectionResult, match_predictions, positions
from benchmark.evaluation.segments import SegmentTable, paired_tiou

# Outcome codes of a prediction at one tIoU threshold (index into OUTCOMES).
TRUE_POSITIVE, DOUBLE_DETECTION, WRONG_LABEL, LOCALISATION, CONFUSION, BACKGROUND = range(6)
OUTCOMES = ("true positive", "double detection", "wrong label", "localisation", "confusion", "background")
ERROR_TYPES = OUTCOMES[1:]

# DETAD's bins (its src/*_analysis.py, main()): (edges, labels) for pandas.cut with right-closed
# intervals and the lowest edge included. ActivityNet coverage is in fifths of the video; THUMOS14
# actions are short, so its coverage, length and count bins are finer / larger.
SENSITIVITY_BINS = {
    "activitynet": {
        "coverage": (np.linspace(0.0, 1.0, 6), ("XS", "S", "M", "L", "XL")),
        "length": (np.array([0, 30, 60, 120, 180, np.inf]), ("XS", "S", "M", "L", "XL")),
        "num_instances": (np.array([-1, 1, 4, 8, np.inf]), ("XS", "S", "M", "L")),
    },
    "thumos14": {
        "coverage": (np.array([0, 0.02, 0.04, 0.06, 0.08, 1.0]), ("XS", "S", "M", "L", "XL")),
        "length": (np.array([0, 3, 6, 12, 18, np.inf]), ("XS", "S", "M", "L", "XL")),
        "num_instances": (np.array([-1, 1, 40, 80, np.inf]), ("XS", "S", "M", "L")),
    },
}

# Settings of the error-propagation analysis (keys of the dict given to error_propagation).
PREDICTED = "predicted"  # (a) predicted segments, predicted labels
ORACLE_LOCALISATION = "gt_segments"  # (b) GT segments, predicted labels
ORACLE_CLASSIFICATION = "gt_labels"  # (c) predicted segments, GT labels (oracle_labels)

NOISE_LEVELS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


# ---------------------------------------------------------------------------------------------
# Helpers and normalised AP


def _thresholds(tiou_thresholds) -> np.ndarray:
    return np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)


def _require_scores(pred: SegmentTable) -> np.ndarray:
    if pred.score is None:
        raise ValueError("predictions need scores (SegmentTable.score is None)")
    return np.asarray(pred.score, dtype=np.float64)


@dataclass(frozen=True)
class _Ranking:
    """The predictions of the GT's classes ranked within their class: by class, then by descending score, ties
    in row order (a stable sort, as detection.py's matching)."""

    order: np.ndarray  # [M] prediction rows
    cls: np.ndarray  # [M] their class (position in the sorted classes), non-decreasing
    start: np.ndarray  # [C + 1] where each class begins in `order`

    @classmethod
    def of(cls, pred: SegmentTable, classes: np.ndarray) -> "_Ranking":
        score = _require_scores(pred)
        code = positions(classes, pred, "label")
        order = np.flatnonzero(code >= 0)
        order = order[np.argsort(-score[order], kind="stable")]
        # then a stable sort by class: a radix sort while the codes fit 16 bits (as detection.py)
        order = order[np.argsort(code[order].astype(np.int16 if len(classes) < 2**15 else np.int64), kind="stable")]
        return cls(order, code[order], np.searchsorted(code[order], np.arange(len(classes) + 1)))

    @property
    def rank(self) -> np.ndarray:
        """[M] 0-based rank of each prediction within its class."""
        return np.arange(len(self.order)) - self.start[self.cls]


@dataclass(frozen=True)
class _Hits:
    """The true positives of a ranking: one entry per (threshold, matched prediction), by threshold, then class,
    then rank."""

    k: np.ndarray  # [H] threshold index
    at: np.ndarray  # [H] position in ranking.order
    gt: np.ndarray  # [H] the matched GT row

    @classmethod
    def of(cls, matched: np.ndarray, ranking: _Ranking) -> "_Hits":
        k, row = np.nonzero(matched >= 0)  # every matched prediction has a GT class, so is ranked
        position = np.empty(matched.shape[1], dtype=np.int64)
        position[ranking.order] = np.arange(len(ranking.order))
        at = position[row]
        by_rank = np.argsort(k * len(ranking.order) + at)  # unique keys
        return cls(k[by_rank], at[by_rank], matched[k, row][by_rank])


def _hit_precision(hits: _Hits, ranking: _Ranking, n_gt: np.ndarray, n_norm: float, keep: np.ndarray | None):
    """The P_N curve of each class's ranking, at its true positives, with the predictions ``keep`` drops taken
    out (``keep``: None, [P] the same at every threshold, or [K, P]) and the classes with n_gt 0 left out.

    Returns (selected: the entries of ``hits`` kept, segment: threshold·C + class, h: hit count in the
    segment, P_N there), computed with ``precision_recall``'s arithmetic, so bit for bit what it gives.
    """
    c = ranking.cls[hits.at]
    if keep is None:
        selected = np.flatnonzero(n_gt[c] > 0)
        seen = (hits.at - ranking.start[c])[selected] + 1  # predictions up to this one in its class
    else:  # seen: kept predictions up to this one in its class (cumulative count minus the class's start)
        kept = keep[..., ranking.order]  # [M] or [K, M]
        total = np.cumsum(kept, axis=-1)
        before = np.concatenate([np.zeros(kept.shape[:-1] + (1,), dtype=total.dtype), total], axis=-1)
        before = before[..., ranking.start[:-1]]  # kept predictions before each class begins
        if kept.ndim == 1:
            ok, seen = kept[hits.at], total[hits.at] - before[c]
        else:
            ok, seen = kept[hits.k, hits.at], total[hits.k, hits.at] - before[hits.k, c]
        selected = np.flatnonzero(ok & (n_gt[c] > 0))
        seen = seen[selected]
    c = c[selected]
    segment = hits.k[selected] * len(n_gt) + c
    # h: position in the segment (hits are by threshold, class, rank) + 1
    index = np.arange(len(segment))
    begins = np.ones(len(segment), dtype=bool)
    begins[1:] = segment[1:] != segment[:-1]
    h = (index - np.maximum.accumulate(np.where(begins, index, 0)) + 1).astype(np.float64)
    recall = h / n_gt[c]
    return selected, segment, h, recall * n_norm / (recall * n_norm + (seen - h))


def _suffix_max(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """max(values[j] for j >= i in i's segment), for non-decreasing ``segment``: by doubling steps, after each
    of which best[i] is the max over [i, i + 2·step) within i's segment, until no segment is longer than step."""
    best = values.copy()
    step = 1
    while True:
        same = segment[step:] == segment[:-step]
        if not same.any():
            return best
        best[:-step] = np.where(same, np.maximum(best[:-step], best[step:]), best[:-step])
        step *= 2


def _ap_n(hits: _Hits, ranking: _Ranking, n_gt: np.ndarray, n_norm: float, n_thresholds: int,
          keep: np.ndarray | None = None) -> np.ndarray:
    """AP_N [K, C] (``detection.average_precision`` with ``n_norm``) of every class's ranking at every
    threshold at once; ``keep`` (None, [P] or [K, P]) drops predictions before the curve; classes with n_gt 0
    get 0.

    AP is the sum over the recall steps, i.e. the kept true positives i, of (r_i - r_{i-1}) times the
    precision made monotone from the right, max_{j >= i} P_N(j). P_N falls at every false positive, so that
    max is reached at a true positive: the true positives are all we visit. The terms are bit for bit those
    of ``average_precision``; we add them in rank order where it uses numpy's pairwise sum (~1e-16 apart).
    """
    selected, segment, h, precision = _hit_precision(hits, ranking, n_gt, n_norm, keep)
    n = n_gt[segment % len(n_gt)]
    terms = (h / n - (h - 1) / n) * _suffix_max(precision, segment)
    ap = np.bincount(segment, weights=terms, minlength=n_thresholds * len(n_gt))
    return ap.astype(np.float64, copy=False).reshape(n_thresholds, len(n_gt))  # (int64 when there are no terms)


def average_instances_per_class(gt: SegmentTable) -> float:
    """DETAD's N: GT instances per class, averaged over the classes present in the GT."""
    if len(gt) == 0:
        raise ValueError("the diagnostics need at least one ground-truth instance")
    return len(gt) / len(np.unique(gt.label))


@dataclass(frozen=True)
class NormalisedMAP:
    tiou: np.ndarray  # [K]
    classes: tuple[str, ...]  # [C], the GT's classes, sorted
    ap: np.ndarray  # [K, C] AP_N
    n_norm: float  # N of P_N

    @property
    def map(self) -> np.ndarray:  # [K]
        return self.ap.mean(axis=1)

    @property
    def average(self) -> float:
        return float(self.ap.mean())


def normalised_map(gt: SegmentTable, pred: SegmentTable, tiou_thresholds, n_norm: float | None = None) -> NormalisedMAP:
    """mAP_N: mAP with precision normalised to ``n_norm`` GT instances per class."""
    n_norm = average_instances_per_class(gt) if n_norm is None else float(n_norm)
    matched = match_predictions(gt, pred, tiou_thresholds)
    classes, counts = np.unique(gt.label, return_counts=True)
    ranking = _Ranking.of(pred, classes)
    ap = _ap_n(_Hits.of(matched, ranking), ranking, counts, n_norm, len(matched))
    return NormalisedMAP(_thresholds(tiou_thresholds), tuple(str(c) for c in classes), ap, n_norm)


# ---------------------------------------------------------------------------------------------
# False-positive profile


def limit_predictions(gt: SegmentTable, pred: SegmentTable, factor: float) -> SegmentTable:
    """Each class j's top-int(factor·N_j) predictions (N_j = its GT count); other labels dropped."""
    classes, counts = np.unique(gt.label, return_counts=True)
    ranking = _Ranking.of(pred, classes)
    quota = (counts * factor).astype(np.int64)  # int(): truncation
    keep = np.zeros(len(pred), dtype=bool)
    keep[ranking.order[ranking.rank < quota[ranking.cls]]] = True
    return pred.select(keep)


_PAIRS_PER_CHUNK = 1 << 20  # bounds the flat (prediction, GT) pair arrays: ~100 bytes a pair at the peak


@dataclass(frozen=True)
class _BestOverlaps:
    """Each prediction's highest tIoU with the GT instances of its video (any class; 0/0 -> +inf: 'above every
    threshold' and the best possible overlap), and the GT instances that reach it."""

    rows: np.ndarray  # [R] the predictions with GT in their video, ascending
    best: np.ndarray  # [R] their highest tIoU
    # the (prediction, GT) pairs at the prediction's highest tIoU, by prediction row, then GT row (file order)
    pred: np.ndarray  # [T] prediction rows
    gt: np.ndarray  # [T] GT rows

    @classmethod
    def of(cls, pred: SegmentTable, gt: SegmentTable) -> "_BestOverlaps":
        videos, gt_video = np.unique(gt.video, return_inverse=True)
        pred_video = positions(videos, pred, "video")
        gt_order = np.argsort(gt_video, kind="stable")  # GT by video, file order inside a video
        video_count = np.bincount(gt_video, minlength=len(videos))
        video_first = np.cumsum(video_count) - video_count  # where each video's GT begin in gt_order
        rows = np.flatnonzero(pred_video >= 0)
        count = video_count[pred_video[rows]]  # pairs of each prediction: one per GT of its video
        # Flat pairs, chunk by chunk of about _PAIRS_PER_CHUNK pairs (a chunk holds whole predictions).
        chunk = (np.cumsum(count) - 1) // _PAIRS_PER_CHUNK
        bounds = np.flatnonzero(np.r_[True, chunk[1:] != chunk[:-1], True])
        t0, t1 = np.asarray(pred.t0, dtype=np.float64), np.asarray(pred.t1, dtype=np.float64)  # tiou_matrix's casts
        gt_t0, gt_t1 = np.asarray(gt.t0, dtype=np.float64), np.asarray(gt.t1, dtype=np.float64)
        best, tied_pred, tied_gt = [np.zeros(0)], [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            r, n = rows[lo:hi], count[lo:hi]
            first = np.cumsum(n) - n  # where each prediction's pairs begin
            pair_pred = np.repeat(r, n)  # pair j of prediction i is GT number j - first[i] of its video
            pair_gt = gt_order[np.repeat(video_first[pred_video[r]] - first, n) + np.arange(n.sum())]
            tiou = paired_tiou(t0[pair_pred], t1[pair_pred], gt_t0[pair_gt], gt_t1[pair_gt])
            tiou[np.isnan(tiou)] = np.inf
            top = np.maximum.reduceat(tiou, first)
            at_top = np.flatnonzero(tiou == np.repeat(top, n))
            best.append(top)
            tied_pred.append(pair_pred[at_top])
            tied_gt.append(pair_gt[at_top])
        return cls(rows, np.concatenate(best), np.concatenate(tied_pred), np.concatenate(tied_gt))


def error_types(gt: SegmentTable, pred: SegmentTable, matched: np.ndarray, tiou_thresholds, min_tiou: float = 0.1) -> np.ndarray:
    """Outcome code [K, P] of each prediction at each threshold (see OUTCOMES).

    Precedence is DETAD's (``analyze_fp_error_types``): a false positive is judged against the one
    GT instance of its video, of *any* class, that overlaps it most. With that tIoU ``u``:
    ``u ≥ t`` -> double detection if that GT has the prediction's class, else wrong label;
    ``min_tiou ≤ u < t`` -> localisation if same class, else confusion; otherwise, or with no GT
    in the video -> background. So a closer GT of another class outranks a same-class GT. Where
    same- and other-class GT tie exactly for the highest tIoU (THUMOS14's duplicated
    CliffDiving/Diving segments), DETAD takes whichever comes first in the file; we take the
    same-class one, which makes the result independent of file order.
    """
    thr = _thresholds(tiou_thresholds)[:, None]
    out = np.where(matched >= 0, TRUE_POSITIVE, BACKGROUND).astype(np.int8)
    overlaps = _BestOverlaps.of(pred, gt)
    classes, gt_class = np.unique(gt.label, return_inverse=True)
    # does a GT of the prediction's class reach the prediction's highest tIoU?
    same = np.zeros(len(pred), dtype=bool)
    same[overlaps.pred[gt_class[overlaps.gt] == positions(classes, pred, "label")[overlaps.pred]]] = True
    p, top = overlaps.rows, overlaps.best
    code = np.select(
        [top >= thr, top >= min_tiou],
        [np.where(same[p], DOUBLE_DETECTION, WRONG_LABEL), np.where(same[p], LOCALISATION, CONFUSION)],
        BACKGROUND,
    )  # [K, R]
    out[:, p] = np.where(matched[:, p] < 0, code, out[:, p])
    return out


@dataclass(frozen=True)
class FalsePositiveProfile:
    tiou: np.ndarray  # [K]
    predictions: SegmentTable  # the analysed top-(groups·N_j) predictions
    outcome: np.ndarray  # [K, P] codes into OUTCOMES, for `predictions`
    fractions: pd.DataFrame  # index "1G".."10G", columns OUTCOMES; rows sum to 1 (NaN: empty group)
    map_n: np.ndarray  # [K] mAP_N of `predictions`
    gain: dict[str, float]  # error type -> average-mAP_N gain when its false positives are removed
    n_norm: float

    @property
    def average_map_n(self) -> float:
        return float(self.map_n.mean())


def false_positive_profile(gt: SegmentTable, pred: SegmentTable, tiou_thresholds, groups: int = 10,
                           min_tiou: float = 0.1) -> FalsePositiveProfile:
    """DETAD's false-positive analysis of each class's top-(groups·N_j) predictions.

    Group ``gG`` holds class j's predictions of rank ``[(g-1)·N_j, g·N_j)`` (DETAD's
    ``split_predictions_by_score_ranges``: slices, not cumulative tops), pooled over classes; its
    row gives the share of each outcome, averaged over the tIoU thresholds. The gain of an error
    type is average-mAP_N without that type's false positives (at each threshold) minus
    average-mAP_N with them; removing false positives never changes the matching.
    """
    n_norm = average_instances_per_class(gt)
    top = limit_predictions(gt, pred, groups)
    matched = match_predictions(gt, top, tiou_thresholds)
    outcome = error_types(gt, top, matched, tiou_thresholds, min_tiou)
    classes, counts = np.unique(gt.label, return_counts=True)
    ranking = _Ranking.of(top, classes)
    hits = _Hits.of(matched, ranking)
    n_thresholds = len(matched)

    ap = _ap_n(hits, ranking, counts, n_norm, n_thresholds)
    gain = {name: float(_ap_n(hits, ranking, counts, n_norm, n_thresholds, outcome != code).mean() - ap.mean())
            for code, name in enumerate(OUTCOMES) if code != TRUE_POSITIVE}

    # every kept prediction has a GT class: its group is its rank in the class over N_j
    group = np.empty(len(top), dtype=np.int64)
    group[ranking.order] = ranking.rank // counts[ranking.cls]
    size = np.bincount(group, minlength=groups)[:groups] * n_thresholds  # [groups] (prediction, threshold) pairs
    tally = np.bincount((group * len(OUTCOMES) + outcome).ravel(), minlength=groups * len(OUTCOMES))
    with np.errstate(invalid="ignore"):
        share = tally[: groups * len(OUTCOMES)].reshape(groups, len(OUTCOMES)) / size[:, None]  # 0/0: empty group
    fractions = pd.DataFrame(np.where(size[:, None] > 0, share, np.nan),
                             index=[f"{g + 1}G" for g in range(groups)], columns=list(OUTCOMES))
    return FalsePositiveProfile(_thresholds(tiou_thresholds), top, outcome, fractions,
                                ap.mean(axis=1), gain, n_norm)


# ---------------------------------------------------------------------------------------------
# Sensitivity


def gt_characteristics(gt: SegmentTable, durations: Mapping[str, float | None]) -> pd.DataFrame:
    """Per GT instance: coverage (length / video duration), length (s), num_instances (per video).

    ``num_instances`` counts every row of ``gt`` in the same video, whatever its class (as in
    DETAD's released characteristics, where a video with 6 CliffDiving and 6 Diving instances has
    12); in the zero-shot protocol ``gt`` holds the unseen-class instances only, so that is what
    is counted. Coverage is NaN where the duration is unknown.
    """
    length = gt.t1 - gt.t0
    duration = np.array([np.nan if durations.get(v) is None else durations[v] for v in gt.video], dtype=np.float64)
    _, inverse, counts = np.unique(gt.video, return_inverse=True, return_counts=True)
    return pd.DataFrame({"coverage": length / duration, "length": length, "num_instances": counts[inverse]})


@dataclass(frozen=True)
class SensitivityResult:
    tiou: np.ndarray  # [K]
    average_map_n: float  # over all GT, the dashed baseline of DETAD's figure
    table: pd.DataFrame  # columns characteristic, bin, n_gt, map_n, fn_rate


def _detected_gt(hits: _Hits, ranking: _Ranking, n_gt: np.ndarray, n_norm: float, n_thresholds: int,
                 n_rows: int, min_precision: float) -> np.ndarray:
    """[K, G] GT matched by a prediction ranked where the class's P_N is still > ``min_precision``."""
    selected, _, _, precision = _hit_precision(hits, ranking, n_gt, n_norm, None)
    found = selected[precision > min_precision]
    detected = np.zeros((n_thresholds, n_rows), dtype=bool)
    detected[hits.k[found], hits.gt[found]] = True
    return detected


def sensitivity(gt: SegmentTable, pred: SegmentTable, tiou_thresholds, durations: Mapping[str, float | None],
                bins: Mapping[str, tuple] = SENSITIVITY_BINS["activitynet"], fn_min_precision: float = 0.05) -> SensitivityResult:
    """mAP_N and false-negative rate per bin of each GT characteristic (DETAD's sensitivity and
    false-negative analyses).

    One matching of all predictions against all GT. For the bin's mAP_N, class j keeps its bin's
    GT and every prediction that, at every threshold, is a false positive or matches a GT of the
    bin; N stays the all-GT average, and classes without GT in the bin are left out of the mean.
    A GT instance is a false negative at a threshold unless a prediction matches it at a rank
    where the normalised precision is above ``fn_min_precision`` (0.05 in DETAD's FN analysis);
    the rate is averaged over thresholds. Instances with coverage > 1 (ending after the video's
    end) or an unknown duration fall in no coverage bin. Zero-length GT instances are kept
    (DETAD drops them) so that every analysis sees the GT the main evaluator sees.
    """
    classes, gt_class, counts = np.unique(gt.label, return_inverse=True, return_counts=True)
    n_norm = average_instances_per_class(gt)
    matched = match_predictions(gt, pred, tiou_thresholds)
    n_thresholds = len(matched)
    ranking = _Ranking.of(pred, classes)
    hits = _Hits.of(matched, ranking)
    base = _ap_n(hits, ranking, counts, n_norm, n_thresholds)
    detected = _detected_gt(hits, ranking, counts, n_norm, n_thresholds, len(gt), fn_min_precision)
    chars = gt_characteristics(gt, durations)
    hit_pred = ranking.order[hits.at]  # the prediction row of each match

    records = []
    for name, (edges, labels) in bins.items():
        binned = pd.cut(chars[name], edges, labels=list(labels), include_lowest=True).to_numpy()
        for label in labels:
            in_bin = binned == label
            n = int(in_bin.sum())
            map_n = fn_rate = np.nan
            if n:
                # drop predictions matched (at any threshold) to a GT outside the bin
                keep = np.ones(len(pred), dtype=bool)
                keep[hit_pred[~in_bin[hits.gt]]] = False
                n_in = np.bincount(gt_class[in_bin], minlength=len(classes))
                ap = _ap_n(hits, ranking, n_in, n_norm, n_thresholds, keep)[:, n_in > 0]
                map_n = float(np.ascontiguousarray(ap).mean())  # (the mean's order of addition follows the layout)
                fn_rate = float(1.0 - detected[:, in_bin].mean())
            records.append({"characteristic": name, "bin": label, "n_gt": n, "map_n": map_n, "fn_rate": fn_rate})
    return SensitivityResult(_thresholds(tiou_thresholds), float(base.mean()), pd.DataFrame(records))


# ---------------------------------------------------------------------------------------------
# Error propagation: oracles and localisation noise


def oracle_labels(pred: SegmentTable, gt: SegmentTable) -> SegmentTable:
    """Predicted segments with ground-truth labels: setting (c), 'oracle classification'.

    Each prediction takes the label of the GT instance of its video that it overlaps most (any
    tIoU > 0), keeping its segment and score. Where GT instances of several classes share that
    highest tIoU (one segment annotated with two labels, as THUMOS14's CliffDiving ⊂ Diving), the
    prediction is emitted once per such class, since a perfect classifier would give the segment
    every label it truly has. A prediction that overlaps no GT (or lies in a video without GT) is
    background: no label can make it a true positive, so it keeps its predicted label and the
    detection count and scores are those of setting (a), which (c) then differs from only in the
    labels of segments that touch an action.

    Rows come in prediction order; a prediction's copies in the file order of the GT that give them
    (for a class with several such GT, its first).
    """
    score = _require_scores(pred)
    overlaps = _BestOverlaps.of(pred, gt)
    classes, gt_class = np.unique(gt.label, return_inverse=True)
    relabelled = np.zeros(len(pred), dtype=bool)  # overlaps a GT: tIoU > 0
    relabelled[overlaps.rows[overlaps.best > 0]] = True
    # its GT at the highest tIoU, once per class: the first in GT file order (pairs are by prediction, then GT)
    tied = np.flatnonzero(relabelled[overlaps.pred])
    _, first = np.unique(overlaps.pred[tied] * len(classes) + gt_class[overlaps.gt[tied]], return_index=True)
    tied = tied[np.sort(first)]
    background = np.flatnonzero(~relabelled)
    # the relabelled copies and the background predictions, merged back into prediction order
    source = np.concatenate([overlaps.pred[tied], background])
    labels = np.concatenate([gt.label[overlaps.gt[tied]], pred.label[background]])
    emit = np.argsort(source, kind="stable")
    source, labels = source[emit], np.asarray(labels[emit], dtype=str)
    factors = {column: (names, codes[source]) for column, (names, codes) in pred.factors.items() if column != "label"}
    return SegmentTable(pred.video[source], pred.t0[source], pred.t1[source], labels, score[source], factors)


def jitter_to_tiou(gt: SegmentTable, level: float, rng: np.random.Generator,
                   durations: Mapping[str, float | None] | None = None) -> SegmentTable:
    """GT segments moved so that each has tIoU exactly ``level`` with its source segment.

    A segment [s, e] of length L becomes one of length λL, λ log-uniform in [level, 1/level],
    overlapping the source by I = level·L·(1 + λ)/(1 + level) on a random side, so that
    I / (L + λL − I) = level: λ = 1 is a pure shift, λ = level or 1/level a pure scale. Solving
    the same equation for the part outside the source gives L(λ − level)/(1 + level); where that
    would cross 0 (or the video's end, given ``durations``), the other side is used, and if
    neither side has room, λ is lowered to what the roomier side allows, down to λ = level (a
    shrink inside the source, which always fits). The tIoU is therefore exact for every segment;
    zero-length segments are returned unchanged (their tIoU is 0/0). Labels and videos are kept.
    """
    if not 0.0 < level <= 1.0:
        raise ValueError(f"tIoU level must be in (0, 1], got {level}")
    s, e = gt.t0.astype(np.float64), gt.t1.astype(np.float64)
    length = e - s
    n = len(gt)
    durations = durations or {}
    end = np.array([np.inf if durations.get(v) is None else durations[v] for v in gt.video], dtype=np.float64)
    lam = np.clip(np.exp(rng.uniform(-1.0, 1.0, n) * np.log(1.0 / level)), level, 1.0 / level)
    right = rng.random(n) < 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        lam_max_right = np.minimum(1.0 / level, level + (1.0 + level) * (end - e) / length)
        lam_max_left = np.minimum(1.0 / level, level + (1.0 + level) * s / length)
    fits_right, fits_left = lam <= lam_max_right, lam <= lam_max_left
    stuck = ~fits_right & ~fits_left
    right = np.where(stuck, lam_max_right >= lam_max_left, np.where(right, fits_right, ~fits_left))
    lam = np.where(stuck, np.maximum(level, np.maximum(lam_max_right, lam_max_left)), lam)
    overlap = level * length * (1.0 + lam) / (1.0 + level)
    t0 = np.where(right, e - overlap, s + overlap - lam * length)
    t1 = t0 + lam * length
    moved = length > 0
    return SegmentTable(gt.video, np.where(moved, t0, s), np.where(moved, t1, e), gt.label, gt.score)


def _map_columns(result: DetectionResult) -> dict[str, float]:
    return {f"mAP@{t:g}": float(m) for t, m in zip(result.tiou, result.map)}


def error_propagation(results: Mapping[str, DetectionResult], reference: str = PREDICTED) -> pd.DataFrame:
    """One row per setting: its mAP, and what the ``reference`` pipeline loses against it.

    ``results`` maps a setting (PREDICTED, ORACLE_LOCALISATION, ORACLE_CLASSIFICATION, or any
    other name) to the DetectionResult of one method in that setting. For each setting,
    ``degradation = average(setting) − average(reference)``: the mAP that the reference loses
    through the error the setting's oracle removes (for ORACLE_LOCALISATION, the cost of predicted
    localisation); ``relative_degradation`` divides it by the setting's average (NaN at 0). The
    reference row has 0. Concatenate the tables of several methods with a ``method`` column to
    plot them (plots.plot_error_propagation).
    """
    if reference not in results:
        raise KeyError(f"reference setting {reference!r} not in results ({', '.join(results)})")
    ref = results[reference]
    records = []
    for setting, r in results.items():
        if len(r.tiou) != len(ref.tiou) or not np.allclose(r.tiou, ref.tiou):
            raise ValueError(f"setting {setting!r} was evaluated at other tIoU thresholds than {reference!r}")
        drop = float(r.average) - float(ref.average)
        records.append({"setting": setting, **_map_columns(r), "average": float(r.average), "degradation": drop,
                        "relative_degradation": drop / r.average if r.average else np.nan})
    return pd.DataFrame(records)


def noise_curve(results: Mapping[float, DetectionResult]) -> pd.DataFrame:
    """Localisation-noise curve of one method: mAP against the tIoU level of the jittered GT.

    ``results`` maps a level (see NOISE_LEVELS, jitter_to_tiou) to the DetectionResult of the
    method's classifier on GT segments jittered to that level. ``relative`` is the average mAP
    over that at the highest level given (1.0, clean GT segments, when present).
    """
    levels = sorted(results, reverse=True)
    top = float(results[levels[0]].average)
    return pd.DataFrame([{"level": float(lv), **_map_columns(results[lv]), "average": float(results[lv].average),
                          "relative": float(results[lv].average) / top if top else np.nan} for lv in levels])
