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

from benchmark.evaluation.detection import DetectionResult, average_precision, match_predictions, precision_recall
from benchmark.evaluation.segments import SegmentTable, tiou_matrix

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


def _tiou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """tIoU with 0/0 mapped to +inf: 'above every threshold' and the best possible overlap."""
    return np.nan_to_num(tiou_matrix(a, b), nan=np.inf)


def _groups(*keys: np.ndarray) -> dict:
    """Row positions per distinct key tuple, each in ascending row order."""
    if len(keys[0]) == 0:
        return {}
    frame = pd.DataFrame({i: k for i, k in enumerate(keys)})
    by = list(frame.columns) if len(keys) > 1 else 0
    return frame.groupby(by, sort=False).indices


def _thresholds(tiou_thresholds) -> np.ndarray:
    return np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)


def _require_scores(pred: SegmentTable) -> np.ndarray:
    if pred.score is None:
        raise ValueError("predictions need scores (SegmentTable.score is None)")
    return np.asarray(pred.score, dtype=np.float64)


def _class_rows(pred: SegmentTable, classes) -> dict[str, np.ndarray]:
    """Prediction rows of each class, best score first."""
    order = np.argsort(-_require_scores(pred), kind="stable")
    by_label = _groups(pred.label[order])
    return {c: order[by_label[c]] if c in by_label else np.zeros(0, dtype=np.int64) for c in classes}


def _ap_n(tp: np.ndarray, keep: np.ndarray, rows: dict[str, np.ndarray], n_gt: Mapping[str, int], n_norm: float) -> np.ndarray:
    """AP_N [K, C] from tp [K, P]; ``keep`` [K, P] drops predictions (per threshold) before the curve."""
    ap = np.zeros((tp.shape[0], len(rows)))
    for c, (name, r) in enumerate(rows.items()):
        for k in range(tp.shape[0]):
            ap[k, c] = average_precision(tp[k, r][keep[k, r]], n_gt[name], n_norm)[0]
    return ap


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
    ap = _ap_n(matched >= 0, np.ones(matched.shape, dtype=bool), _class_rows(pred, classes), dict(zip(classes, counts)), n_norm)
    return NormalisedMAP(_thresholds(tiou_thresholds), tuple(str(c) for c in classes), ap, n_norm)


# ---------------------------------------------------------------------------------------------
# False-positive profile


def limit_predictions(gt: SegmentTable, pred: SegmentTable, factor: float) -> SegmentTable:
    """Each class j's top-int(factor·N_j) predictions (N_j = its GT count); other labels dropped."""
    classes, counts = np.unique(gt.label, return_counts=True)
    rows = _class_rows(pred, classes)
    keep = np.zeros(len(pred), dtype=bool)
    for c, n in zip(classes, counts):
        keep[rows[c][: int(n * factor)]] = True
    return pred.select(keep)


def _best_overlaps(pred: SegmentTable, gt: SegmentTable):
    """Per video with GT: (prediction rows, GT rows, their tIoU matrix, each prediction's best tIoU)."""
    gt_rows = _groups(gt.video)
    for video, p in _groups(pred.video).items():
        g = gt_rows.get(video)
        if g is not None:
            iou = _tiou(pred.segments[p], gt.segments[g])
            yield p, g, iou, iou.max(axis=1)


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
    for p, g, iou, top in _best_overlaps(pred, gt):
        same = ((iou == top[:, None]) & (pred.label[p][:, None] == gt.label[g][None, :])).any(axis=1)
        code = np.select(
            [top >= thr, top >= min_tiou],
            [np.where(same, DOUBLE_DETECTION, WRONG_LABEL), np.where(same, LOCALISATION, CONFUSION)],
            BACKGROUND,
        )  # [K, len(p)]
        fp = matched[:, p] < 0
        out[:, p] = np.where(fp, code, out[:, p])
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
    n_gt = dict(zip(classes, counts))
    rows = _class_rows(top, classes)

    tp = matched >= 0
    ap = _ap_n(tp, np.ones(tp.shape, dtype=bool), rows, n_gt, n_norm)
    gain = {name: float(_ap_n(tp, outcome != code, rows, n_gt, n_norm).mean() - ap.mean())
            for code, name in enumerate(OUTCOMES) if code != TRUE_POSITIVE}

    group = np.empty(len(top), dtype=np.int64)
    for c, r in rows.items():
        group[r] = np.arange(len(r)) // n_gt[c]
    fractions = pd.DataFrame(
        [[np.mean(outcome[:, group == g] == code) if np.any(group == g) else np.nan for code in range(len(OUTCOMES))]
         for g in range(groups)],
        index=[f"{g + 1}G" for g in range(groups)], columns=list(OUTCOMES),
    )
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


def _detected_gt(matched: np.ndarray, rows: dict[str, np.ndarray], n_gt: Mapping[str, int], n_norm: float,
                 n_rows: int, min_precision: float) -> np.ndarray:
    """[K, G] GT matched by a prediction ranked where the class's P_N is still > ``min_precision``."""
    detected = np.zeros((matched.shape[0], n_rows), dtype=bool)
    for name, r in rows.items():
        m = matched[:, r]
        precision, _ = precision_recall(m >= 0, n_gt[name], n_norm)
        k, i = np.nonzero((m >= 0) & (precision > min_precision))
        detected[k, m[k, i]] = True
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
    classes, counts = np.unique(gt.label, return_counts=True)
    n_norm = average_instances_per_class(gt)
    matched = match_predictions(gt, pred, tiou_thresholds)
    rows = _class_rows(pred, classes)
    tp = matched >= 0
    base = _ap_n(tp, np.ones(tp.shape, dtype=bool), rows, dict(zip(classes, counts)), n_norm)
    detected = _detected_gt(matched, rows, dict(zip(classes, counts)), n_norm, len(gt), fn_min_precision)
    chars = gt_characteristics(gt, durations)

    records = []
    for name, (edges, labels) in bins.items():
        binned = pd.cut(chars[name], edges, labels=list(labels), include_lowest=True).to_numpy()
        for label in labels:
            in_bin = binned == label
            n = int(in_bin.sum())
            map_n = fn_rate = np.nan
            if n:
                # drop predictions matched (at any threshold) to a GT outside the bin
                keep = np.where(matched >= 0, in_bin[np.maximum(matched, 0)], True).all(axis=0)
                present, n_in = np.unique(gt.label[in_bin], return_counts=True)
                ap = _ap_n(tp, np.broadcast_to(keep, tp.shape), {c: rows[c] for c in present}, dict(zip(present, n_in)), n_norm)
                map_n = float(ap.mean())
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
    """
    score = _require_scores(pred)
    source, labels = [], []
    best_labels: dict[int, list[str]] = {}
    for p, g, iou, top in _best_overlaps(pred, gt):
        for i in np.flatnonzero(top > 0):
            best_labels[int(p[i])] = list(dict.fromkeys(gt.label[g][iou[i] == top[i]]))
    for i in range(len(pred)):
        new = best_labels.get(i, [pred.label[i]])
        source += [i] * len(new)
        labels += new
    source = np.asarray(source, dtype=np.int64)
    return SegmentTable(pred.video[source], pred.t0[source], pred.t1[source],
                        np.asarray(labels, dtype=str) if labels else np.zeros(0, dtype=str), score[source])


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
