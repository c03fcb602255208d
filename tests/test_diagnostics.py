"""Diagnostics (DETAD-style error analysis, oracles, localisation noise) and their figures."""
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from benchmark.evaluation import diagnostics as dg
from benchmark.evaluation import plots
from benchmark.evaluation.detection import evaluate_detection, match_predictions
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
