"""Diagnostics (DETAD-style error analysis, oracles, localisation noise) and their figures."""
import math
from collections import Counter

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from benchmark.evaluation import diagnostics as dg
from benchmark.evaluation import plots
from benchmark.evaluation.detection import ACTIVITYNET_TIOU, evaluate_detection, match_predictions
from benchmark.evaluation.segments import SegmentTable, tiou_matrix


def table(rows, with_score=True):
    return SegmentTable.from_rows(rows, with_score=with_score)


# ---------------------------------------------------------------------------------------------
# False-positive types: one hand-made prediction per category

GT = table([
    ("v1", 10, 20, "A"), ("v1", 50, 60, "B"),
    ("v3", 0, 10, "A"), ("v3", 2, 12, "B"),
    ("v4", 0, 10, "A"), ("v4", 0, 10, "B"),  # one segment with two labels
], with_score=False)

# (video, t0, t1, label, score, expected outcome at tIoU 0.5, expected outcome at tIoU 0.3)
CASES = [
    ("v1", 10, 20, "A", 0.99, "true positive", "true positive"),
    ("v1", 10, 19, "A", 0.90, "double detection", "double detection"),  # tIoU 0.9 with the matched A
    ("v1", 10, 20, "B", 0.90, "wrong label", "wrong label"),  # tIoU 1 with A
    ("v1", 10, 14, "A", 0.80, "localisation", "double detection"),  # tIoU 0.4 with A
    ("v1", 15, 25, "B", 0.80, "confusion", "wrong label"),  # tIoU 1/3 with A, 0 with B
    ("v1", 30, 40, "A", 0.70, "background", "background"),  # overlaps nothing
    ("v1", 20.5, 29.5, "A", 0.70, "background", "background"),  # tIoU 0 < 0.1
    ("v1", 19, 29, "A", 0.70, "background", "background"),  # tIoU 1/19 < 0.1
    ("v9", 0, 5, "A", 0.95, "background", "background"),  # video without GT
    # DETAD precedence: the most-overlapping GT decides, even of another class.
    ("v3", 0, 10, "A", 0.99, "true positive", "true positive"),
    ("v3", 2, 12, "A", 0.90, "wrong label", "wrong label"),  # A 2/3, B 1.0
    # exact tie between a same-class and an other-class GT: the same class wins
    ("v4", 0, 10, "A", 0.99, "true positive", "true positive"),
    ("v4", 0, 10, "A", 0.90, "double detection", "double detection"),
]
PRED = table([c[:5] for c in CASES])


def test_each_prediction_gets_its_detad_category():
    thresholds = [0.5, 0.3]
    matched = match_predictions(GT, PRED, thresholds)
    outcome = dg.error_types(GT, PRED, matched, thresholds)
    got = [(dg.OUTCOMES[a], dg.OUTCOMES[b]) for a, b in outcome.T]
    assert got == [(c[5], c[6]) for c in CASES]


def test_min_tiou_moves_the_background_boundary():
    matched = match_predictions(GT, PRED, [0.5])
    outcome = dg.error_types(GT, PRED, matched, [0.5], min_tiou=0.05)
    assert dg.OUTCOMES[outcome[0, 7]] == "localisation"  # tIoU 1/19 ≈ 0.053


def test_matching_locks_a_gt_and_takes_the_later_one_on_tiou_ties():
    gt = table([("v", 0, 10, "A"), ("v", 20, 30, "A"), ("v", 0, 10, "A")], with_score=False)
    pred = table([("v", 0, 10, "A", 0.9), ("v", 0, 10, "A", 0.8), ("v", 0, 10, "A", 0.7), ("v", 19, 30, "A", 0.6)])
    matched = match_predictions(gt, pred, [0.5, 0.95])
    assert matched.tolist() == [[2, 0, -1, 1], [2, 0, -1, -1]]


# ---------------------------------------------------------------------------------------------
# mAP_N


def test_normalised_map_by_hand():
    # N = 4 GT / 2 classes = 2. Class A (1 GT): FP, TP -> P_N = [0, 2/3] -> AP_N = 2/3.
    # Class B (3 GT): TP, FP, TP -> R = [1/3, 1/3, 2/3], P_N = [1, 2/5, 4/7] -> AP_N = 1/3 + 1/3·4/7.
    gt = table([("v1", 0, 10, "A"), ("v2", 0, 10, "B"), ("v2", 20, 30, "B"), ("v2", 40, 50, "B")], with_score=False)
    pred = table([
        ("v1", 30, 40, "A", 0.9), ("v1", 0, 10, "A", 0.8),
        ("v2", 0, 10, "B", 0.9), ("v2", 60, 70, "B", 0.8), ("v2", 20, 30, "B", 0.7),
        ("v2", 0, 10, "C", 0.99),  # a label without GT is ignored
    ])
    result = dg.normalised_map(gt, pred, [0.5])
    assert result.n_norm == 2
    assert result.classes == ("A", "B")
    np.testing.assert_allclose(result.ap, [[2 / 3, 11 / 21]])
    assert result.average == pytest.approx(25 / 42)
    # plain AP would be 1/2 and 5/9: the normalisation is what differs
    plain = evaluate_detection(gt, pred, [0.5])
    np.testing.assert_allclose(plain.map, [(1 / 2 + 5 / 9) / 2])


def test_normalised_map_equals_map_when_every_class_has_n_instances():
    rng = np.random.default_rng(0)
    gt_rows, pred_rows = [], []
    for v in range(6):
        for c in "AB":
            start = rng.uniform(0, 50)
            gt_rows.append((f"v{v}", start, start + rng.uniform(5, 30), c))
            for _ in range(4):
                s = start + rng.normal(0, 5)
                pred_rows.append((f"v{v}", s, s + rng.uniform(5, 30), c, rng.random()))
    gt, pred = table(gt_rows, with_score=False), table(pred_rows)
    ours = dg.normalised_map(gt, pred, [0.3, 0.5, 0.7])
    official = evaluate_detection(gt, pred, [0.3, 0.5, 0.7])
    np.testing.assert_allclose(ours.map, official.map)
    assert 0 < ours.average < 1


# ---------------------------------------------------------------------------------------------
# False-positive profile


def test_profile_groups_and_gain_by_hand():
    # One class, N = N_A = 1. Ranked: background FP, TP, double detection.
    gt = table([("v", 0, 10, "A")], with_score=False)
    pred = table([("v", 50, 60, "A", 0.9), ("v", 0, 10, "A", 0.8), ("v", 1, 10, "A", 0.7), ("v", 40, 45, "A", 0.1)])
    profile = dg.false_positive_profile(gt, pred, [0.5], groups=3)
    assert len(profile.predictions) == 3  # top-3G = 3 predictions, the 4th is dropped
    assert list(profile.fractions.index) == ["1G", "2G", "3G"]
    assert profile.fractions.loc["1G", "background"] == 1
    assert profile.fractions.loc["2G", "true positive"] == 1
    assert profile.fractions.loc["3G", "double detection"] == 1
    # base: P_N = [0, 1/2, 1/3] at R = [0, 1, 1] -> 1/2; without background -> 1; without doubles -> 1/2
    assert profile.average_map_n == pytest.approx(0.5)
    assert profile.gain["background"] == pytest.approx(0.5)
    assert profile.gain["double detection"] == pytest.approx(0.0)
    assert set(profile.gain) == set(dg.ERROR_TYPES)


def test_profile_rows_are_shares_and_empty_groups_are_nan():
    # class A: 3 GT, 11 predictions (ranks 0-10 -> 1G..4G); class B: 3 GT, 2 predictions
    profile = dg.false_positive_profile(GT, PRED, [0.5, 0.3], groups=5)
    assert len(profile.predictions) == len(PRED)
    np.testing.assert_allclose(profile.fractions.iloc[:4].sum(axis=1), 1.0)
    assert profile.fractions.loc["5G"].isna().all()
    # 1G: A's 3 best (the TP of v1, v3, v4, all at 0.99) and B's 2 (wrong label; confusion at 0.5
    # but wrong label at 0.3), shares averaged over the 2 thresholds
    assert profile.fractions.loc["1G", "true positive"] == pytest.approx(3 / 5)
    assert profile.fractions.loc["1G", "wrong label"] == pytest.approx(1.5 / 5)
    assert profile.fractions.loc["1G", "confusion"] == pytest.approx(0.5 / 5)


def test_limit_predictions_keeps_top_factor_times_gt_count_per_class():
    kept = dg.limit_predictions(GT, PRED, 1)  # A: 3 GT, B: 3 GT
    for label in "AB":
        scores = np.sort(PRED.score[PRED.label == label])[::-1][:3]
        np.testing.assert_array_equal(np.sort(kept.score[kept.label == label])[::-1], scores)


# ---------------------------------------------------------------------------------------------
# Sensitivity


def test_sensitivity_bins_by_hand():
    gt = table([("v1", 0, 10, "A"), ("v1", 20, 70, "A")], with_score=False)
    pred = table([("v1", 0, 10, "A", 0.9)])
    result = dg.sensitivity(gt, pred, [0.5], durations={"v1": 100.0})
    rows = result.table.set_index(["characteristic", "bin"])
    # coverage 0.1 -> XS, 0.5 -> M; length 10 s -> XS, 50 s -> S; both in a 2-instance video -> S
    assert rows.loc[("coverage", "XS"), ["n_gt", "map_n", "fn_rate"]].tolist() == [1, 1.0, 0.0]
    assert rows.loc[("coverage", "M"), ["n_gt", "map_n", "fn_rate"]].tolist() == [1, 0.0, 1.0]
    assert rows.loc[("length", "S"), "map_n"] == 0.0
    assert rows.loc[("num_instances", "S"), "n_gt"] == 2
    assert np.isnan(rows.loc[("coverage", "L"), "map_n"]) and rows.loc[("coverage", "L"), "n_gt"] == 0
    # over all GT, N = 2: R = 1/2 at one TP, P_N = 1 -> AP_N = 1/2
    assert result.average_map_n == pytest.approx(0.5)


def test_sensitivity_thumos_bins_and_unknown_duration():
    gt = table([("v1", 0, 3, "A"), ("v2", 0, 10, "A")], with_score=False)
    pred = table([("v1", 0, 3, "A", 0.9)])
    result = dg.sensitivity(gt, pred, [0.5], durations={"v1": 100.0, "v2": None}, bins=dg.SENSITIVITY_BINS["thumos14"])
    rows = result.table.set_index(["characteristic", "bin"])
    assert rows.loc[("coverage", "S"), "n_gt"] == 1  # 0.03 in (0.02, 0.04]; v2 has no duration
    assert rows.xs("coverage")["n_gt"].sum() == 1
    assert rows.loc[("length", "XS"), "n_gt"] == 1 and rows.loc[("length", "M"), "n_gt"] == 1  # 3 s, 10 s


@pytest.mark.parametrize("false_positives, fn_rate", [(18, 0.0), (20, 1.0)])
def test_false_negative_needs_normalised_precision_above_five_percent(false_positives, fn_rate):
    # One GT, N = 1: a TP after f false positives has P_N = 1 / (1 + f): 1/19 > 0.05 >= 1/21.
    gt = table([("v", 0, 10, "A")], with_score=False)
    pred = table([("v", 100 + i, 101 + i, "A", 1 - i / 100) for i in range(false_positives)] + [("v", 0, 10, "A", 0.001)])
    result = dg.sensitivity(gt, pred, [0.5], durations={"v": 1000.0})
    assert result.table.query("characteristic == 'length' and bin == 'XS'")["fn_rate"].item() == fn_rate


def test_num_instances_counts_every_class_in_the_video():
    chars = dg.gt_characteristics(GT, {"v1": 100.0})
    assert chars["num_instances"].tolist() == [2, 2, 2, 2, 2, 2]
    np.testing.assert_allclose(chars["coverage"][:2], [0.1, 0.1])
    assert chars["coverage"][2:].isna().all()


# ---------------------------------------------------------------------------------------------
# Oracle labels


def test_oracle_labels_take_the_best_overlapping_gt_label():
    gt = table([("v1", 0, 10, "A"), ("v1", 8, 30, "B"), ("v2", 0, 10, "C"), ("v2", 0, 10, "D")], with_score=False)
    pred = table([
        ("v1", 0, 9, "B", 0.9),  # A tIoU 0.9 > B 1/30 -> A
        ("v1", 9, 30, "A", 0.8),  # B wins
        ("v1", 40, 50, "A", 0.7),  # no overlap: keeps A
        ("v2", 0, 10, "A", 0.6),  # two labels on the best segment: one copy per label
        ("v5", 0, 10, "B", 0.5),  # video without GT: keeps B
    ])
    out = dg.oracle_labels(pred, gt)
    assert out.label.tolist() == ["A", "B", "A", "C", "D", "B"]
    assert out.score.tolist() == [0.9, 0.8, 0.7, 0.6, 0.6, 0.5]
    assert out.video.tolist() == ["v1", "v1", "v1", "v2", "v2", "v5"]
    np.testing.assert_array_equal(out.t0, [0, 9, 40, 0, 0, 0])


def test_oracle_labels_emit_each_tied_class_once_in_gt_file_order():
    gt = table([("v", 0, 10, "C"), ("v", 0, 10, "D"), ("v", 0, 10, "C"), ("v", 0, 10, "A"), ("v", 20, 30, "B")],
               with_score=False)
    pred = table([("v", 0, 9, "B", 0.9), ("v", 20, 29, "A", 0.8), ("v", 5, 5, "B", 0.7)])
    out = dg.oracle_labels(pred, gt)
    assert out.label.tolist() == ["C", "D", "A", "B", "B"]  # tIoU 0 (a point inside [0, 10]): keeps B
    assert out.score.tolist() == [0.9, 0.9, 0.9, 0.8, 0.7]


def test_oracle_labels_never_lower_map_of_a_confused_detector():
    gt = table([("v1", 0, 10, "A"), ("v2", 0, 10, "B")], with_score=False)
    pred = table([("v1", 1, 10, "B", 0.9), ("v2", 0, 9, "A", 0.8), ("v2", 50, 60, "A", 0.7)])
    before = evaluate_detection(gt, pred, [0.5])
    after = evaluate_detection(gt, dg.oracle_labels(pred, gt), [0.5])
    assert before.average == 0.0 and after.average == 1.0


# ---------------------------------------------------------------------------------------------
# Localisation noise


@pytest.mark.parametrize("level", [1.0, 0.9, 0.75, 0.5, 0.3])
def test_jitter_hits_the_tiou_exactly_without_clipping(level):
    rng = np.random.default_rng(1)
    start = rng.uniform(100, 200, 400)
    gt = table([(f"v{i}", s, s + rng.uniform(1, 50), "A") for i, s in enumerate(start)], with_score=False)
    out = dg.jitter_to_tiou(gt, level, rng)
    np.testing.assert_allclose(np.diag(tiou_matrix(out.segments, gt.segments)), level, rtol=0, atol=1e-12)
    assert out.label.tolist() == gt.label.tolist() and out.video.tolist() == gt.video.tolist()
    ratio = (out.t1 - out.t0) / (gt.t1 - gt.t0)
    if level < 1:  # a mix: some grow, some shrink, some leave the source on each side
        assert (ratio > 1.05).any() and (ratio < 0.95).any()
        assert (out.t1 > gt.t1).any() and (out.t0 < gt.t0).any()
    else:
        np.testing.assert_allclose(out.segments, gt.segments)


def test_jitter_stays_inside_the_video_and_stays_exact():
    rng = np.random.default_rng(2)
    gt = table([("a", 0, 10, "A"), ("b", 0, 10, "A"), ("c", 5, 10, "A"), ("d", 0, 0, "A")] * 50, with_score=False)
    durations = {"a": 10.0, "b": 12.0, "c": 10.0, "d": 5.0}
    out = dg.jitter_to_tiou(gt, 0.6, rng, durations)
    end = np.array([durations[v] for v in gt.video])
    assert (out.t0 >= -1e-12).all() and (out.t1 <= end + 1e-12).all()
    moved = gt.t1 > gt.t0
    np.testing.assert_allclose(np.diag(tiou_matrix(out.segments, gt.segments))[moved], 0.6, atol=1e-12)
    np.testing.assert_array_equal(out.segments[~moved], gt.segments[~moved])  # zero length: unchanged
    whole = gt.video == "a"  # the segment is the whole video: only a shrink fits
    np.testing.assert_allclose((out.t1 - out.t0)[whole], 6.0)


def test_jitter_rejects_levels_outside_zero_one():
    with pytest.raises(ValueError, match="level"):
        dg.jitter_to_tiou(GT, 0.0, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# Error propagation tables


def _three_settings():
    gt = table([("v1", 0, 10, "A"), ("v2", 0, 10, "B"), ("v3", 0, 10, "C"), ("v4", 0, 10, "D")], with_score=False)
    predicted = table([
        ("v1", 0, 4, "A", 0.9),  # right label, loose segment
        ("v2", 0, 10, "A", 0.8),  # right segment, wrong label
        ("v3", 0, 10, "C", 0.7),  # right
        ("v4", 0, 3, "D", 0.6),  # right label, loose segment
    ])
    gt_segments = SegmentTable(gt.video, gt.t0, gt.t1, predicted.label, predicted.score)
    return {
        dg.PREDICTED: evaluate_detection(gt, predicted, [0.5]),
        dg.ORACLE_LOCALISATION: evaluate_detection(gt, gt_segments, [0.5]),
        dg.ORACLE_CLASSIFICATION: evaluate_detection(gt, dg.oracle_labels(predicted, gt), [0.5]),
    }


def test_error_propagation_absolute_and_relative():
    out = dg.error_propagation(_three_settings()).set_index("setting")
    # AP per class A, B, C, D: predicted 0,0,1,0; GT segments 1,0,1,1; GT labels 0,1,1,0
    np.testing.assert_allclose(out["average"], [0.25, 0.75, 0.5])
    np.testing.assert_allclose(out["mAP@0.5"], out["average"])
    np.testing.assert_allclose(out["degradation"], [0.0, 0.5, 0.25])
    np.testing.assert_allclose(out["relative_degradation"], [0.0, 2 / 3, 0.5])
    assert out.index.tolist() == [dg.PREDICTED, dg.ORACLE_LOCALISATION, dg.ORACLE_CLASSIFICATION]


def test_error_propagation_needs_the_reference_and_one_tiou_set():
    results = _three_settings()
    with pytest.raises(KeyError):
        dg.error_propagation({"x": results[dg.PREDICTED]})
    gt = table([("v1", 0, 10, "A")], with_score=False)
    other = evaluate_detection(gt, table([("v1", 0, 10, "A", 1.0)]), [0.5, 0.7])
    with pytest.raises(ValueError, match="tIoU"):
        dg.error_propagation({dg.PREDICTED: results[dg.PREDICTED], "other": other})


def test_noise_curve_is_relative_to_clean_segments():
    gt = table([("v1", 0, 10, "A"), ("v2", 0, 10, "B")], with_score=False)
    results = {}
    for level in (1.0, 0.5):
        jittered = dg.jitter_to_tiou(gt, level, np.random.default_rng(0))
        pred = SegmentTable(jittered.video, jittered.t0, jittered.t1, jittered.label, np.array([0.9, 0.8]))
        results[level] = evaluate_detection(gt, pred, [0.45, 0.75])
    curve = dg.noise_curve(results)
    assert curve["level"].tolist() == [1.0, 0.5]
    assert curve["average"].tolist() == [1.0, 0.5]  # tIoU 0.5: a match at 0.45, not at 0.75
    assert curve["relative"].tolist() == [1.0, 0.5]


# ---------------------------------------------------------------------------------------------
# Figures


def _assert_written(paths):
    png, pdf = paths
    assert png.suffix == ".png" and pdf.suffix == ".pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


def test_every_figure_writes_png_and_pdf_and_leaks_no_state(tmp_path):
    rc_before = dict(matplotlib.rcParams)
    profile = dg.false_positive_profile(GT, PRED, [0.5, 0.3])
    sens = dg.sensitivity(GT, PRED, [0.5], durations={"v1": 100.0, "v3": 40.0, "v4": 40.0})
    results = _three_settings()
    propagation = pd.concat(
        {m: dg.error_propagation(results) for m in ("STALE", "B-I")}, names=["method"]).reset_index(level=0)
    noise = pd.DataFrame({"method": ["STALE"] * 3 + ["B-I"] * 3, "level": [1.0, 0.8, 0.6] * 2,
                          "average": [0.5, 0.4, 0.2, 0.4, 0.35, 0.3]})
    splits = pd.DataFrame({"method": ["STALE"] * 10 + ["B-I"] * 10, "split": list(range(10)) * 2,
                           "average": np.random.default_rng(0).uniform(0.1, 0.3, 20)})
    written = [
        plots.plot_fp_profile(profile, tmp_path / "fp" / "profile", "FP profile (synthetic data)"),
        plots.plot_sensitivity(sens, tmp_path / "sensitivity", "Sensitivity (synthetic data)"),
        plots.plot_error_propagation(propagation, tmp_path / "propagation", "Error propagation (synthetic data)"),
        plots.plot_noise_curve(noise, tmp_path / "noise", "Localisation noise (synthetic data)"),
        plots.plot_split_metric(splits, tmp_path / "splits", "Per split (synthetic data)"),
    ]
    for paths in written:
        _assert_written(paths)
    assert plt.get_fignums() == []
    assert dict(matplotlib.rcParams) == rc_before
    # the same data give the same bytes (seeded bootstrap CIs and jitter, no PDF date): rebuilt reports diff clean
    state = np.random.get_state()
    again = [plots.plot_noise_curve(noise, tmp_path / "again" / "noise", "Localisation noise (synthetic data)"),
             plots.plot_split_metric(splits, tmp_path / "again" / "splits", "Per split (synthetic data)"),
             plots.plot_error_propagation(propagation, tmp_path / "again" / "propagation",
                                          "Error propagation (synthetic data)")]
    for first, second in zip(written[3:] + written[2:3], again):
        assert [f.read_bytes() for f in first] == [f.read_bytes() for f in second]
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:2], state[1:2]))  # numpy's state kept


# ---------------------------------------------------------------------------------------------
# The vectorised diagnostics against slow references: plain loops over predictions, classes and
# videos, transcribing the per-video / per-class implementation they replaced. AP_N values are sums
# of floats, whose order of addition is no part of their meaning: they are compared to 1e-12;
# everything else must be equal.


def ref_tiou(a0, a1, b0, b1):
    intersection = max(0.0, min(a1, b1) - max(a0, b0))
    union = (a1 - a0) + (b1 - b0) - intersection
    return intersection / union if union else math.inf  # 0/0 (two zero-length segments): above every threshold


def ref_overlaps(pred, gt, i):
    """(GT row, tIoU) of every GT instance of prediction i's video, in file order."""
    return [(j, ref_tiou(pred.t0[i], pred.t1[i], gt.t0[j], gt.t1[j]))
            for j in range(len(gt)) if gt.video[j] == pred.video[i]]


def ref_ranked(pred, classes):
    """Each class's prediction rows, best score first, ties in row order (Python's sort is stable)."""
    ranked = {c: [] for c in classes}
    for i in sorted(range(len(pred)), key=lambda i: -pred.score[i]):
        if pred.label[i] in ranked:
            ranked[pred.label[i]].append(i)
    return ranked


def ref_ap_n(tp, n_gt, n_norm):
    """All-point interpolated AP of one ranked list of hits, with DETAD's precision P_N = R·N / (R·N + FP)."""
    precision, recall, hits = [], [], 0
    for seen, hit in enumerate(tp, 1):
        hits += bool(hit)
        r = hits / n_gt
        precision.append(r * n_norm / (r * n_norm + (seen - hits)))
        recall.append(r)
    for i in reversed(range(len(precision) - 1)):
        precision[i] = max(precision[i], precision[i + 1])
    ap, previous = 0.0, 0.0
    for r, p in zip(recall, precision):
        ap, previous = ap + (r - previous) * p, r
    return ap


def ref_ap_table(matched, keep, ranked, n_gt, n_norm):
    """[K, C] AP_N of the classes of n_gt, predictions with keep[k][i] False left out at threshold k."""
    return np.array([[ref_ap_n([matched[k, i] >= 0 for i in ranked[c] if keep[k][i]], n_gt[c], n_norm) for c in n_gt]
                     for k in range(len(matched))])


def ref_classes(gt):
    return dict(sorted(Counter(gt.label.tolist()).items()))  # class -> GT count


def ref_normalised_map(gt, pred, thresholds):
    n_gt = ref_classes(gt)
    matched = match_predictions(gt, pred, thresholds)
    keep = np.ones(matched.shape, dtype=bool)
    return ref_ap_table(matched, keep, ref_ranked(pred, n_gt), n_gt, len(gt) / len(n_gt))


def ref_limit_predictions(gt, pred, factor):
    n_gt = ref_classes(gt)
    keep = np.zeros(len(pred), dtype=bool)
    for c, rows in ref_ranked(pred, n_gt).items():
        keep[rows[: int(n_gt[c] * factor)]] = True
    return pred.select(keep)


def ref_error_types(gt, pred, matched, thresholds, min_tiou=0.1):
    out = np.zeros(matched.shape, dtype=np.int8)
    for i in range(len(pred)):
        pairs = ref_overlaps(pred, gt, i)
        top = max((u for _, u in pairs), default=None)
        same = any(u == top and gt.label[j] == pred.label[i] for j, u in pairs)
        for k, t in enumerate(thresholds):
            if matched[k, i] >= 0:
                out[k, i] = dg.TRUE_POSITIVE
            elif top is not None and top >= t:
                out[k, i] = dg.DOUBLE_DETECTION if same else dg.WRONG_LABEL
            elif top is not None and top >= min_tiou:
                out[k, i] = dg.LOCALISATION if same else dg.CONFUSION
            else:
                out[k, i] = dg.BACKGROUND
    return out


def ref_false_positive_profile(gt, pred, thresholds, groups):
    n_gt = ref_classes(gt)
    n_norm = len(gt) / len(n_gt)
    top = ref_limit_predictions(gt, pred, groups)
    matched = match_predictions(gt, top, thresholds)
    outcome = ref_error_types(gt, top, matched, thresholds)
    ranked = ref_ranked(top, n_gt)
    ap = ref_ap_table(matched, np.ones(matched.shape, dtype=bool), ranked, n_gt, n_norm)
    gain = {name: ref_ap_table(matched, outcome != code, ranked, n_gt, n_norm).mean() - ap.mean()
            for code, name in enumerate(dg.OUTCOMES) if code != dg.TRUE_POSITIVE}
    members = [[] for _ in range(groups)]
    for c, rows in ranked.items():
        for rank, i in enumerate(rows):
            members[rank // n_gt[c]].append(i)
    fractions = [[sum(outcome[k, i] == code for k in range(len(matched)) for i in rows) / (len(matched) * len(rows))
                  if rows else np.nan for code in range(len(dg.OUTCOMES))] for rows in members]
    return top, outcome, np.array(fractions), ap.mean(axis=1), gain


def ref_sensitivity(gt, pred, thresholds, durations, bins, min_precision):
    n_gt = ref_classes(gt)
    n_norm = len(gt) / len(n_gt)
    matched = match_predictions(gt, pred, thresholds)
    ranked = ref_ranked(pred, n_gt)
    base = ref_ap_table(matched, np.ones(matched.shape, dtype=bool), ranked, n_gt, n_norm)
    detected = np.zeros((len(matched), len(gt)), dtype=bool)
    for c, rows in ranked.items():
        for k in range(len(matched)):
            hits = 0
            for seen, i in enumerate(rows, 1):
                if matched[k, i] >= 0:
                    hits += 1
                    r = hits / n_gt[c]
                    if r * n_norm / (r * n_norm + (seen - hits)) > min_precision:
                        detected[k, matched[k, i]] = True
    chars = dg.gt_characteristics(gt, durations)
    records = []
    for name, (edges, labels) in bins.items():
        binned = pd.cut(chars[name], edges, labels=list(labels), include_lowest=True).to_numpy()
        for label in labels:
            in_bin = [binned[j] == label for j in range(len(gt))]
            map_n = fn_rate = np.nan
            if any(in_bin):
                keep = [all(matched[k, i] < 0 or in_bin[matched[k, i]] for k in range(len(matched)))
                        for i in range(len(pred))]
                n_in = dict(sorted(Counter(gt.label[j] for j in range(len(gt)) if in_bin[j]).items()))
                map_n = ref_ap_table(matched, [keep] * len(matched), ranked, n_in, n_norm).mean()
                fn_rate = 1.0 - detected[:, np.array(in_bin)].mean()
            records.append((name, label, sum(in_bin), map_n, fn_rate))
    return base.mean(), records


def ref_oracle_labels(pred, gt):
    rows = []
    for i in range(len(pred)):
        pairs = ref_overlaps(pred, gt, i)
        top = max((u for _, u in pairs), default=0.0)
        labels = list(dict.fromkeys(gt.label[j] for j, u in pairs if u == top)) if top > 0 else [pred.label[i]]
        rows += [(pred.video[i], pred.t0[i], pred.t1[i], label, pred.score[i]) for label in labels]
    return rows


def rows_of(t: SegmentTable):
    return list(zip(t.video.tolist(), t.t0.tolist(), t.t1.tolist(), t.label.tolist(), t.score.tolist()))


def random_case(seed, n_predictions=150):
    """GT and predictions with every corner case the diagnostics have a rule for: segments annotated
    with two labels (THUMOS14), zero-length GT and predictions (0/0 tIoU), videos without GT (v3, v7,
    v8, v9), a label without GT ("Z"), GT rows not grouped by video; seed-dependent: integer times
    (exact tIoU ties), tied scores, a reader's factorisation of the video column."""
    rng = np.random.default_rng(seed)
    grid, tied_scores, factorised = seed % 3 != 2, seed % 2 == 0, seed % 2 == 1
    classes = np.array(list("ABCDE"))

    def coordinate(high):
        return float(rng.integers(0, high)) if grid else float(rng.uniform(0, high))

    gt_rows = [("v0", 5.0, 5.0, "A"), ("v1", 10.0, 20.0, "B"), ("v1", 10.0, 20.0, "C")]
    for v in (0, 1, 2, 4, 5, 6):
        for _ in range(rng.integers(1, 6)):
            start, length = coordinate(40), 0.0 if rng.random() < 0.1 else 1 + coordinate(14)
            labels = rng.choice(classes, 2 if rng.random() < 0.25 else 1, replace=False)  # a second label: same segment
            gt_rows += [(f"v{v}", start, start + length, str(c)) for c in labels]
    pred_rows = [("v0", 5.0, 5.0, "A"), ("v0", 5.0, 5.0, "C"), ("v1", 10.0, 20.0, "A"), ("v1", 11.0, 20.0, "B")]
    for _ in range(max(n_predictions - len(pred_rows), 0)):
        if rng.random() < 0.5:  # near a GT instance (or on it)
            video, start, end, _ = gt_rows[rng.integers(len(gt_rows))]
            start, end = start + coordinate(3) - coordinate(3), end + coordinate(3) - coordinate(3)
        else:
            video, start = f"v{rng.integers(10)}", coordinate(40)
            end = start + (0.0 if rng.random() < 0.1 else coordinate(15))
        label = "Z" if rng.random() < 0.1 else str(rng.choice(classes))
        pred_rows.append((video, start, max(start, end), label))
    pred_rows = pred_rows[: n_predictions]
    scores = rng.integers(0, 8, len(pred_rows)) / 8 if tied_scores else rng.random(len(pred_rows))
    gt = table([gt_rows[i] for i in rng.permutation(len(gt_rows))], with_score=False)
    pred = table([(*row, float(s)) for row, s in zip(pred_rows, scores)])
    if factorised and len(pred):
        names, codes = np.unique(pred.video, return_inverse=True)
        shuffle = rng.permutation(len(names))  # a reader's names need not be sorted
        pred = SegmentTable(pred.video, pred.t0, pred.t1, pred.label, pred.score,
                            {"video": (names[shuffle], np.argsort(shuffle)[codes])})
    return gt, pred


@pytest.mark.parametrize("seed, n_predictions", [(0, 150), (1, 150), (2, 150), (3, 150), (4, 60), (5, 300), (6, 0)])
def test_vectorised_diagnostics_match_slow_references(seed, n_predictions):
    gt, pred = random_case(seed, n_predictions)
    thresholds = ACTIVITYNET_TIOU if seed % 2 else np.array([0.1, 0.3, 0.5, 0.7])
    durations = {f"v{v}": (None if v == 2 else 30.0 + 5 * v) for v in range(10)}
    tolerance = dict(rtol=0, atol=1e-12)

    matched = match_predictions(gt, pred, thresholds)
    for min_tiou in (0.1, 0.0):
        np.testing.assert_array_equal(dg.error_types(gt, pred, matched, thresholds, min_tiou),
                                      ref_error_types(gt, pred, matched, thresholds, min_tiou))
    assert rows_of(dg.oracle_labels(pred, gt)) == ref_oracle_labels(pred, gt)
    for factor in (1, 2.5):
        assert rows_of(dg.limit_predictions(gt, pred, factor)) == rows_of(ref_limit_predictions(gt, pred, factor))
    np.testing.assert_allclose(dg.normalised_map(gt, pred, thresholds).ap, ref_normalised_map(gt, pred, thresholds),
                               **tolerance)

    for groups in (10, 2):
        profile = dg.false_positive_profile(gt, pred, thresholds, groups=groups)
        top, outcome, fractions, map_n, gain = ref_false_positive_profile(gt, pred, thresholds, groups)
        assert rows_of(profile.predictions) == rows_of(top)
        np.testing.assert_array_equal(profile.outcome, outcome)
        np.testing.assert_array_equal(profile.fractions.to_numpy(), fractions)
        np.testing.assert_allclose(profile.map_n, map_n, **tolerance)
        assert list(profile.gain) == list(gain)
        np.testing.assert_allclose(list(profile.gain.values()), list(gain.values()), **tolerance)

    for bins, min_precision in ((dg.SENSITIVITY_BINS["activitynet"], 0.05), (dg.SENSITIVITY_BINS["thumos14"], 0.3)):
        result = dg.sensitivity(gt, pred, thresholds, durations, bins, min_precision)
        average, records = ref_sensitivity(gt, pred, thresholds, durations, bins, min_precision)
        np.testing.assert_allclose(result.average_map_n, average, **tolerance)
        got = result.table
        assert list(zip(got["characteristic"], got["bin"], got["n_gt"])) == [r[:3] for r in records]
        np.testing.assert_allclose(got["map_n"], [r[3] for r in records], **tolerance)
        np.testing.assert_array_equal(got["fn_rate"], [r[4] for r in records])


def test_overlaps_are_the_same_computed_in_chunks(monkeypatch):
    gt, pred = random_case(7, 200)
    matched = match_predictions(gt, pred, [0.3, 0.6])
    whole = dg.error_types(gt, pred, matched, [0.3, 0.6]), rows_of(dg.oracle_labels(pred, gt))
    monkeypatch.setattr(dg, "_PAIRS_PER_CHUNK", 5)  # a chunk holds whole predictions, so may exceed it
    np.testing.assert_array_equal(dg.error_types(gt, pred, matched, [0.3, 0.6]), whole[0])
    assert rows_of(dg.oracle_labels(pred, gt)) == whole[1]
