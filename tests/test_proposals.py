"""Proposal AR-AN: hand-computed curves, the official budget rules, an independent slow reference
and the `proposal-recall` command."""
import argparse
import json
import math

import numpy as np
import pytest

from benchmark.evaluation import cli
from benchmark.evaluation.detection import ACTIVITYNET_TIOU
from benchmark.evaluation.proposals import evaluate_proposals
from benchmark.evaluation.segments import SegmentTable


def reference_average_recall(gt_rows, proposal_rows, thresholds, max_avg):
    """The official eval_proposal.py loops, transcribed in plain Python: -> (recall [K][100], AN [100])."""
    videos = list(dict.fromkeys(row[0] for row in gt_rows))
    ratio = max_avg * len(videos) / len(proposal_rows)
    tious, total = [], 0
    for video in videos:
        gts = [(s, e) for v, s, e, *_ in gt_rows if v == video]
        props = sorted(((s, e, score) for v, s, e, *_, score in proposal_rows if v == video), key=lambda p: -p[2])
        if not props:
            tious.append([[0.0] for _ in gts])
            continue
        n = min(int(len(props) * ratio), len(props))
        total += n
        table = []
        for g0, g1 in gts:
            row = []
            for p0, p1, _ in props[:n]:
                inter = max(0.0, min(g1, p1) - max(g0, p0))
                union = (p1 - p0) + (g1 - g0) - inter
                row.append(inter / union if union != 0 else math.nan)
            table.append(row)
        tious.append(table)
    fractions = [j / 100.0 * (max_avg * len(videos) / total) for j in range(1, 101)]
    recall = []
    for threshold in thresholds:
        matched = [0] * 100
        for table in tious:
            width = len(table[0])
            for j, fraction in enumerate(fractions):
                budget = min(int(width * fraction), width)
                matched[j] += sum(any(t >= threshold for t in row[:budget]) for row in table)
        recall.append([m / len(gt_rows) for m in matched])
    return recall, [f * total / len(videos) for f in fractions]


def gt_table(rows):
    return SegmentTable.from_rows(rows, with_score=False)


def proposal_table(rows):
    return SegmentTable.from_rows([(v, s, e, "", score) for v, s, e, score in rows], with_score=True)


def test_hand_computed_curve():
    # One video, 4 proposals, max 4 per video: at point j a video keeps int(4 * j/100) proposals.
    # The GTs are found by the 1st and the 3rd proposal: recall 0 (j<25), 0.5 (j<75), 1.
    gt = gt_table([("a", 0, 10, "x"), ("a", 20, 30, "y")])
    proposals = proposal_table([("a", 0, 10, 0.9), ("a", 50, 60, 0.8), ("a", 20, 30, 0.7), ("a", 21, 29, 0.6)])
    result = evaluate_proposals(gt, proposals, [0.5], max_avg_nr_proposals=4)
    expected = np.r_[np.zeros(24), np.full(50, 0.5), np.ones(26)]
    np.testing.assert_allclose(result.recall[0], expected)
    np.testing.assert_allclose(result.average_number, np.arange(1, 101) * 0.04)
    assert result.ar_at == pytest.approx({1: 0.5})  # AN 5, 10, 50, 100 are beyond the curve's end (4)
    # trapezoids of width 0.04: 0.25 + 49 * 0.5 + 0.75 + 25 * 1 = 50.5 -> * 0.04 / 4 * 100
    assert result.auc == pytest.approx(50.5)


def test_budget_is_proportional_to_each_video_count():
    # ratio = 100 * 2 videos / 5 proposals = 40 (all kept); at point j a video with n proposals
    # uses int(n * 0.4 j): at AN=1 (j=1) video a uses 1, video b (1 proposal) uses none.
    gt = gt_table([("a", 0, 10, "x"), ("b", 0, 5, "x")])
    proposals = proposal_table([("a", 0, 10, 0.9)] + [("a", 50 + i, 60 + i, 0.5) for i in range(3)] + [("b", 0, 5, 0.1)])
    result = evaluate_proposals(gt, proposals, [0.5])
    assert result.ar_at == pytest.approx({1: 0.5, 5: 1.0, 10: 1.0, 50: 1.0, 100: 1.0})
    assert result.recall[0, :3] == pytest.approx([0.5, 0.5, 1.0])


def test_recall_is_averaged_over_thresholds():
    gt = gt_table([("a", 0, 10, "x")])
    proposals = proposal_table([("a", 0, 6, 0.9)])  # tIoU 0.6
    result = evaluate_proposals(gt, proposals, [0.5, 0.7], max_avg_nr_proposals=1)
    assert result.ar_at[1] == pytest.approx(0.5)
    assert result.recall[:, -1] == pytest.approx([1.0, 0.0])


def test_proposals_on_videos_without_gt_shrink_the_budget():
    # The official ratio divides by every proposal of the file: 2 more on video z halve a's budget.
    gt = gt_table([("a", 0, 10, "x")])
    on_a = [("a", 50, 60, 0.9), ("a", 0, 10, 0.8)]
    alone = evaluate_proposals(gt, proposal_table(on_a), [0.5], max_avg_nr_proposals=2)
    diluted = evaluate_proposals(gt, proposal_table(on_a + [("z", 0, 1, 0.5), ("z", 1, 2, 0.5)]), [0.5], max_avg_nr_proposals=2)
    assert alone.recall[0, -1] == 1.0 and alone.meta["proposals_used"] == 2
    assert diluted.recall[0, -1] == 0.0 and diluted.meta["proposals_used"] == 1
    assert diluted.meta["proposals_on_videos_without_gt"] == 2


def test_zero_length_gt_is_never_recalled():
    # Unlike detection, the official proposal code compares nan >= threshold: False.
    gt = gt_table([("a", 5, 5, "x"), ("a", 0, 10, "x")])
    proposals = proposal_table([("a", 5, 5, 0.9), ("a", 0, 10, 0.8)])
    assert evaluate_proposals(gt, proposals, [0.5], max_avg_nr_proposals=2).recall[0, -1] == 0.5


def test_video_without_proposals_counts_its_gt_as_missed():
    gt = gt_table([("a", 0, 10, "x"), ("b", 0, 10, "x")])
    result = evaluate_proposals(gt, proposal_table([("a", 0, 10, 0.9)]), [0.5], max_avg_nr_proposals=1)
    assert result.recall[0, -1] == 0.5


@pytest.mark.parametrize("seed", range(4))
def test_random_cases_match_the_reference(seed):
    rng = np.random.default_rng(seed)
    gt_rows, proposal_rows = [], []
    for v in range(25):
        for _ in range(rng.integers(1, 4)):
            s = float(rng.uniform(0, 80))
            gt_rows.append((f"v{v}", s, s + float(rng.uniform(1, 30)), "x"))
        for _ in range(rng.integers(0, 40)):
            s = float(rng.uniform(0, 90))
            proposal_rows.append((f"v{v}", s, s + float(rng.uniform(0.5, 40)), float(rng.random())))
    proposal_rows += [("elsewhere", 0.0, 1.0, 0.5)] * 5
    max_avg = [100, 10, 7, 1][seed]
    thresholds = list(ACTIVITYNET_TIOU)
    result = evaluate_proposals(gt_table(gt_rows), proposal_table(proposal_rows), thresholds, max_avg_nr_proposals=max_avg)
    recall, average_number = reference_average_recall(gt_rows, proposal_rows, thresholds, max_avg)
    np.testing.assert_allclose(result.recall, recall, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.average_number, average_number, rtol=1e-12)
    assert 0 < result.auc < 100


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_cli_proposal_recall_json(tmp_path, capsys):
    gt = write_json(tmp_path / "gt.json", {"version": "VERSION 1.3", "taxonomy": [], "database": {
        "a": {"subset": "validation", "duration": 60.0, "annotations": [
            {"segment": [0, 10], "label": "x"}, {"segment": [20, 30], "label": "y"}]},
    }})
    proposals = write_json(tmp_path / "prop.json", {"results": {"v_a": [
        {"segment": [0, 10], "score": 0.9}, {"segment": [50, 60], "score": 0.8},
        {"segment": [20, 30], "score": 0.7}, {"segment": [21, 29], "score": 0.6}]}})
    parser = argparse.ArgumentParser(prog="benchmark")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["proposal-recall", "--gt", str(gt), "--pred", str(proposals), "--subset", "validation",
                              "--tiou", "0.5", "--max-avg-proposals", "4", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ar_at_an"] == pytest.approx({"1": 0.5})
    assert out["auc"] == pytest.approx(50.5)
    assert out["meta"]["gt_instances"] == 2
