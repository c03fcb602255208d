"""The box-level job's post-processing: soft voting and the detector score (hand-computed cases)."""
from __future__ import annotations

import numpy as np
import pytest

from benchmark.evaluation.boxes import BoxTable
from benchmark.harness.stad import PROTOCOL, soft_vote, with_detector_scores


def rows(entries):
    """entries: (video, frame, x1, label, score) with boxes [x1, 0, x1 + 10, 10]."""
    video, frame, x1, label, score = zip(*entries)
    box = np.array([[x, 0, x + 10, 10] for x in x1], dtype=float)
    return BoxTable(np.array(video), np.array(frame), box, np.array(label), np.array(score, dtype=float))


SCORES = rows([("v", 1, 0, "a", 0.9), ("v", 1, 0, "b", 0.1), ("v", 2, 5, "a", 0.3), ("v", 2, 5, "b", 0.7),
               ("w", 1, 0, "a", 0.2), ("w", 1, 0, "b", 0.8)])
CANDIDATES = rows([("v", 2, 5, "person", 0.5), ("v", 1, 0, "person", 0.8), ("w", 1, 0, "person", 1.0)])


def test_soft_voting_gives_every_box_its_videos_mean():
    voted = soft_vote(SCORES)
    assert np.allclose(voted.score, [0.6, 0.4, 0.6, 0.4, 0.2, 0.8])


def test_detector_score_multiplies_each_rows_box():
    out = with_detector_scores(SCORES, CANDIDATES, PROTOCOL)
    assert np.allclose(out.score, [0.72, 0.08, 0.15, 0.35, 0.2, 0.8])
    both = with_detector_scores(SCORES, CANDIDATES, PROTOCOL | {"soft_voting": True})
    assert np.allclose(both.score, [0.48, 0.32, 0.3, 0.2, 0.2, 0.8])
    assert with_detector_scores(SCORES, CANDIDATES, PROTOCOL | {"detector_score": "ignore"}) is SCORES


def test_a_box_that_is_not_a_candidate_is_refused():
    stray = rows([("v", 1, 1, "a", 0.5)])
    with pytest.raises(Exception, match="not one of the test view's candidate boxes"):
        with_detector_scores(stray, CANDIDATES, PROTOCOL)


def test_seen_and_unseen_groups_are_the_means_of_their_classes_aps():
    from benchmark.data.splits import ClassSplit
    from benchmark.harness.stad import class_groups

    split = ClassSplit("toy", 0.5, 0, ("a", "b"), ("c",), "x", "generated", 0)
    per_class = {"a": [0.2], "b": [0.6], "c": [0.9]}
    assert class_groups(per_class, split, "gt_boxes/", "frame_mAP@0.5") == {
        "gt_boxes/seen/frame_mAP@0.5": pytest.approx(0.4), "gt_boxes/unseen/frame_mAP@0.5": pytest.approx(0.9)}
    assert class_groups({"c": [0.9]}, split, "", "m") == {}  # one group evaluated: the headline is that group
    assert class_groups({"a": [0.2], "c": [0.9]}, split, "", "m") == {"seen/m": 0.2, "unseen/m": 0.9}  # b has no GT
