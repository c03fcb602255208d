"""Frame-mAP: one independent slow reference per preset (each official loop transcribed prediction by
prediction, in plain Python, sharing no code with benchmark.evaluation.frame_map), compared on random
cases; the hand-computed cases where the presets disagree (docs STAD.md §2.5, §3.7); the
`evaluate-boxes` command."""
import json
import math

import numpy as np
import pytest
from benchmark.errors import InputError

from benchmark.evaluation.boxes import BoxTable
from benchmark.evaluation.frame_map import PRESETS, frame_map

# Rows used throughout: GT (video, frame, (x1, y1, x2, y2), label); predictions (video, frame, box, label, score).


# ---------------------------------------------------------------------------------------------
# Independent slow references
# ---------------------------------------------------------------------------------------------

def ref_iou(a, b, convention):
    """ACT's iou2d (pixel), MultiSports' / TF-OD-API's (continuous), ODM's Evaluator.iou (odm)."""
    one = 0.0 if convention == "continuous" else 1.0
    if convention == "odm" and (a[0] > b[2] or b[0] > a[2] or a[3] < b[1] or a[1] > b[3]):
        return 0.0  # boxesIntersect is False
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + one)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + one)
    inter = iw * ih
    union = (a[2] - a[0] + one) * (a[3] - a[1] + one) + (b[2] - b[0] + one) * (b[3] - b[1] + one) - inter
    return inter / union if union != 0 else 0.0


def ref_voc_ap(tps, n_gt):
    """VOC all-point AP (voc_ap / CalculateAveragePrecision / metrics.compute_average_precision)."""
    hits, precision, recall = 0, [], []
    for i, t in enumerate(tps):
        hits += t
        precision.append(hits / (i + 1))
        recall.append(hits / n_gt)
    mrec, mpre = [0.0] + recall + [1.0], [0.0] + precision + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def ref_act(gt_rows, pred_rows, labels, th):
    """MOC-Detector ACT.py:frameAP. Python's sort is stable: ties keep input order (the documented rule)."""
    aps = {}
    for label in labels:
        detections = [p for p in pred_rows if p[3] == label]
        gt = {}
        for video, frame, box, gt_label in gt_rows:
            if gt_label == label:
                gt.setdefault((video, frame), []).append(box)
        pr = [(1.0, 0.0)]  # (precision, recall)
        fn = sum(len(boxes) for boxes in gt.values())
        fp = tp = 0
        for video, frame, box, _, _ in sorted(detections, key=lambda p: -p[4]):
            k, positive = (video, frame), False
            if k in gt:
                ious = [ref_iou(g, box, "pixel") for g in gt[k]]
                amax = ious.index(max(ious))
                if ious[amax] >= th:
                    positive = True
                    del gt[k][amax]
                    if not gt[k]:
                        del gt[k]
            if positive:
                tp, fn = tp + 1, fn - 1
            else:
                fp += 1
            pr.append((tp / (tp + fp), tp / (tp + fn)))  # ZeroDivisionError for a class without GT, as ACT
        aps[label] = sum((pr[i][1] - pr[i - 1][1]) * (pr[i][0] + pr[i - 1][0]) / 2 for i in range(1, len(pr)))
    return aps


def ref_multisports(gt_rows, pred_rows, labels, th):
    """evaluate_multisports.py:frameAP (VOC rule, continuous area, all-point AP, classes with GT)."""
    aps = {}
    for label in labels:
        gt = {}
        for video, frame, box, gt_label in gt_rows:
            if gt_label == label:
                gt.setdefault((video, frame), []).append(box)
        n_gt = sum(len(boxes) for boxes in gt.values())
        if n_gt == 0:
            continue
        used = {k: [False] * len(boxes) for k, boxes in gt.items()}
        tps = []
        for video, frame, box, _, _ in sorted((p for p in pred_rows if p[3] == label), key=lambda p: -p[4]):
            k, positive = (video, frame), False
            if k in gt:
                ious = [ref_iou(g, box, "continuous") for g in gt[k]]
                amax = ious.index(max(ious))
                if ious[amax] >= th and not used[k][amax]:
                    used[k][amax] = positive = True
            tps.append(positive)
        aps[label] = ref_voc_ap(tps, n_gt)
    return aps


def ref_odm(gt_rows, pred_rows, labels, th):
    """Object-Detection-Metrics Evaluator.GetPascalVOCMetrics + CalculateAveragePrecision (every point)."""
    aps = {}
    for label in labels:
        gts = {}
        for video, frame, box, gt_label in gt_rows:
            if gt_label == label:
                gts.setdefault((video, frame), []).append(box)
        npos = sum(len(boxes) for boxes in gts.values())
        if npos == 0:
            continue
        det = {k: [0] * len(boxes) for k, boxes in gts.items()}
        dects = sorted((p for p in pred_rows if p[3] == label), key=lambda p: p[4], reverse=True)  # stable
        tps = []
        for video, frame, box, _, _ in dects:
            gt = gts.get((video, frame), [])
            iou_max, jmax = 2.2250738585072014e-308, None  # sys.float_info.min
            for j, g in enumerate(gt):
                iou = ref_iou(box, g, "odm")
                if iou > iou_max:
                    iou_max, jmax = iou, j
            if iou_max >= th and det[(video, frame)][jmax] == 0:
                det[(video, frame)][jmax] = 1
                tps.append(1)
            else:
                tps.append(0)
        aps[label] = ref_voc_ap(tps, npos)
    return aps


def ref_ava(gt_rows, pred_rows, whitelist, th, official, keys=None, excluded=()):
    """get_ava_performance.py (official: per-keyframe sort and the top-50 rows, detections on keys outside
    the GT ignored) or AlphAction's ava_eval.py (file order inside a keyframe, no cap); both with
    per_image_evaluation._compute_tp_fp_for_single_class and ObjectDetectionEvaluation.evaluate.
    The cap keeps the first 50 of the stable score order (the documented tie rule)."""
    excluded = set(excluded)
    gt = {}
    for video, frame, box, label in gt_rows:  # read_csv(groundtruth, class_whitelist, 0)
        if label in whitelist:
            gt.setdefault((video, frame), []).append((box, label))
    gt = {k: v for k, v in gt.items() if k not in excluded}
    annotated = set(gt) if keys is None else set(keys) - excluded
    entries = {}
    for video, frame, box, label, score in pred_rows:  # read_csv(detections, class_whitelist, 50)
        if label in whitelist:
            entries.setdefault((video, frame), []).append((score, label, box))
    if official:
        entries = {k: sorted(v, key=lambda e: -e[0])[:50] for k, v in entries.items()}
    scores = {c: [] for c in whitelist}
    tp_fp = {c: [] for c in whitelist}
    for k, detections in entries.items():
        if k in excluded or (official and k not in annotated):
            continue
        for c in whitelist:
            det = [(s, box) for s, label, box in detections if label == c]
            gt_boxes = [box for box, label in gt.get(k, []) if label == c]
            tps = [False] * len(det)
            detected = [False] * len(gt_boxes)
            for i, (_, box) in enumerate(det):
                if not gt_boxes:
                    break
                ious = [ref_iou(box, g, "continuous") for g in gt_boxes]
                gt_id = ious.index(max(ious))
                if ious[gt_id] >= th and not detected[gt_id]:
                    tps[i] = detected[gt_id] = True
            scores[c] += [s for s, _ in det]
            tp_fp[c] += tps
    aps = {}
    for c in whitelist:
        n_gt = sum(label == c for boxes in gt.values() for _, label in boxes)
        if n_gt == 0:
            continue  # AP nan, left out by nanmean
        order = sorted(range(len(scores[c])), key=lambda i: -scores[c][i])
        aps[c] = ref_voc_ap([tp_fp[c][i] for i in order], n_gt)
    return aps


def reference(preset, gt_rows, pred_rows, labels, th, keys=None, excluded=()):
    if preset == "act":
        return ref_act(gt_rows, [p for p in pred_rows if p[3] in labels], labels, th)
    if preset == "multisports":
        return ref_multisports(gt_rows, pred_rows, labels, th)
    if preset == "odm":
        return ref_odm(gt_rows, pred_rows, labels, th)
    return ref_ava(gt_rows, pred_rows, labels, th, preset == "ava_official", keys, excluded)


# ---------------------------------------------------------------------------------------------
# Helpers and random cases
# ---------------------------------------------------------------------------------------------

def gt_table(rows):
    return BoxTable.from_rows([(v, f, *box, label) for v, f, box, label in rows], with_score=False)


def pred_table(rows):
    return BoxTable.from_rows([(v, f, *box, label, s) for v, f, box, label, s in rows], with_score=True)


def key_array(keys):
    out = np.empty(len(keys), dtype=[("video", "U16"), ("frame", np.int64)])
    out["video"], out["frame"] = [k[0] for k in keys], [k[1] for k in keys]
    return out


def evaluate(preset, gt_rows, pred_rows, iou=0.5, classes=None, keys=None, excluded=None):
    return frame_map(gt_table(gt_rows), pred_table(pred_rows), preset, iou, classes,
                     None if keys is None else key_array(keys), None if excluded is None else key_array(excluded))


def random_box(rng, integer):
    x, y = rng.uniform(0, 60, 2)
    w, h = rng.uniform(0.5, 40, 2) if rng.random() > 0.1 else rng.uniform(0, 2, 2)  # tiny boxes: sub-pixel gaps
    box = (x, y, x + w, y + h)
    return tuple(float(round(v)) for v in box) if integer else tuple(float(v) for v in box)


def near(rng, box, integer):
    """A box near ``box``: jittered, or widened to straddle IoU 0.5 under one area convention only."""
    x1, y1, x2, y2 = box
    kind = rng.random()
    if kind < 0.3:  # pixel-inclusive IoU exactly 0.5, continuous just below (or the other way round)
        w = x2 - x1
        return (x1, y1, x1 + 2 * w + rng.choice([1.0, 0.0, -1.0]), y2)
    if kind < 0.4:  # just right of the box: a sub-pixel gap (ODM's boxesIntersect)
        w = x2 - x1
        return (x2 + 0.5, y1, x2 + 0.5 + w, y2)
    jitter = rng.normal(0, 0.15 * max(x2 - x1, y2 - y1, 1.0), 4)
    if integer:
        jitter = np.round(jitter)
    a, b, c, d = (np.array(box) + jitter).tolist()
    return (min(a, c), min(b, d), max(a, c), max(b, d))


def random_case(rng, ava=False):
    """GT with several boxes per frame and several labels per box, empty annotated frames, a class
    without GT; predictions jittered from GT (also straddling IoU 0.5), random ones, on frames and videos
    without GT, tied scores. For AVA, sometimes more than 50 rows on a keyframe."""
    integer = rng.random() < 0.5
    classes = ["a", "b", "c", "d"]  # "d" has no GT
    gt, annotated = [], []
    for v in range(int(rng.integers(1, 4))):
        for f in range(int(rng.integers(1, 5))):
            key = (f"v{v}", f + 1)
            annotated.append(key)
            first = random_box(rng, integer)
            for i in range(int(rng.choice([0, 1, 1, 2, 3, 4]))):
                # overlapping people: a detection's best GT may be taken and its second best free
                box = near(rng, first, integer) if i and rng.random() < 0.6 else random_box(rng, integer)
                for label in rng.choice(classes[:3], size=int(rng.integers(1, 3)), replace=False):
                    gt.append((*key, box, str(label)))
    if not any(row[3] == "a" for row in gt):  # every class list of the tests holds GT
        gt.append(("v0", 1, random_box(rng, integer), "a"))
        annotated.append(("v0", 1))
    tie_scores = rng.random() < 0.5
    pred = []

    def score():
        return float(rng.integers(0, 4)) / 4 if tie_scores else float(rng.random())

    for _ in range(int(rng.integers(0, 30))):
        video, frame, box, label = gt[int(rng.integers(len(gt)))]
        if rng.random() < 0.15:
            label = str(rng.choice(classes + ["zz"]))  # "zz": outside every class list
        pred.append((video, frame, near(rng, box, integer), label, score()))
    for _ in range(int(rng.integers(0, 10))):
        video, frame = f"v{rng.integers(0, 5)}", int(rng.integers(1, 7))  # also frames and videos without GT
        pred.append((video, frame, random_box(rng, integer), str(rng.choice(classes)), score()))
    if ava and rng.random() < 0.2:  # a crowded keyframe: the top-50 cap
        video, frame, box, _ = gt[0]
        pred += [(video, frame, near(rng, box, integer), str(rng.choice(classes[:2])), score()) for _ in range(55)]
    order = rng.permutation(len(pred))
    return gt, [pred[i] for i in order], classes, annotated


def assert_same(result, expected):
    assert list(result.per_class) == list(expected)
    for name, ap in expected.items():
        assert result.per_class[name] == pytest.approx(ap, abs=1e-12), name
    assert result.map == pytest.approx(float(np.mean(list(expected.values()))), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Vectorised == reference, on random cases
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["multisports", "act", "odm"])
def test_matches_the_reference_on_random_cases(preset):
    rng = np.random.default_rng({"multisports": 1, "act": 2, "odm": 3}[preset])
    errors = 0
    for case in range(250):
        gt, pred, classes, _ = random_case(rng)
        th = float(rng.choice([0.5, 0.5, 0.3, 0.75]))
        labels = classes if rng.random() < 0.5 else ["a", "b"]
        try:
            expected = reference(preset, gt, pred, labels, th)
        except ZeroDivisionError:  # ACT: a class with detections and no GT
            errors += 1
            with pytest.raises(InputError, match="has detections but no GT"):
                evaluate(preset, gt, pred, th, labels)
            continue
        assert_same(evaluate(preset, gt, pred, th, labels), expected)
    assert preset != "act" or 0 < errors < 200  # both paths exercised


@pytest.mark.parametrize("preset", ["ava_official", "ava_alphaction"])
def test_ava_matches_the_reference_on_random_cases(preset):
    rng = np.random.default_rng({"ava_official": 4, "ava_alphaction": 5}[preset])
    capped = 0
    for case in range(250):
        gt, pred, classes, annotated = random_case(rng, ava=True)
        th = float(rng.choice([0.5, 0.5, 0.3, 0.75]))
        whitelist = classes if rng.random() < 0.5 else ["a", "c", "d"]
        keys = None
        if preset == "ava_official" and rng.random() < 0.5:
            keys = annotated + [("v9", 1)]  # with the empty keyframes, and one more
        excluded = [annotated[int(i)] for i in rng.choice(len(annotated), size=min(2, len(annotated)), replace=False)] \
            if rng.random() < 0.3 else None
        expected = reference(preset, gt, pred, whitelist, th, keys, excluded or ())
        if not expected:  # every GT excluded
            with pytest.raises(InputError):
                evaluate(preset, gt, pred, th, whitelist, keys, excluded)
            continue
        result = evaluate(preset, gt, pred, th, whitelist, keys, excluded)
        assert_same(result, expected)
        capped += result.meta.get("predictions_beyond_cap", 0) > 0
    assert preset != "ava_official" or capped > 10


# ---------------------------------------------------------------------------------------------
# Hand-computed cases where the presets disagree (STAD.md §2.5)
# ---------------------------------------------------------------------------------------------

def test_rematch_after_deletion():
    # Two GT on one frame: A = [0,100]x[0,100], B = [10,110]x[0,100]. The first detection is A itself.
    # The second, [3,103]x[0,100], overlaps A at 97/103 = 0.942 (continuous; 98/104 with +1) and B at
    # 93/107 = 0.869 (94/108 with +1). ACT deletes A, so the second detection takes B: TP, TP -> 100.
    # VOC: its argmax is A, already matched -> FP: TP, FP -> precision 1 up to recall 0.5 -> 50.
    gt = [("v", 1, (0, 0, 100, 100), "a"), ("v", 1, (10, 0, 110, 100), "a")]
    pred = [("v", 1, (0, 0, 100, 100), "a", 0.9), ("v", 1, (3, 0, 103, 100), "a", 0.8)]
    expected = {"act": 1.0, "multisports": 0.5, "odm": 0.5, "ava_official": 0.5, "ava_alphaction": 0.5}
    for preset, value in expected.items():
        assert evaluate(preset, gt, pred).map == pytest.approx(value, abs=1e-12), preset
        assert reference(preset, gt, pred, ["a"], 0.5)["a"] == pytest.approx(value, abs=1e-12), preset


def test_trapezoid_vs_all_point():
    # TP, FP, TP with 2 GT. PR points (r, p): (0.5, 1), (0.5, 0.5), (1, 2/3).
    # ACT trapezoid from (0, 1): 0.5 * (1 + 1) / 2 + 0 + 0.5 * (0.5 + 2/3) / 2 = 0.5 + 0.291667 = 0.791667.
    # VOC all-point: 0.5 * 1 + 0.5 * 2/3 = 0.833333.
    gt = [("v", 1, (0, 0, 10, 10), "a"), ("v", 2, (0, 0, 10, 10), "a")]
    pred = [("v", 1, (0, 0, 10, 10), "a", 0.9), ("v", 1, (50, 50, 60, 60), "a", 0.8), ("v", 2, (0, 0, 10, 10), "a", 0.7)]
    for preset in PRESETS:
        value = 0.5 + 0.5 * (0.5 + 2 / 3) / 2 if preset == "act" else 0.5 + 0.5 * 2 / 3
        assert evaluate(preset, gt, pred).map == pytest.approx(value, abs=1e-12), preset
    assert round(100 * evaluate("act", gt, pred).map, 2) == 79.17
    assert round(100 * evaluate("multisports", gt, pred).map, 2) == 83.33


def test_iou_under_the_two_area_conventions():
    # GT [0,0,49,9], detection [0,0,99,9]: continuous 49*9 / (99*9) = 49/99 = 0.4949 < 0.5;
    # +1 pixel: 50*10 / (100*10) = 0.5 >= 0.5. ACT and ODM (+1) -> 100; MultiSports and AVA -> 0.
    gt = [("v", 1, (0, 0, 49, 9), "a")]
    pred = [("v", 1, (0, 0, 99, 9), "a", 0.9)]
    expected = {"act": 1.0, "multisports": 0.0, "odm": 1.0, "ava_official": 0.0, "ava_alphaction": 0.0}
    for preset, value in expected.items():
        assert evaluate(preset, gt, pred).map == value, preset


def test_odm_boxes_apart_by_a_sub_pixel_gap_do_not_overlap():
    # GT [0,0,0,0] and detection [0.5,0,0.5,0]: +1 widths overlap by 0.5 -> ACT IoU 0.5 / 1.5 = 1/3;
    # ODM's boxesIntersect sees 0.5 > 0 (a gap) -> IoU 0.
    gt = [("v", 1, (0, 0, 0, 0), "a")]
    pred = [("v", 1, (0.5, 0, 0.5, 0), "a", 0.9)]
    assert evaluate("act", gt, pred, iou=0.3).map == 1.0
    assert evaluate("odm", gt, pred, iou=0.3).map == 0.0


def test_ava_row_order_inside_a_keyframe():
    # One GT; two detections on it, the low score listed first. AlphAction matches in file order: the
    # 0.3 row takes the GT, the 0.9 row is a FP; ranked by score: FP, TP -> precision 1/2 at recall 1 -> 0.5.
    # The official code sorts the keyframe's rows first: the 0.9 row is the TP -> 1.0.
    gt = [("v", 902, (0.1, 0.1, 0.5, 0.9), "a")]
    pred = [("v", 902, (0.1, 0.1, 0.5, 0.9), "a", 0.3), ("v", 902, (0.1, 0.1, 0.5, 0.9), "a", 0.9)]
    assert evaluate("ava_alphaction", gt, pred).map == 0.5
    assert evaluate("ava_official", gt, pred).map == 1.0
    assert evaluate("multisports", gt, pred).map == 1.0


def test_top_50_cap():
    # 51 rows on one keyframe: 50 of class b at 0.9 (b has no GT: never averaged), then the only row of a,
    # on its GT, at 0.1. The official cap drops it: AP(a) = 0. AlphAction keeps it: AP(a) = 1.
    gt = [("v", 902, (0.1, 0.1, 0.5, 0.9), "a")]
    pred = [("v", 902, (0.1, 0.1, 0.5, 0.9), "b", 0.9)] * 50 + [("v", 902, (0.1, 0.1, 0.5, 0.9), "a", 0.1)]
    official = evaluate("ava_official", gt, pred, classes=["a", "b"])
    assert official.per_class == {"a": 0.0} and official.meta["predictions_beyond_cap"] == 1
    assert official.meta["predictions_of_classes_without_gt"] == 50
    assert evaluate("ava_alphaction", gt, pred, classes=["a", "b"]).per_class == {"a": 1.0}
    # The cap counts whitelisted rows only: without b in the label map, the row of a is kept.
    assert evaluate("ava_official", gt, pred, classes=["a"]).per_class == {"a": 1.0}


@pytest.mark.parametrize("preset", ["ava_official", "ava_alphaction"])
def test_excluded_timestamp(preset):
    # Keyframe 902: GT and a TP at 0.5. Keyframe 903: GT and a FP at 0.9 (far away).
    # All counted: ranked FP, TP with 2 GT -> precision 1/2 at recall 1/2 -> 0.25. Excluding 903 -> 1.0.
    gt = [("v", 902, (0.1, 0.1, 0.5, 0.9), "a"), ("v", 903, (0.1, 0.1, 0.5, 0.9), "a")]
    pred = [("v", 902, (0.1, 0.1, 0.5, 0.9), "a", 0.5), ("v", 903, (0.6, 0.1, 0.9, 0.9), "a", 0.9)]
    assert evaluate(preset, gt, pred).map == 0.25
    result = evaluate(preset, gt, pred, excluded=[("v", 903)])
    assert result.map == 1.0
    assert result.meta["gt_rows_on_excluded_keys"] == 1 and result.meta["predictions_on_excluded_keys"] == 1


def test_empty_annotated_keyframe():
    # GT on 902 with a TP at 0.5; keyframe 905 is annotated but holds no box; a detection there at 0.9.
    # Official, 905 among the keys: FP, TP -> 0.5. Without it (keys = the GT's): the detection is ignored
    # -> 1.0 (as any detection on an unannotated key). AlphAction: always a FP -> 0.5.
    gt = [("v", 902, (0.1, 0.1, 0.5, 0.9), "a")]
    pred = [("v", 902, (0.1, 0.1, 0.5, 0.9), "a", 0.5), ("v", 905, (0.1, 0.1, 0.5, 0.9), "a", 0.9)]
    with_empty = evaluate("ava_official", gt, pred, keys=[("v", 902), ("v", 905)])
    assert with_empty.map == 0.5 and with_empty.meta["predictions_on_unannotated_keys"] == 0
    without = evaluate("ava_official", gt, pred)
    assert without.map == 1.0 and without.meta["predictions_on_unannotated_keys"] == 1
    assert evaluate("ava_alphaction", gt, pred).map == 0.5


@pytest.mark.parametrize("preset", list(PRESETS))
def test_class_outside_the_whitelist(preset):
    # Class z: a GT row and a FP of z. With classes = [a], both are left out and counted; with the
    # default (the GT's classes) z is averaged: (1 + 0) / 2.
    gt = [("v", 1, (10, 10, 50, 90), "a"), ("v", 1, (10, 10, 50, 90), "z")]
    pred = [("v", 1, (10, 10, 50, 90), "a", 0.5), ("v", 1, (60, 10, 90, 90), "z", 0.9)]
    result = evaluate(preset, gt, pred, classes=["a"])
    assert result.per_class == {"a": 1.0}
    assert result.meta["gt_rows_ignored_label"] == 1 and result.meta["predictions_ignored_label"] == 1
    assert evaluate(preset, gt, pred).map == 0.5


def test_act_class_with_detections_and_no_gt_is_an_error():
    gt = [("v", 1, (0, 0, 10, 10), "a")]
    pred = [("v", 1, (0, 0, 10, 10), "a", 0.9), ("v", 1, (0, 0, 10, 10), "b", 0.8)]
    with pytest.raises(InputError, match="class 'b' has detections but no GT") as error:
        evaluate("act", gt, pred, classes=["a", "b"])
    assert "\n" not in str(error.value)
    with pytest.raises(ZeroDivisionError):
        reference("act", gt, pred, ["a", "b"], 0.5)
    for preset in ("multisports", "odm", "ava_official", "ava_alphaction"):
        result = evaluate(preset, gt, pred, classes=["a", "b"])
        assert result.per_class == {"a": 1.0} and result.meta["predictions_of_classes_without_gt"] == 1


def test_act_mean_over_all_labels():
    # Perfect detections of the one unseen class a; the label list has 4 classes (b, c, d: no GT and no
    # detections). ACT averages over all 4: (1 + 0 + 0 + 0) / 4 = 0.25; over the unseen class only: 1.
    # MultiSports averages over the classes with GT: 1 either way (the 39.54 vs 11.30 shape of §2.5).
    gt = [("v", 1, (0, 0, 10, 10), "a"), ("v", 2, (0, 0, 10, 10), "a")]
    pred = [("v", 1, (0, 0, 10, 10), "a", 0.9), ("v", 2, (0, 0, 10, 10), "a", 0.8)]
    labels = ["a", "b", "c", "d"]
    assert evaluate("act", gt, pred, classes=labels).map == 0.25
    assert evaluate("act", gt, pred, classes=labels).per_class == {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}
    assert evaluate("act", gt, pred, classes=["a"]).map == 1.0
    assert evaluate("multisports", gt, pred, classes=labels).map == 1.0


def test_tied_scores_keep_input_order():
    # Two tied detections on one GT frame: the first in input order is ranked first.
    # Miss first: FP, TP -> all-point 1 * 1/2 = 0.5; ACT's trapezoid (1,0) (0,0) (1/2,1) -> (0 + 1/2) / 2 = 0.25.
    gt = [("v", 1, (0, 0, 10, 10), "a")]
    hit, miss = ("v", 1, (0, 0, 10, 10), "a", 0.5), ("v", 1, (20, 20, 30, 30), "a", 0.5)
    for preset in PRESETS:
        assert evaluate(preset, gt, [hit, miss]).map == 1.0, preset
        assert evaluate(preset, gt, [miss, hit]).map == (0.25 if preset == "act" else 0.5), preset


def test_bad_arguments():
    gt = [("v", 1, (0, 0, 10, 10), "a")]
    pred = [("v", 1, (0, 0, 10, 10), "a", 0.9)]
    with pytest.raises(InputError, match="unknown frame-mAP preset"):
        evaluate("voc07", gt, pred)
    with pytest.raises(ValueError, match="only apply to ava_official"):
        evaluate("multisports", gt, pred, keys=[("v", 1)])
    with pytest.raises(ValueError, match="only apply to the AVA presets"):
        evaluate("act", gt, pred, excluded=[("v", 1)])
    with pytest.raises(InputError, match="no ground-truth"):
        evaluate("multisports", gt, pred, classes=["b"])


def test_result_to_json():
    gt = [("v", 1, (0, 0, 10, 10), "a")]
    result = evaluate("act", gt, [("v", 1, (0, 0, 10, 10), "a", 0.9)])
    assert json.loads(json.dumps(result.to_json()))["per_class"] == {"a": 1.0}
    assert math.isclose(result.to_json()["map"], 1.0)


# ---------------------------------------------------------------------------------------------
# The `evaluate-boxes` command
# ---------------------------------------------------------------------------------------------

from benchmark import cli  # noqa: E402  (the CLI tests only)
from benchmark.evaluation.cli import load_box_predictions  # noqa: E402


@pytest.fixture
def ava_files(tmp_path):
    """An AVA GT CSV (action 12 on 0902, an empty annotated keyframe 0905) and detections in the AVA layout:
    a TP on 0902 (0.5), and on 0905 a FP (0.9). Official: FP, TP -> 0.5; keyframe 0906 is not annotated."""
    gt = tmp_path / "ava_val.csv"
    gt.write_text("vid1,0902,0.100,0.100,0.500,0.900,12,0\nvid1,0905\n")
    pred = tmp_path / "pred.csv"
    pred.write_text("vid1,0902,0.1,0.1,0.5,0.9,12,0.5\nvid1,0905,0.1,0.1,0.5,0.9,12,0.9\nvid1,0906,0.1,0.1,0.5,0.9,12,0.95\n")
    return gt, pred


def run_cli(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_evaluate_boxes_ava_layout(ava_files, capsys):
    gt, pred = ava_files
    code, out, _ = run_cli(["evaluate-boxes", "--gt", str(gt), "--pred", str(pred), "--preset", "ava_official", "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and result["map"] == 0.5 and result["per_class"] == {"12": 0.5}
    assert result["meta"]["predictions_on_unannotated_keys"] == 1
    # AlphAction: the detection on 0906 is a FP too: FP (0.95), FP (0.9), TP -> 1/3
    code, out, _ = run_cli(["evaluate-boxes", "--gt", str(gt), "--pred", str(pred), "--preset", "ava_alphaction", "--json"], capsys)
    assert json.loads(out)["map"] == pytest.approx(1 / 3, abs=1e-12)


def test_evaluate_boxes_excluded_and_table(ava_files, tmp_path, capsys):
    gt, pred = ava_files
    excluded = tmp_path / "excluded.csv"
    excluded.write_text("vid1,0905\n")
    code, out, _ = run_cli(["evaluate-boxes", "--gt", str(gt), "--pred", str(pred), "--preset", "ava_official",
                            "--excluded", str(excluded)], capsys)
    assert code == 0
    assert out.splitlines()[-2].split() == ["mAP", "100.00"]
    assert "preset: ava_official" in out and "predictions on excluded keys: 1" in out


def test_evaluate_boxes_header_csv(ava_files, tmp_path, capsys):
    gt, _ = ava_files
    pred = tmp_path / "pred_header.csv"
    pred.write_text("score,label,video,frame,x1,y1,x2,y2\n0.5,12,vid1,902,0.1,0.1,0.5,0.9\n")
    code, out, _ = run_cli(["evaluate-boxes", "--gt", str(gt), "--pred", str(pred), "--preset", "multisports", "--json"], capsys)
    assert code == 0 and json.loads(out)["map"] == 1.0


@pytest.mark.parametrize("content, message", [
    ("video,frame,x1,y1,x2,label,score\nvid1,902,0.1,0.1,0.5,12,0.5\n", "missing column(s) y2"),
    ("video,frame,x1,y1,x2,y2,label,score\nvid1,902,0.1,0.1,0.5,0.9,12,0.5\nvid1,902,0.1,,0.5,0.9,12,0.5\n",
     "line 3: y1 '' is not a number"),
    ("video,frame,x1,y1,x2,y2,label,score\nvid1,902,0.1,0.1,0.5,0.9,12,nan\n", "line 2: score 'nan' is not a number"),
    ("video,frame,x1,y1,x2,y2,label,score\nvid1,902,0.6,0.1,0.5,0.9,12,0.5\n", "line 2: x2 < x1"),
    ("video,frame,x1,y1,x2,y2,label,score\nvid1,902,0.1,0.1,0.5,0.9,jumping,0.5\n", "line 2: unknown class 'jumping'"),
    ("vid1,0902,0.1,0.1,0.5,0.9,99,0.5\n", "line 1: unknown class '99'"),
    ("vid1,0902,0.1,0.1,0.5,0.9,12\n", "line 1: expected a header"),
])
def test_evaluate_boxes_bad_predictions_are_one_line(ava_files, tmp_path, capsys, content, message):
    gt, _ = ava_files
    pred = tmp_path / "bad.csv"
    pred.write_text(content)
    with pytest.raises(InputError) as error:
        load_box_predictions(str(pred), ("12",))
    assert message in str(error.value) and str(pred) in str(error.value) and "\n" not in str(error.value)
    code, _, err = run_cli(["evaluate-boxes", "--gt", str(gt), "--pred", str(pred)], capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_ava_action_ids_map_to_positions_of_named_labels(tmp_path):
    # A GT with names (not ids): action id k is the k-th label.
    pred = tmp_path / "pred.csv"
    pred.write_text("v,1,0,0,10,10,2,0.5\n")
    assert load_box_predictions(str(pred), ("brush_hair", "catch")).label.tolist() == ["catch"]


def test_evaluate_boxes_act_error_is_one_line(tmp_path, capsys, monkeypatch):
    # A stub GT (labels a, b; GT of a only): ACT's class with detections and no GT, through the command.
    from benchmark.data import box_annotations

    annotations = box_annotations.BoxAnnotations("stub.pkl", "act_pkl", ("a", "b"), gt_table([("v", 1, (0, 0, 10, 10), "a")]))
    monkeypatch.setattr(box_annotations, "load_box_annotations", lambda path: annotations)
    pred = tmp_path / "pred.csv"
    pred.write_text("video,frame,x1,y1,x2,y2,label,score\nv,1,0,0,10,10,a,0.5\nv,1,0,0,10,10,b,0.5\n")
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\n")
    argv = ["evaluate-boxes", "--gt", "stub.pkl", "--pred", str(pred), "--classes", str(classes)]
    code, _, err = run_cli([*argv, "--preset", "act"], capsys)
    assert code == 2 and err == "error: class 'b' has detections but no GT (ACT's frameAP divides by zero here)\n"
    code, out, _ = run_cli([*argv, "--preset", "multisports", "--json"], capsys)
    assert code == 0 and json.loads(out)["per_class"] == {"a": 1.0}
