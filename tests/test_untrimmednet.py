"""UntrimmedNet's THUMOS14 video scores (methods/label_fusion.untrimmednet_scores): the UCF101 class
list, agreement with the ground truth on the real file (and the off-by-one that would break it),
fusion, and bad files."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from benchmark.data.annotations import load_annotations
from benchmark.errors import InputError
from methods.label_fusion import (UCF101_CLASSES, dominant_class, fuse_labels, read_external_scores,
                                  untrimmednet_scores)


@pytest.fixture(scope="module")
def thumos(shared_data):
    """(annotations, Test videos, uNet_test.npy)."""
    with pytest.warns(UserWarning, match="after the video's duration"):
        annotations = load_annotations(shared_data / "thumos14/thumos14.json")
    return annotations, annotations.subset("Test"), shared_data / "thumos14/uNet_test.npy"


def test_ucf101_classes_agree_with_the_thumos_annotation_table(shared_data, thumos):
    assert len(UCF101_CLASSES) == len(set(UCF101_CLASSES)) == 101
    assert list(UCF101_CLASSES) == sorted(UCF101_CLASSES, key=str.lower)  # classInd's order
    with open(shared_data / "thumos14/test_Annotation.csv", newline="") as f:
        ucf_index = {(r["type"], int(r["type_idx"])) for r in csv.DictReader(f) if r["type"] != "Ambiguous"}
    assert {name for name, _ in ucf_index} == set(thumos[0].classes)  # one UCF101 index per THUMOS class
    assert sorted(ucf_index) == sorted((name, UCF101_CLASSES.index(name) + 1) for name, _ in ucf_index)


def agreement(path, annotations, videos) -> float:
    """The fraction of videos whose top-1 class is their dominant ground-truth class."""
    scores = untrimmednet_scores(path, annotations.classes, [v.id for v in videos])
    assert set(scores) == {v.id for v in videos}
    assert all(0.0 < s["score"] <= 1.0 for s in scores.values())
    return float(np.mean([scores[v.id]["class"] == dominant_class(v) for v in videos]))


def test_top1_agrees_with_the_ground_truth_and_an_off_by_one_does_not(thumos, tmp_path):
    annotations, test, npy = thumos
    assert len(test) == 212 and all(v.instances for v in test)
    # measured 185/212 = 0.873; 7 of the 27 misses are CliffDiving videos (every CliffDiving
    # instance is also a Diving one, the tie goes to CliffDiving) that UntrimmedNet calls Diving
    assert agreement(npy, annotations, test) > 0.85
    shifted = tmp_path / "shifted.npy"
    np.save(shifted, np.roll(np.load(npy), 1, axis=1))  # column k holds class k-1: an off-by-one mapping
    assert agreement(shifted, annotations, test) < 0.2  # measured 0.094


def gt_detections(video, score: float) -> list[dict]:
    return [{"segment": [i.start, i.end], "label": i.label, "score": score} for i in video.instances]


def test_fusion_relabels_ground_truth_detections_as_documented(thumos):
    annotations, test, npy = thumos
    covered, uncovered = test[:-1], test[-1]
    scores = untrimmednet_scores(npy, annotations.classes, [v.id for v in covered])
    at_confidence = {v.id: gt_detections(v, scores[v.id]["score"]) for v in covered}
    fused = fuse_labels({**at_confidence, uncovered.id: gt_detections(uncovered, 0.0)}, scores)
    for v in covered:  # not above the classifier's confidence: every detection takes its top-1 class
        assert [d["label"] for d in fused[v.id]] == [scores[v.id]["class"]] * len(v.instances)
        assert [(d["segment"], d["score"]) for d in fused[v.id]] == [(d["segment"], d["score"])
                                                                     for d in at_confidence[v.id]]
    assert fused[uncovered.id] == gt_detections(uncovered, 0.0)  # a video the scores do not cover
    above = {v.id: gt_detections(v, scores[v.id]["score"] + 1e-6) for v in covered}
    assert fuse_labels(above, scores) == above  # above it: labels kept


class Unpickled:
    """Unpickling this creates the directory ``marker``: the proof that a file was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


GOOD = np.full((5, 101), 2 / 101, dtype=np.float32)  # 5 videos, rows summing to 2 like the real file
NAN = GOOD.copy()
NAN[0, 3] = np.nan


@pytest.mark.parametrize("array, classes, video, says", [
    ("object", ("Diving",), "video_test_0000001", "pickled or object"),
    (GOOD[:, :100], ("Diving",), "video_test_0000001", "(5, 100)"),
    (GOOD[0], ("Diving",), "video_test_0000001", "(101,)"),
    (GOOD, ("Diving", "Parkour"), "video_test_0000001", "'Parkour'"),
    (GOOD, ("Diving",), "video_test_0000006", "'video_test_0000006'"),
    (GOOD, ("Diving",), "video_test_0000000", "'video_test_0000000'"),
    (GOOD, ("Diving",), "video_test_x", "'video_test_x'"),
    (NAN, ("Diving",), "video_test_0000001", "non-finite"),
], ids=["object", "columns", "1-D", "unknown-class", "no-row", "row-0", "no-digits", "nan"])
def test_bad_input_is_a_one_line_error_naming_the_file(tmp_path, array, classes, video, says):
    marker = tmp_path / "unpickled"
    path = tmp_path / "uNet_bad.npy"
    np.save(path, np.array([Unpickled(marker)], dtype=object) if isinstance(array, str) else array,
            allow_pickle=True)
    with pytest.raises(InputError) as error:
        untrimmednet_scores(path, classes, [video])
    message = str(error.value)
    assert "uNet_bad.npy" in message and says in message and "\n" not in message, message
    assert not marker.exists()  # an object array is refused, never unpickled


def test_reading_npy_scores_needs_the_classes_and_videos(thumos):
    annotations, test, npy = thumos
    with pytest.raises(InputError, match="uNet_test.npy.*classes and video ids"):
        read_external_scores(npy)
    ids = [v.id for v in test[:3]]
    assert read_external_scores(npy, annotations.classes, ids) == untrimmednet_scores(npy, annotations.classes, ids)


def table_of(rows) -> "SegmentTable":
    from benchmark.evaluation.segments import SegmentTable

    return SegmentTable.from_rows(rows, with_score=True)


def test_top_class_filter_keeps_the_classes_above_the_prior_and_at_least_the_best():
    """Ti-FAD's rule by hand: v1 scores A 0.5, B 0.2, C 0.1 -> A and B kept (> 0.15); v2 scores all below the
    prior -> only its best class (C); v3 is not in the file -> untouched. Labels and scores never change."""
    from methods.label_fusion import filter_top_classes

    pred = table_of([("v1", 0, 1, "A", 0.9), ("v1", 1, 2, "B", 0.8), ("v1", 2, 3, "C", 0.7),
                     ("v2", 0, 1, "A", 0.9), ("v2", 1, 2, "C", 0.3), ("v3", 0, 1, "B", 0.2)])
    scores = {"v1": {"A": 0.5, "B": 0.2, "C": 0.1}, "v2": {"A": 0.05, "B": 0.04, "C": 0.1}}
    kept = filter_top_classes(pred, scores)
    assert list(zip(kept.video, kept.label, kept.score)) == [("v1", "A", 0.9), ("v1", "B", 0.8), ("v2", "C", 0.3),
                                                             ("v3", "B", 0.2)]
    assert len(filter_top_classes(pred, scores, prior=0.3)) == 3  # v1: A only


def test_class_scores_file_is_read_by_name_and_bad_files_are_one_line(tmp_path, thumos):
    from methods.label_fusion import read_class_scores

    path = tmp_path / "cuhk.json"
    path.write_text('{"class": ["B", "A", "C"], "results": {"v_x": [0.1, 0.7, 0.2], "y": [0.3, 0.3, 0.4]}}')
    assert read_class_scores(path, ["A", "C"], ["x", "y", "z"]) == {"x": {"A": 0.7, "C": 0.2}, "y": {"A": 0.3, "C": 0.4}}
    with pytest.raises(InputError, match="cuhk.json: 1 classes have no score column, e.g. 'D'"):
        read_class_scores(path, ["A", "D"], ["x"])
    path.write_text('{"class": ["B", "A", "C"], "results": {"v_x": [0.1, 0.7]}}')
    with pytest.raises(InputError, match="cuhk.json: video x: expected 3 scores"):
        read_class_scores(path, ["A"], ["x"])
    # UntrimmedNet's .npy: the same probabilities its top-1 reader takes the best of
    annotations, test, npy = thumos
    ids = [v.id for v in test[:5]]
    full, top = read_class_scores(npy, annotations.classes, ids), untrimmednet_scores(npy, annotations.classes, ids)
    assert all(max(full[v], key=full[v].get) == top[v]["class"] and max(full[v].values()) == top[v]["score"] for v in ids)
