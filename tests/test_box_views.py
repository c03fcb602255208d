"""Zero-shot views of box-level data, and the detector-box rules (hand-made tables)."""
from __future__ import annotations

import numpy as np
import pytest

from benchmark.data.box_annotations import BoxAnnotations
from benchmark.data.box_views import annotated_keys, box_test_view, box_train_view, filter_person_boxes, gt_person_boxes
from benchmark.data.splits import ClassSplit
from benchmark.evaluation.boxes import BoxTable


def table(rows, score=None, person=None):
    t = BoxTable.from_rows(rows, with_score=False)
    return BoxTable(t.video, t.frame, t.box, t.label, None if score is None else np.array(score, dtype=float),
                    None if person is None else np.array(person))


def dataset():
    """v1 (class a, 2 frames, 2 persons), v2 (class b), v3 (classes a and c: a multi-class video)."""
    gt = table([("v1", 1, 0, 0, 10, 10, "a"), ("v1", 1, 20, 20, 30, 30, "a"), ("v1", 2, 0, 0, 10, 10, "a"),
                ("v2", 1, 0, 0, 10, 10, "b"), ("v3", 1, 0, 0, 10, 10, "a"), ("v3", 1, 0, 0, 10, 10, "c")],
               person=[0, 1, 0, 0, 0, 0])
    return BoxAnnotations("hand", "test", ("a", "b", "c"), gt, nframes={"v1": 2, "v2": 3, "v3": 1})


SPLIT = ClassSplit("hand", 2 / 3, 0, ("a", "b"), ("c",), "", "test")


def test_training_sees_only_seen_classes_either_way():
    ann = dataset()
    drop_videos = box_train_view(ann, SPLIT, ["v1", "v2", "v3"])
    assert drop_videos.videos == ("v1", "v2") and drop_videos.dropped == {"videos": 1, "rows": 0}
    assert set(drop_videos.gt.label) == {"a", "b"} and len(drop_videos.gt) == 4
    drop_labels = box_train_view(ann, SPLIT, ["v1", "v2", "v3"], unseen="drop_labels")
    assert drop_labels.videos == ("v1", "v2", "v3") and drop_labels.dropped == {"videos": 0, "rows": 1}
    assert "c" not in set(drop_labels.gt.label) and len(drop_labels.gt) == 5


def test_test_view_switches():
    ann = dataset()
    view = box_test_view(ann, SPLIT, ["v1", "v2", "v3"])
    assert view.videos == ("v3",) and view.classes == ("c",) and view.evaluated == ("c",) and view.box_source == "gt"
    assert len(view.gt) == 1 and len(view.boxes) == 1 and view.boxes.label[0] == "person" and view.boxes.score[0] == 1
    assert view.keys.tolist() == [("v3", 1)]
    everything = box_test_view(ann, SPLIT, ["v1", "v2", "v3"], label_space="all", evaluated="all", test_videos="all")
    assert everything.videos == ("v1", "v2", "v3") and everything.classes == ("a", "b", "c") and len(everything.gt) == 6
    assert len(everything.boxes) == 5  # v3's person is one candidate whatever its two labels
    assert len(everything.keys) == 6  # every frame of the ACT layout, boxes or not
    with pytest.raises(Exception, match="evaluated='novel'"):
        box_test_view(ann, SPLIT, ["v1"], evaluated="novel")


def test_annotated_keys_of_keyframe_datasets():
    keyframes = table([("m", 902, 0, 0, 0, 0, ""), ("m", 903, 0, 0, 0, 0, ""), ("n", 902, 0, 0, 0, 0, "")])
    ann = BoxAnnotations("hand", "ava_csv", ("a",), BoxTable.empty(), keyframes=keyframes)
    assert annotated_keys(ann, ["m"]).tolist() == [("m", 902), ("m", 903)]


def test_gt_person_boxes_without_person_ids_are_distinct_boxes():
    gt = table([("v", 1, 0, 0, 5, 5, "a"), ("v", 1, 0, 0, 5, 5, "b"), ("v", 1, 1, 1, 5, 5, "a")])
    assert len(gt_person_boxes(gt)) == 2


def test_filter_rules_per_frame():
    boxes = table([("v", 1, 0, 0, 1, 1, "person"), ("v", 1, 0, 0, 2, 2, "person"), ("v", 1, 0, 0, 3, 3, "person"),
                   ("v", 1, 0, 0, 4, 4, "person"), ("v", 2, 0, 0, 5, 5, "person"), ("v", 2, 0, 0, 6, 6, "person")],
                  score=[0.2, 0.9, 0.8985, 0.9, 0.5, 0.1])
    kept = {rule: filter_person_boxes(boxes, rule).box[:, 2].tolist()
            for rule in ("all", "top1", "top3", "s_minus_t:0.001", "s_minus_t:0.45", "score>0.3")}
    assert kept == {"all": [1, 2, 3, 4, 5, 6],
                    "top1": [2, 5],  # a tie at 0.9: the first in the file
                    "top3": [2, 3, 4, 5, 6],
                    "s_minus_t:0.001": [2, 4, 5],  # 0.8985 is not above 0.9 - 0.001
                    "s_minus_t:0.45": [2, 3, 4, 5, 6],
                    "score>0.3": [2, 3, 4, 5]}
    with pytest.raises(Exception, match="top<k>"):
        filter_person_boxes(boxes, "best")
