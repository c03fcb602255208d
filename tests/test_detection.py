"""Detection mAP: hand-computed cases, the documented corner cases, an independent slow reference,
the real ActivityNet GT, prediction-file validation and the `evaluate` command."""
import argparse
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from benchmark.data.annotations import load_annotations
from benchmark.errors import InputError, run_command
from benchmark.evaluation import cli
from benchmark.evaluation.detection import (
    ACTIVITYNET_TIOU, THUMOS_TIOU, average_precision, evaluate_detection,
    match_predictions, parse_tiou,
)
from benchmark.evaluation.predictions import PredictionError, load_predictions
from benchmark.evaluation.segments import SegmentTable, paired_tiou, tiou_matrix


# ---------------------------------------------------------------------------------------------
# Independent slow reference: the official eval_detection.py loop, transcribed prediction by
# prediction in plain Python (no code shared with the module under test).
# ---------------------------------------------------------------------------------------------

def reference_matching(gt_rows, pred_rows, thresholds):
    """gt_rows: (video, t0, t1, label); pred_rows: (video, t0, t1, label, score)
    -> [K][P]: the GT row each prediction matches at each threshold, or -1."""
    matched = [[-1] * len(pred_rows) for _ in thresholds]
    preds_of = {}
    for i, row in enumerate(pred_rows):
        preds_of.setdefault(row[3], []).append(i)
    for label in sorted({row[3] for row in gt_rows}):
        gt_by_video = {}
        for index, row in enumerate(gt_rows):
            if row[3] == label:
                gt_by_video.setdefault(row[0], []).append((index, row[1], row[2]))
        preds = sorted(preds_of.get(label, []), key=lambda i: -pred_rows[i][4])  # Python's sort is stable
        locked = [set() for _ in thresholds]
        for i in preds:
            video, start, end = pred_rows[i][:3]
            scored = []
            for index, g0, g1 in gt_by_video.get(video, []):
                inter = max(0.0, min(end, g1) - max(start, g0))
                union = (g1 - g0) + (end - start) - inter
                scored.append((index, inter / union if union != 0 else math.nan))
            # descending tIoU, nan first (argsort puts it last, then [::-1]), later GT first on ties
            scored.sort(key=lambda s: (math.isnan(s[1]), 0 if math.isnan(s[1]) else s[1], s[0]), reverse=True)
            for k, threshold in enumerate(thresholds):
                for index, tiou in scored:
                    if tiou < threshold:
                        break
                    if index in locked[k]:
                        continue
                    locked[k].add(index)
                    matched[k][i] = index
                    break
    return matched


def reference_detection_ap(gt_rows, pred_rows, thresholds):
    """gt_rows: (video, t0, t1, label); pred_rows: (video, t0, t1, label, score) -> {class: [K] AP}."""
    matched = reference_matching(gt_rows, pred_rows, thresholds)
    result = {}
    for label in sorted({row[3] for row in gt_rows}):
        n_gt = sum(row[3] == label for row in gt_rows)
        preds = sorted((i for i, row in enumerate(pred_rows) if row[3] == label), key=lambda i: -pred_rows[i][4])
        result[label] = [reference_interpolated_ap([int(m[i] >= 0) for i in preds], n_gt) for m in matched]
    return result


def reference_interpolated_ap(tp, n_gt):
    precision, recall, hits = [], [], 0
    for i, t in enumerate(tp):
        hits += t
        precision.append(hits / (i + 1))
        recall.append(hits / n_gt)
    mprec = [0.0] + precision + [0.0]
    mrec = [0.0] + recall + [1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def gt_table(rows):
    return SegmentTable.from_rows(rows, with_score=False)


def pred_table(rows):
    return SegmentTable.from_rows(rows, with_score=True)


def per_class_ap(gt_rows, pred_rows, thresholds):
    result = evaluate_detection(gt_table(gt_rows), pred_table(pred_rows), thresholds)
    return {name: list(ap) for name, ap in result.per_class.items()}


def random_case(rng, n_videos=30, n_classes=4, n_pred=600, zero_length=True):
    """Overlapping GT, several GT of a class per video, jittered and random predictions,
    predictions on unknown videos and unknown labels, and zero-length segments."""
    classes = [f"c{i}" for i in range(n_classes)]
    gt = []
    for v in range(n_videos):
        for _ in range(rng.integers(1, 5)):
            s = float(rng.uniform(0, 80))
            gt.append((f"v{v}", s, s + float(rng.uniform(0.5, 30)), classes[rng.integers(n_classes)]))
    if zero_length:
        gt += [("v0", 5.0, 5.0, "c0"), ("v1", 7.0, 7.0, "c1"), ("v1", 7.0, 7.0, "c1")]
    pred = []
    for _ in range(n_pred):
        kind = rng.random()
        if kind < 0.5:  # near a GT, maybe with the wrong label
            video, s, e, label = gt[rng.integers(len(gt))]
            s, e = sorted((s + rng.normal(0, 3), e + rng.normal(0, 3)))
            if rng.random() < 0.2:
                label = classes[rng.integers(n_classes)]
        elif kind < 0.95:
            video, label = f"v{rng.integers(n_videos + 3)}", classes[rng.integers(n_classes)]
            s = rng.uniform(0, 90)
            e = s + rng.uniform(0, 30)
        else:
            video, label, s, e = f"v{rng.integers(n_videos)}", "no-such-class", 0.0, 10.0
        pred.append((video, float(s), float(e), label, float(rng.random())))
    if zero_length:
        pred += [("v0", 5.0, 5.0, "c0", 0.5), ("v1", 3.0, 3.0, "c1", 0.25)]
    return gt, pred


# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------

def test_issue_example():
    # GT [0,10] in a, [20,30] in b. At 0.5: TP, FP (its GT is taken), TP (tIoU 5/10) -> AP = 1/2 + 1/2 * 2/3.
    gt = [("a", 0, 10, "x"), ("b", 20, 30, "x")]
    pred = [("a", 0, 10, "x", 0.9), ("a", 1, 11, "x", 0.8), ("b", 20, 25, "x", 0.7)]
    ap = per_class_ap(gt, pred, [0.5, 0.75, 0.9])["x"]
    assert ap == pytest.approx([5 / 6, 0.5, 0.5], abs=1e-12)


@pytest.mark.parametrize("tp, n_gt, expected", [
    ([1, 0, 1], 2, 5 / 6),
    ([0, 1], 1, 0.5),
    ([1, 1], 3, 2 / 3),  # recall stops at 2/3: the rest of the curve has precision 0
    ([0, 1, 1, 0, 1], 4, 0.25 * 2 / 3 + 0.25 * 2 / 3 + 0.25 * 0.6),  # precision made monotone from the right
    ([], 2, 0.0),
])
def test_average_precision_hand_computed(tp, n_gt, expected):
    ap = average_precision(np.array([tp], dtype=bool).reshape(1, -1), n_gt)
    assert ap.shape == (1,)
    assert ap[0] == pytest.approx(expected, abs=1e-12)


def test_average_precision_with_normalised_precision():
    # P_N = R·N / (R·N + FP). N = 1, 3 GT: TP, FP, TP -> R = [1/3, 1/3, 2/3], P_N = [1, 1/4, 2/5]
    # -> AP_N = 1/3 · 1 + 1/3 · 2/5. With N = n_gt it is the plain AP.
    tp = np.array([[1, 0, 1]], dtype=bool)
    assert average_precision(tp, 3, n_norm=1) == pytest.approx([1 / 3 + 2 / 15], abs=1e-12)
    assert average_precision(tp, 3, n_norm=3) == pytest.approx(average_precision(tp, 3), abs=1e-12)


def test_average_precision_all_thresholds_at_once():
    tp = np.array([[1, 0, 1], [1, 0, 0]], dtype=bool)
    assert average_precision(tp, 2) == pytest.approx([5 / 6, 0.5], abs=1e-12)


def test_matched_gt_is_skipped_not_a_false_positive():
    # Second prediction: its best GT (0.95) is taken, the next one (9/9.5) is free and above 0.5.
    gt = [("a", 0, 10, "x"), ("a", 0, 9, "x")]
    pred = [("a", 0, 10, "x", 0.9), ("a", 0, 9.5, "x", 0.8)]
    assert per_class_ap(gt, pred, [0.5])["x"] == pytest.approx([1.0])


def test_gt_below_threshold_ends_the_search():
    # Second prediction overlaps the taken GT at 1.0 and the free one at 1/3 < 0.5: false positive.
    gt = [("a", 0, 10, "x"), ("a", 5, 15, "x")]
    pred = [("a", 0, 10, "x", 0.9), ("a", 0, 10, "x", 0.8)]
    assert per_class_ap(gt, pred, [0.5, 0.3])["x"] == pytest.approx([0.5, 1.0])


@pytest.mark.parametrize("gt_order, expected", [(("A", "B"), 1.0), (("B", "A"), 0.5)])
def test_tied_tiou_takes_the_later_gt(gt_order, expected):
    # [2.5, 12.5] overlaps A=[0,10] and B=[5,15] at exactly 0.6: the later GT in file order is taken.
    # If it takes B, the next prediction [0,10] gets A (TP); if it takes A, [0,10] is left with B at 1/3.
    segments = {"A": (0.0, 10.0), "B": (5.0, 15.0)}
    gt = [("a", *segments[name], "x") for name in gt_order]
    pred = [("a", 2.5, 12.5, "x", 0.9), ("a", 0, 10, "x", 0.8)]
    assert per_class_ap(gt, pred, [0.5])["x"] == pytest.approx([expected])
    assert reference_detection_ap(gt, pred, [0.5])["x"] == pytest.approx([expected])


@pytest.mark.parametrize("first_in_file, expected", [("hit", 1.0), ("miss", 0.5)])
def test_tied_scores_keep_file_order(first_in_file, expected):
    hit, miss = ("a", 0, 10, "x", 0.5), ("a", 50, 60, "x", 0.5)
    pred = [hit, miss] if first_in_file == "hit" else [miss, hit]
    assert per_class_ap([("a", 0, 10, "x")], pred, [0.5])["x"] == pytest.approx([expected])


def test_zero_length_segments_follow_the_official_0_over_0():
    # 0/0 = nan counts as a match at every threshold, even for two zero-length segments at
    # different times; a zero-length prediction inside a normal GT has tIoU 0.
    thresholds = [0.5, 0.95]
    same_point = per_class_ap([("a", 5, 5, "x")], [("a", 5, 5, "x", 0.9)], thresholds)["x"]
    other_point = per_class_ap([("a", 5, 5, "x")], [("a", 8, 8, "x", 0.9)], thresholds)["x"]
    inside = per_class_ap([("a", 0, 10, "x")], [("a", 5, 5, "x", 0.9)], thresholds)["x"]
    assert same_point == [1.0, 1.0] and other_point == [1.0, 1.0] and inside == [0.0, 0.0]


def test_tiou_is_nan_for_any_two_zero_length_segments():
    a = np.array([[5.0, 5.0], [0.0, 10.0]])
    b = np.array([[5.0, 5.0], [8.0, 8.0], [5.0, 15.0]])
    expected = [[np.nan, np.nan, 0.0], [0.0, 0.0, 1 / 3]]
    np.testing.assert_array_equal(tiou_matrix(a, b), expected)
    np.testing.assert_array_equal(paired_tiou(a[:, :1], a[:, 1:], b[:, 0], b[:, 1]), expected)


def test_zero_length_gt_is_visited_before_a_perfect_match():
    # The nan GT sorts first, so the zero-length prediction locks it and the normal GT stays free.
    gt = [("a", 0, 10, "x"), ("a", 4, 4, "x")]
    pred = [("a", 4, 4, "x", 0.9), ("a", 0, 10, "x", 0.8)]
    assert per_class_ap(gt, pred, [0.5])["x"] == pytest.approx([1.0])


def test_prediction_on_a_video_without_gt_is_a_false_positive():
    gt = [("a", 0, 10, "x"), ("b", 0, 10, "y")]
    # "zzz" is not in the evaluated set at all, "b" has GT of another class only
    pred = [("zzz", 0, 10, "x", 0.9), ("b", 0, 10, "x", 0.8), ("a", 0, 10, "x", 0.7)]
    result = evaluate_detection(gt_table(gt), pred_table(pred), [0.5])
    assert result.per_class["x"] == pytest.approx([1 / 3])
    assert result.meta["predictions_on_videos_without_gt"] == 1


def test_labels_without_gt_are_ignored_and_counted():
    gt = [("a", 0, 10, "x")]
    pred = [("a", 0, 10, "x", 0.5)]
    noise = [("a", 0, 10, "ghost", 0.9), ("b", 3, 4, "ghost", 0.8), ("a", 0, 10, "phantom", 0.7)]
    clean = evaluate_detection(gt_table(gt), pred_table(pred), [0.5])
    noisy = evaluate_detection(gt_table(gt), pred_table(pred + noise), [0.5])
    assert list(noisy.per_class) == ["x"]
    assert noisy.map == pytest.approx(clean.map) and noisy.map == pytest.approx([1.0])
    assert noisy.meta["predictions_ignored_label"] == 3 and noisy.meta["ignored_labels"] == 2


def test_map_is_the_plain_mean_over_classes_with_gt():
    # y has GT but no prediction (AP 0); z is predicted but has no GT (left out).
    gt = [("a", 0, 10, "x"), ("a", 20, 30, "y")]
    pred = [("a", 0, 10, "x", 0.9), ("a", 20, 30, "z", 0.8)]
    result = evaluate_detection(gt_table(gt), pred_table(pred), [0.5, 0.7])
    assert result.per_class["y"] == pytest.approx([0, 0])
    assert result.map == pytest.approx([0.5, 0.5])
    assert result.average == pytest.approx(0.5)


def test_video_set_leaves_out_gt_and_predictions_elsewhere():
    gt = [("a", 0, 10, "x"), ("b", 0, 10, "x")]
    pred = [("b", 50, 60, "x", 0.9), ("a", 0, 10, "x", 0.8)]
    everywhere = evaluate_detection(gt_table(gt), pred_table(pred), [0.5])
    only_a = evaluate_detection(gt_table(gt), pred_table(pred), [0.5], videos=["a"])
    assert everywhere.map == pytest.approx([0.25])  # FP then TP, recall 1/2
    assert only_a.map == pytest.approx([1.0])
    assert only_a.meta["predictions_outside_video_set"] == 1 and only_a.meta["gt_instances"] == 1


def test_to_json_layout():
    gt = [("a", 0, 10, "x"), ("b", 20, 30, "x")]
    pred = [("a", 0, 10, "x", 0.9), ("a", 1, 11, "x", 0.8), ("b", 20, 25, "x", 0.7)]
    out = json.loads(json.dumps(evaluate_detection(gt_table(gt), pred_table(pred), ACTIVITYNET_TIOU).to_json()))
    assert list(out["tiou"]) == ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85", "0.9", "0.95"]
    assert out["tiou"]["0.5"] == pytest.approx(5 / 6)
    assert out["average"] == pytest.approx((5 / 6 + 9 * 0.5) / 10)
    assert out["per_class"]["x"]["average"] == pytest.approx(out["average"])
    assert out["meta"]["gt_instances"] == 2


def test_no_predictions_scores_zero():
    result = evaluate_detection(gt_table([("a", 0, 10, "x")]), pred_table([]), [0.5, 0.7])
    assert result.map.tolist() == [0.0, 0.0] and result.meta["predictions_evaluated"] == 0


def test_no_gt_is_an_error():
    with pytest.raises(ValueError, match="no ground-truth"):
        evaluate_detection(gt_table([]), pred_table([("a", 0, 1, "x", 0.5)]))


# ---------------------------------------------------------------------------------------------
# Against the slow reference
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_random_cases_match_the_reference(seed):
    rng = np.random.default_rng(seed)
    gt, pred = random_case(rng)
    thresholds = list(ACTIVITYNET_TIOU) if seed % 2 else list(THUMOS_TIOU)
    ours = per_class_ap(gt, pred, thresholds)
    reference = reference_detection_ap(gt, pred, thresholds)
    assert ours.keys() == reference.keys()
    for name in reference:
        np.testing.assert_allclose(ours[name], reference[name], rtol=0, atol=1e-12, err_msg=name)
    matched = match_predictions(gt_table(gt), pred_table(pred), thresholds)
    assert matched.tolist() == reference_matching(gt, pred, thresholds)


def test_reference_detects_a_wrong_matching():
    # Guard that the comparison has teeth: one flipped prediction label changes some AP.
    rng = np.random.default_rng(0)
    gt, pred = random_case(rng, zero_length=False)
    video, s, e, label, score = pred[0]
    changed = pred[:]
    changed[0] = (video, s, e, "c3" if label != "c3" else "c2", score)
    assert reference_detection_ap(gt, pred, [0.5]) != reference_detection_ap(gt, changed, [0.5])


@pytest.fixture(scope="module")
def anet(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_annotations(shared_data / "activitynet" / "activity_net.v1-3.reconstructed.json")


def test_real_gt_as_predictions_scores_one(anet):
    gt = SegmentTable.ground_truth(anet, "validation")
    assert (gt.t0 == gt.t1).sum() == 3  # zero-length GT: they match only through the official 0/0 rule
    scores = np.random.default_rng(0).permutation(len(gt)) / len(gt)  # distinct scores
    pred = SegmentTable(gt.video, gt.t0, gt.t1, gt.label, scores.astype(np.float64))
    result = evaluate_detection(gt, pred, ACTIVITYNET_TIOU)
    assert result.map == pytest.approx(np.ones(10), abs=1e-12)
    assert result.meta["classes"] == 200 and result.meta["gt_instances"] == 7654


def test_real_gt_perturbed_matches_the_reference(anet):
    rng = np.random.default_rng(1)
    classes = list(anet.classes[:40])
    gt = SegmentTable.ground_truth(anet, "validation", classes=classes)
    n = len(gt)
    rows = []
    for copy in range(3):  # jittered copies of the GT, some relabelled
        shift = rng.normal(0, 0.1, size=(n, 2)) * (gt.t1 - gt.t0)[:, None]
        t0 = np.minimum(gt.t0 + shift[:, 0], gt.t1 + shift[:, 1])
        t1 = np.maximum(gt.t0 + shift[:, 0], gt.t1 + shift[:, 1])
        labels = np.where(rng.random(n) < 0.2, rng.choice(classes, n), gt.label)
        rows += list(zip(gt.video, t0, t1, labels, rng.random(n)))
    rows += [(f"v_{v}", 0.0, 30.0, "Archery", 0.1 * rng.random()) for v in gt.video[:50]]  # unknown ids
    rows = [(str(v), float(a), float(b), str(c), float(s)) for v, a, b, c, s in rows]
    gt_rows = [(str(v), float(a), float(b), str(c)) for v, a, b, c in zip(gt.video, gt.t0, gt.t1, gt.label)]
    ours = evaluate_detection(gt, pred_table(rows), ACTIVITYNET_TIOU)
    reference = reference_detection_ap(gt_rows, rows, ACTIVITYNET_TIOU)
    assert 0.2 < ours.average < 0.95  # a case where matching decisions matter
    for name in reference:
        np.testing.assert_allclose(ours.per_class[name], reference[name], rtol=0, atol=1e-12, err_msg=name)


# ---------------------------------------------------------------------------------------------
# tIoU sets and prediction files
# ---------------------------------------------------------------------------------------------

def test_parse_tiou_forms():
    np.testing.assert_array_equal(parse_tiou("0.5:0.95:10"), ACTIVITYNET_TIOU)
    np.testing.assert_array_equal(parse_tiou("0.3:0.7:5"), THUMOS_TIOU)
    np.testing.assert_array_equal(parse_tiou("0.3,0.4,0.5"), [0.3, 0.4, 0.5])
    np.testing.assert_array_equal(parse_tiou("0.5"), [0.5])


@pytest.mark.parametrize("text", ["0.5:0.95", "0.5:0.95:0", "0.5:0.95:x", "a,b", "0,0.5", "0.5,1.2", "0.5,0.5"])
def test_parse_tiou_rejects(text):
    with pytest.raises(InputError, match="tIoU set"):
        parse_tiou(text)


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_load_predictions_resolves_v_prefix(tmp_path, anet):
    vid = next(v.id for v in anet.subset("validation"))
    path = write_json(tmp_path / "p.json", {"results": {
        f"v_{vid}": [{"segment": [1, 2.5], "label": "Archery", "score": 0.5}],
        "unknown": [{"segment": [0, 1], "label": "Archery", "score": 1}],
    }})
    table = load_predictions(path, anet)
    assert list(table.video) == [vid, "unknown"]
    assert list(table.t0) == [1.0, 0.0] and list(table.t1) == [2.5, 1.0] and list(table.score) == [0.5, 1.0]
    assert list(load_predictions(path).video) == [f"v_{vid}", "unknown"]


@pytest.mark.parametrize("content, message", [
    ("{\"results\": {", "malformed JSON"),
    (json.dumps({"res": {}}), "'results'"),
    (json.dumps({"results": {"vid7": {"segment": [0, 1]}}}), "video vid7: expected a list"),
    (json.dumps({"results": {"vid7": [{"segment": [0, 1], "score": 0.5}]}}), "video vid7 .*: prediction without"),
    (json.dumps({"results": {"vid7": [{"segment": [0], "label": "x", "score": 0.5}]}}), "video vid7 .*: prediction without"),
    ('{"results": {"vid7": [{"segment": [0, 1], "label": "x", "score": NaN}]}}', "video vid7 .*: score is not a finite"),
    (json.dumps({"results": {"vid7": [{"segment": [0, "1"], "label": "x", "score": 1}]}}), "video vid7 .*: segment end"),
    (json.dumps({"results": {"vid7": [{"segment": [3, 1], "label": "x", "score": 1}]}}), "video vid7 .*: .*negative length"),
    (json.dumps({"results": {"vid7": [{"segment": [0, 1], "label": "", "score": 1}]}}), "video vid7 .*: label"),
])
def test_load_predictions_errors_name_file_and_video(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(PredictionError, match=message) as error:
        load_predictions(path)
    assert isinstance(error.value, InputError)  # the CLI prints it as one line, without a traceback
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_load_proposals_without_labels(tmp_path):
    path = write_json(tmp_path / "p.json", {"results": {"a": [{"segment": [0, 1], "score": 0.5}]}})
    assert list(load_predictions(path, require_label=False).label) == [""]
    with pytest.raises(PredictionError):
        load_predictions(path)


# ---------------------------------------------------------------------------------------------
# The `evaluate` command
# ---------------------------------------------------------------------------------------------

def run_cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="benchmark")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = run_command(args.func, args)  # as `python -m benchmark` runs it
    out, err = capsys.readouterr()
    return code, out, err


def small_gt_file(tmp_path):
    return write_json(tmp_path / "gt.json", {"version": "VERSION 1.3", "taxonomy": [], "database": {
        "a": {"subset": "validation", "duration": 40.0, "annotations": [{"segment": [0, 10], "label": "x"}]},
        "b": {"subset": "validation", "duration": 40.0, "annotations": [
            {"segment": [20, 30], "label": "x"}, {"segment": [0, 5], "label": "y"}]},
        "c": {"subset": "training", "duration": 40.0, "annotations": [{"segment": [0, 5], "label": "z"}]},
    }})


def small_pred_file(tmp_path):
    return write_json(tmp_path / "pred.json", {"results": {
        "v_a": [{"segment": [0, 10], "label": "x", "score": 0.9}, {"segment": [1, 11], "label": "x", "score": 0.8}],
        "b": [{"segment": [20, 25], "label": "x", "score": 0.7}, {"segment": [0, 5], "label": "z", "score": 0.6}],
    }})


def test_cli_evaluate_json(tmp_path, capsys):
    classes = tmp_path / "unseen.list"
    classes.write_text("x\n")
    code, out, _ = run_cli(["evaluate", "--gt", str(small_gt_file(tmp_path)), "--pred", str(small_pred_file(tmp_path)),
                            "--subset", "validation", "--tiou", "0.5,0.75,0.9", "--classes", str(classes), "--json"], capsys)
    assert code == 0
    out = json.loads(out)
    assert out["tiou"] == pytest.approx({"0.5": 5 / 6, "0.75": 0.5, "0.9": 0.5})
    assert list(out["per_class"]) == ["x"]
    assert out["meta"]["predictions_ignored_label"] == 1


def test_cli_evaluate_table_uses_the_activitynet_set_by_default(tmp_path, capsys):
    code, out, _ = run_cli(["evaluate", "--gt", str(small_gt_file(tmp_path)), "--pred", str(small_pred_file(tmp_path)),
                            "--subset", "validation"], capsys)
    assert code == 0
    assert "0.95" in out and "Avg" in out
    # x: 5/6 at 0.5 and 0.5 above; y: no prediction -> 0; mAP@0.5 = (5/6 + 0) / 2
    assert "41.67" in out


@pytest.mark.parametrize("make_args, message", [
    (lambda gt, pred, tmp: ["--classes", str(write_lines(tmp / "c.list", ["x", "Nope"]))], "unknown class"),
    (lambda gt, pred, tmp: ["--tiou", "0.5:0.9"], "tIoU set"),
    (lambda gt, pred, tmp: ["--pred", str(tmp / "missing.json")], "file not found"),
])
def test_cli_evaluate_errors_are_one_line(tmp_path, capsys, make_args, message):
    gt, pred = small_gt_file(tmp_path), small_pred_file(tmp_path)
    argv = ["evaluate", "--gt", str(gt), "--pred", str(pred), "--subset", "validation"] + make_args(gt, pred, tmp_path)
    code, out, err = run_cli(argv, capsys)
    assert code != 0 and out == ""
    assert message in err and err.count("\n") == 1


def test_cli_evaluate_video_list_resolves_ids(tmp_path, capsys):
    videos = write_lines(tmp_path / "videos.list", ["v_a"])
    code, out, _ = run_cli(["evaluate", "--gt", str(small_gt_file(tmp_path)), "--pred", str(small_pred_file(tmp_path)),
                            "--subset", "validation", "--tiou", "0.5", "--videos", str(videos), "--json"], capsys)
    out = json.loads(out)
    # only video a: its one GT of x is found first (AP 1); class y has no GT left
    assert code == 0 and out["tiou"] == {"0.5": 1.0} and list(out["per_class"]) == ["x"]
    assert out["meta"]["predictions_outside_video_set"] == 2


def test_cli_real_thumos_gt_as_predictions_uses_the_thumos_set(shared_data, tmp_path, capsys):
    gt_path = shared_data / "thumos14" / "thumos14.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        annotations = load_annotations(gt_path)
    results = {}
    for rank, (video, instance) in enumerate((v.id, i) for v in annotations.subset("Test") for i in v.instances):
        results.setdefault(video, []).append(
            {"segment": [instance.start, instance.end], "label": instance.label, "score": 1 / (rank + 2)})
    pred = write_json(tmp_path / "pred.json", {"results": results})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, out, _ = run_cli(["evaluate", "--gt", str(gt_path), "--pred", str(pred), "--subset", "Test", "--json"], capsys)
    out = json.loads(out)
    assert code == 0 and out["tiou"] == {"0.3": 1.0, "0.4": 1.0, "0.5": 1.0, "0.6": 1.0, "0.7": 1.0}
    assert out["meta"]["classes"] == 20


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_evaluation_cli_does_not_import_torch():
    code = "import sys, benchmark.evaluation.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
