"""Frame-mAP of spatio-temporal action detection, with the semantics of five official evaluators, vectorised.

A detection is a scored (box, label) row on a frame (video, frame); it can only match GT boxes of its
own label on its own frame. AP per class, then a plain mean over classes. The evaluators in use
differ in five places (docs STAD.md §2.3), and a preset fixes all five:

=================  ==============  ==============================  ===============  ===========  ==========================
preset             box area        matching                        AP               classes      keys / order
=================  ==============  ==============================  ===============  ===========  ==========================
``multisports``    continuous      VOC                             VOC all-point    with GT      —
``act``            +1 pixel        delete                          trapezoid        all given    —
``odm``            +1 pixel (ODM)  VOC                             VOC all-point    with GT      —
``ava_official``   continuous      VOC, per keyframe               VOC all-point    with GT      top 50 rows per keyframe;
                                                                                                  unannotated keys ignored
``ava_alphaction`` continuous      VOC, per keyframe, file order   VOC all-point    with GT      —
=================  ==============  ==============================  ===============  ===========  ==========================

- **VOC matching** (MultiSports / iCLIP / HIT ``frameAP``, ODM, TF-OD-API ``per_image_evaluation``): a
  detection takes the GT of highest IoU among *all* GT of its (video, frame, class), the first one on ties
  (``np.argmax``; ODM's ``iou > iouMax`` is the same); it is a true positive iff that IoU >= ``iou`` and
  that GT is not matched yet (it becomes matched), otherwise a false positive.
- **Delete matching** (ACT / MOC ``frameAP``): the detection takes the GT of highest IoU among the
  *remaining* GT of its frame and class (first on ties, in GT row order: ``np.delete`` keeps the order);
  if that IoU >= ``iou`` it is a true positive and the GT is deleted, so a later detection can take the
  second-best GT.
- **IoU**: ``continuous`` area (x2 - x1)(y2 - y1); ``+1 pixel`` (x2 - x1 + 1)(y2 - y1 + 1) for areas and
  intersections (ACT's ``iou2d``); ODM's ``iou`` is the +1 one, except that boxes separated by a gap
  (x1 of one > x2 of the other, or the same in y) have IoU 0 (``boxesIntersect``) even when the +1
  widths would still overlap (a gap below one pixel). An IoU 0/0 (two zero-area boxes) counts as 0.
- **AP**: VOC all-point: precision made monotone from the right, summed over the recall steps, recall
  padded to 1 with precision 0 (``detection.average_precision``). ACT's trapezoid: the raw PR curve
  starting at (recall 0, precision 1), Σ Δr·(p_i + p_{i-1}) / 2. ACT keeps its PR curve in float32; we
  compute in float64 (differences of ~1e-7).
- **Classes averaged**: ``classes`` is the evaluated label set (a split's unseen classes, AVA's label
  map). GT and detections of other labels are left out and counted. ``act`` averages over *every*
  class given (a class without detections scores 0, also one without GT), and a class with
  detections but no GT raises :class:`InputError` (ACT divides 0/0 there: ZeroDivisionError). The
  other presets average over the classes with >= 1 GT (AVA's ``nanmean``); detections of a class
  without GT are left out and counted. Default ``classes``: the labels of the GT.
- **AVA**: ``ava_official`` transcribes ``get_ava_performance.py``: rows of other labels are dropped
  first, then each keyframe keeps its 50 highest-scoring (box, label) rows (``read_csv(…, 50)``), which
  are matched per keyframe in descending score order. Detections on keys that are not annotated are
  ignored (``keys``: the annotated keys, including empty keyframes; default: the keys of the GT rows
  of the evaluated classes). ``ava_alphaction`` (AlphAction, STMixer, HIT) matches the rows of a
  keyframe in input order (no sort, no cap) and scores detections on unannotated keys as false
  positives. Both drop the ``excluded`` keys from GT and detections (``read_exclusions``).

Order and ties, deterministic for every preset (the official code sorts with ``np.argsort(-score)``,
not stable, except ODM's stable ``sorted``; we are exact where its order is defined):

- Per class, detections are ranked by descending score; tied scores keep input (row) order. For the
  AVA presets "input order" is the order in which TF-OD-API concatenates them: keyframes in order of
  their first row, then the order inside a keyframe (by score for ``ava_official``, ties in row order;
  row order for ``ava_alphaction``).
- ``ava_official``'s cap keeps the first 50 rows of a keyframe in that order (the official heap's choice
  among rows tied with the 50th score depends on action id and coordinates).
- Matching is sequential inside a (video, frame, class) group in rank order, except for
  ``ava_alphaction``, which matches a keyframe's rows in input order and ranks them by score afterwards.

Counts in ``FrameMapResult.meta`` are taken in this order: excluded keys, labels outside ``classes``,
unannotated keys (``ava_official``), the cap (``ava_official``), classes without GT.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from benchmark.errors import InputError
from benchmark.evaluation.boxes import BoxTable
from benchmark.evaluation.detection import average_precision

AVA_CAP = 50  # (box, label) rows kept per keyframe by get_ava_performance.read_csv(…, 50)


@dataclass(frozen=True)
class Preset:
    """What one official evaluator does (module doc)."""

    iou: str  # "continuous" | "pixel" | "odm"
    matching: str  # "voc" | "delete"
    ap: str  # "all_point" | "trapezoid"
    all_labels: bool = False  # average over every class given (ACT), not over the classes with GT
    ava: bool = False  # per-keyframe semantics; accepts ``excluded``
    sort_keyframe: bool = False  # rows of a keyframe sorted by score and capped at AVA_CAP (official)
    ignore_unannotated: bool = False  # detections on keys outside ``keys`` are ignored (official)


PRESETS = {
    "multisports": Preset(iou="continuous", matching="voc", ap="all_point"),
    "act": Preset(iou="pixel", matching="delete", ap="trapezoid", all_labels=True),
    "odm": Preset(iou="odm", matching="voc", ap="all_point"),
    "ava_official": Preset(iou="continuous", matching="voc", ap="all_point", ava=True, sort_keyframe=True,
                           ignore_unannotated=True),
    "ava_alphaction": Preset(iou="continuous", matching="voc", ap="all_point", ava=True),
}


@dataclass(frozen=True)
class FrameMapResult:
    preset: str
    iou: float
    map: float  # mean AP (fraction) over the averaged classes
    per_class: dict[str, float]  # averaged class -> AP (fraction), in ``classes`` order
    meta: dict = field(default_factory=dict)  # counts: what was evaluated, what was left out

    def to_json(self) -> dict:
        return {"preset": self.preset, "iou": self.iou, "map": self.map, "per_class": dict(self.per_class),
                "meta": self.meta}


# ---------------------------------------------------------------------------------------------
# IoU and AP
# ---------------------------------------------------------------------------------------------

def paired_box_iou(a: np.ndarray, b: np.ndarray, convention: str = "continuous") -> np.ndarray:
    """Element-wise IoU of boxes ``a`` [N, 4] and ``b`` [N, 4] (x1, y1, x2, y2) in one of the conventions
    ``continuous``, ``pixel`` (ACT, +1) or ``odm`` (+1, and 0 across a gap); 0/0 gives 0 (module doc)."""
    one = 0.0 if convention == "continuous" else 1.0
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + one, 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + one, 0, None)
    if convention == "odm":
        apart = (a[:, 0] > b[:, 2]) | (b[:, 0] > a[:, 2]) | (a[:, 3] < b[:, 1]) | (a[:, 1] > b[:, 3])
        w = np.where(apart, 0.0, w)
    inter = w * h
    union = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one) + (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    return np.nan_to_num(iou, nan=0.0)


def trapezoid_ap(tp: np.ndarray, n_gt: int) -> float:
    """ACT's ``pr_to_ap``: trapezoids under the raw PR curve that starts at (recall 0, precision 1);
    tp [N] bool in rank order."""
    hits = np.cumsum(tp, dtype=np.float64)
    precision = np.r_[1.0, hits / np.arange(1, len(tp) + 1)]
    recall = np.r_[0.0, hits / n_gt]
    return float(np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2))


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def frame_map(gt: BoxTable, pred: BoxTable, preset: str = "multisports", iou: float = 0.5, classes=None, keys=None,
              excluded=None) -> FrameMapResult:
    """Frame-mAP of ``pred`` against ``gt`` at IoU threshold ``iou`` (>=), with the semantics of ``preset``.

    ``classes``: the evaluated labels (default: the GT's, sorted). ``keys`` (``ava_official`` only): the
    annotated (video, frame) keys, a BoxTable or a structured array with fields video and frame.
    ``excluded`` (AVA presets): keys dropped from GT and detections. See the module doc for everything else.
    """
    if preset not in PRESETS:
        raise InputError(f"unknown frame-mAP preset {preset!r}; known: {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    if pred.score is None:
        raise ValueError("predictions need scores")
    if keys is not None and not spec.ignore_unannotated:
        raise ValueError(f"keys (the annotated keyframes) only apply to ava_official, not {preset}")
    if excluded is not None and not spec.ava:
        raise ValueError(f"excluded keys only apply to the AVA presets, not {preset}")
    names = np.unique(gt.label) if classes is None else np.asarray(list(classes), dtype=str)
    if len(set(names.tolist())) != len(names):
        raise InputError("the class list repeats a name")

    # Integer codes: (video, frame) key and class position for every GT and prediction row.
    extra = [k for k in (keys, excluded) if k is not None]
    gt_key, pred_key, *extra_keys = _key_codes([gt, pred, *extra])
    key_of = dict(zip([id(k) for k in extra], extra_keys))
    gt_class, pred_class = _class_codes(names, gt.label, pred.label)

    meta = {"predictions": len(pred), "gt_rows": len(gt)}
    gt_keep = np.ones(len(gt), dtype=bool)
    rows = np.arange(len(pred))  # the prediction rows still in play, input order
    if excluded is not None:
        out = np.isin(gt_key, key_of[id(excluded)])
        gt_keep &= ~out
        dropped = np.isin(pred_key, key_of[id(excluded)])
        meta.update(gt_rows_on_excluded_keys=int(out.sum()), predictions_on_excluded_keys=int(dropped.sum()))
        rows = rows[~dropped]
    meta["gt_rows_ignored_label"] = int((gt_keep & (gt_class < 0)).sum())
    gt_keep &= gt_class >= 0
    known = pred_class[rows] >= 0
    meta["predictions_ignored_label"] = int((~known).sum())
    rows = rows[known]
    if spec.ignore_unannotated:
        annotated = np.unique(gt_key[gt_keep] if keys is None else key_of[id(keys)])
        if excluded is not None:
            annotated = annotated[~np.isin(annotated, key_of[id(excluded)])]
        inside = np.isin(pred_key[rows], annotated)
        meta["predictions_on_unannotated_keys"] = int((~inside).sum())
        rows = rows[inside]
    if not gt_keep.any():
        raise InputError("no ground-truth boxes of the evaluated classes")

    # The order in which a class's detections are concatenated (ties keep it), and the cap.
    sequence = rows
    if spec.ava:
        sequence = _keyframe_sequence(pred_key[rows], pred.score[rows], rows, spec.sort_keyframe)
    if spec.sort_keyframe:
        rank_in_key = _rank_in_groups(pred_key[sequence])
        meta["predictions_beyond_cap"] = int((rank_in_key >= AVA_CAP).sum())
        sequence = sequence[rank_in_key < AVA_CAP]

    n_gt = np.bincount(gt_class[gt_keep], minlength=len(names))
    has_gt = n_gt[pred_class[sequence]] > 0
    if spec.all_labels and not has_gt.all():
        first = str(names[pred_class[sequence[~has_gt][0]]])
        raise InputError(f"class {first!r} has detections but no GT (ACT's frameAP divides by zero here)")
    meta["predictions_of_classes_without_gt"] = int((~has_gt).sum())
    sequence = sequence[has_gt]

    # Rank per class: by class, descending score, ties in sequence order (stable sorts).
    ranked = sequence[np.argsort(-pred.score[sequence], kind="stable")]
    # (a radix sort while the class codes fit 16 bits, as in detection.py)
    ranked = ranked[np.argsort(pred_class[ranked].astype(np.int16 if len(names) < 2**15 else np.int64), kind="stable")]
    # Match order inside a group: rank order, or the keyframe's input order (AlphAction).
    match_rank = np.empty(len(pred), dtype=np.int64)
    if spec.ava and not spec.sort_keyframe:
        match_rank[sequence] = np.arange(len(sequence))
    else:
        match_rank[ranked] = np.arange(len(ranked))

    gt_rows = np.flatnonzero(gt_keep)
    n_classes = len(names)
    gt_group = gt_key[gt_rows] * n_classes + gt_class[gt_rows]
    pred_group = pred_key[ranked] * n_classes + pred_class[ranked]
    tp = _match(gt.box[gt_rows], gt_group, pred.box[ranked], pred_group, match_rank[ranked], iou, spec)

    bounds = np.searchsorted(pred_class[ranked], np.arange(n_classes + 1))
    per_class = {}
    for c, name in enumerate(names.tolist()):
        if n_gt[c] == 0 and not spec.all_labels:
            continue
        hits = tp[bounds[c]:bounds[c + 1]]
        if spec.ap == "trapezoid":
            per_class[name] = trapezoid_ap(hits, n_gt[c]) if len(hits) else 0.0
        else:
            per_class[name] = float(average_precision(hits[None, :], n_gt[c])[0])
    meta.update(predictions_evaluated=len(ranked), gt_rows_evaluated=len(gt_rows), classes_averaged=len(per_class),
                classes_without_gt=int((n_gt == 0).sum()))
    return FrameMapResult(preset, float(iou), float(np.mean(list(per_class.values()))), per_class, meta)


def _key_codes(tables) -> list[np.ndarray]:
    """One int64 code per (video, frame) row of each table (BoxTable or structured array), the same
    code for the same key across tables."""
    import pandas as pd  # here: `python -m benchmark evaluate` imports this module's command and stays pandas-free

    videos = [np.asarray(t.video if isinstance(t, BoxTable) else t["video"]) for t in tables]
    frames = [np.asarray(t.frame if isinstance(t, BoxTable) else t["frame"], dtype=np.int64) for t in tables]
    codes, _ = pd.factorize(np.concatenate([v.astype(str) for v in videos]))
    frame = np.concatenate(frames)
    low = frame.min(initial=0)
    key = codes.astype(np.int64) * (frame.max(initial=0) - low + 1) + (frame - low)
    return np.split(key, np.cumsum([len(v) for v in videos])[:-1])


def _class_codes(names: np.ndarray, *labels: np.ndarray) -> list[np.ndarray]:
    """The position of every label in ``names``, -1 for a label outside it."""
    import pandas as pd

    codes, uniques = pd.factorize(np.concatenate([np.asarray(x).astype(str) for x in labels]))
    position = {name: i for i, name in enumerate(names.tolist())}
    lookup = np.array([position.get(str(u), -1) for u in uniques], dtype=np.int64)
    return np.split(lookup[codes], np.cumsum([len(x) for x in labels])[:-1])


def _keyframe_sequence(key: np.ndarray, score: np.ndarray, rows: np.ndarray, by_score: bool) -> np.ndarray:
    """``rows`` in TF-OD-API's concatenation order: keyframes in order of their first row, inside a keyframe
    by descending score (ties in row order) if ``by_score``, else in row order."""
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    key_rank = np.argsort(np.argsort(first))[inverse]
    order = np.argsort(-score, kind="stable") if by_score else np.arange(len(rows))
    order = order[np.argsort(key_rank[order], kind="stable")]
    return rows[order]


def _rank_in_groups(group: np.ndarray) -> np.ndarray:
    """The position of each element inside its run of equal ``group`` values (``group`` is grouped)."""
    if len(group) == 0:
        return np.zeros(0, dtype=np.int64)
    start = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    return np.arange(len(group)) - np.repeat(start, np.diff(np.r_[start, len(group)]))


def _match(gt_box, gt_group, pred_box, pred_group, pred_order, threshold, spec: Preset) -> np.ndarray:
    """True positives [P] of the predictions (any order), each matched inside its (key, class) group in
    ``pred_order``, under ``spec``'s matching and IoU."""
    gt_sorted = np.argsort(gt_group, kind="stable")  # by group, GT row order inside (the tie rule)
    group_sorted = gt_group[gt_sorted]
    first_gt = np.searchsorted(group_sorted, pred_group, side="left")
    n_group_gt = np.searchsorted(group_sorted, pred_group, side="right") - first_gt

    # Candidate pairs (prediction, GT of its group), GT in row order inside each prediction's run.
    pair_start = np.r_[0, np.cumsum(n_group_gt)]
    pair_pred = np.repeat(np.arange(len(pred_group)), n_group_gt)
    pair_gt = gt_sorted[np.repeat(first_gt - pair_start[:-1], n_group_gt) + np.arange(pair_start[-1])]
    pair_iou = paired_box_iou(pred_box[pair_pred], gt_box[pair_gt], spec.iou)

    tp = np.zeros(len(pred_group), dtype=bool)
    if spec.matching == "voc":
        _match_voc(pair_iou, pair_gt, pair_start, n_group_gt, pred_order, threshold, tp, np.arange(len(pred_group)))
        return tp
    # Delete matching: with one GT in the group it is the VOC rule; with more, rounds (detection._match).
    single = np.flatnonzero(n_group_gt == 1)
    _match_voc(pair_iou[pair_start[single]], pair_gt[pair_start[single]], np.arange(len(single) + 1),
               np.ones(len(single), dtype=np.int64), pred_order[single], threshold, tp, single)
    _match_delete(pair_iou, pair_gt, pair_start, n_group_gt, pred_group, pred_order, threshold, tp, len(gt_group))
    return tp


def _match_voc(pair_iou, pair_gt, pair_start, n_pairs, pred_order, threshold, tp, preds) -> None:
    """The VOC rule for predictions ``preds`` (their pairs laid out consecutively from ``pair_start``): each
    takes its first best GT; of the candidates >= threshold, the first in ``pred_order`` per GT wins."""
    has = np.flatnonzero(n_pairs > 0)
    if len(has) == 0:
        return
    starts = pair_start[has]
    best = np.maximum.reduceat(pair_iou, starts)
    at_best = pair_iou == np.repeat(best, n_pairs[has])
    index = np.where(at_best, np.arange(len(pair_iou)), len(pair_iou))
    chosen = pair_gt[np.minimum.reduceat(index, starts)]
    hit = best >= threshold
    cand, won = has[hit], chosen[hit]
    if len(cand) == 0:
        return
    order = np.lexsort((pred_order[cand], won))
    first = np.r_[True, won[order][1:] != won[order][:-1]]
    tp[preds[cand[order][first]]] = True


def _match_delete(pair_iou, pair_gt, pair_start, n_group_gt, pred_group, pred_order, threshold, tp, n_gt) -> None:
    """ACT's delete matching for the predictions of groups with >= 2 GT: round r takes the r-th prediction
    (``pred_order``) of every such group at once; each takes the first best remaining GT."""
    multi = np.flatnonzero(n_group_gt > 1)
    if len(multi) == 0:
        return
    by_group = multi[np.lexsort((pred_order[multi], pred_group[multi]))]
    rank = _rank_in_groups(pred_group[by_group])
    in_rounds = np.argsort(rank, kind="stable")
    preds, rank = by_group[in_rounds], rank[in_rounds]
    round_bounds = np.searchsorted(rank, np.arange(rank[-1] + 2))
    # Their pairs, laid out in the same order.
    count = n_group_gt[preds]
    start = np.r_[0, np.cumsum(count)]
    take = np.repeat(pair_start[preds] - start[:-1], count) + np.arange(start[-1])
    iou, gt_idx_all = pair_iou[take], pair_gt[take]
    deleted = np.zeros(n_gt, dtype=bool)
    for r in range(len(round_bounds) - 1):
        first, last = round_bounds[r], round_bounds[r + 1]
        p0, p1 = start[first], start[last]
        starts = start[first:last] - p0
        gt_idx = gt_idx_all[p0:p1]
        candidate = np.where(deleted[gt_idx], -np.inf, iou[p0:p1])
        best = np.maximum.reduceat(candidate, starts)
        at_best = candidate == np.repeat(best, count[first:last])
        chosen = gt_idx[np.minimum.reduceat(np.where(at_best, np.arange(p1 - p0), p1 - p0), starts)]
        hit = best >= threshold
        deleted[chosen[hit]] = True
        tp[preds[first:last][hit]] = True
