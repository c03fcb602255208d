"""Prediction files (benchmark/evaluation/predictions.py): both formats, the checks, the round trip."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from benchmark.data.annotations import load_annotations
from benchmark.errors import InputError
from benchmark.evaluation.detection import evaluate_detection
from benchmark.evaluation.predictions import PredictionError, load_predictions, write_predictions
from benchmark.evaluation.segments import SegmentTable

DETECTIONS = {
    "v_a": [{"segment": [0.5, 2.25], "label": "Long jump", "score": 0.9},
            {"segment": [1.0, 1.0], "label": "Diving", "score": 0.1}],
    "b": [{"segment": [0.1 + 0.2, 7.0], "label": "Diving", "score": 1 / 3}],
}


@pytest.fixture(scope="module")
def anet_annotations(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_annotations(shared_data / "activitynet" / "activity_net.v1-3.reconstructed.json")


def columns(table: SegmentTable) -> list:
    return [table.video.tolist(), table.t0.tolist(), table.t1.tolist(), table.label.tolist(), table.score.tolist()]


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_round_trip_is_exact(tmp_path, suffix):
    table = load_predictions(write_predictions(tmp_path / f"p{suffix}", DETECTIONS))
    assert columns(table) == [["v_a", "v_a", "b"], [0.5, 1.0, 0.1 + 0.2], [2.25, 1.0, 7.0],
                              ["Long jump", "Diving", "Diving"], [0.9, 0.1, 1 / 3]]  # the same floats, bit for bit
    for column, (names, codes) in table.factors.items():
        assert (names[codes] == getattr(table, column)).all()


def test_csv_columns_in_any_order_with_extra_columns_and_spaces(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("score, label ,extra,t-end,video-id,t-start\n0.9,Long jump,x,2.25,v_a,0.5\n"
                    "0.1,Diving,y,1,v_a,1\n0.30, Diving,z,7,b,0.3\n")
    table = load_predictions(path)
    assert columns(table) == [["v_a", "v_a", "b"], [0.5, 1.0, 0.3], [2.25, 1.0, 7.0], ["Long jump", "Diving", "Diving"],
                              [0.9, 0.1, 0.3]]


def test_video_ids_resolve_with_or_without_prefix(tmp_path, anet_annotations):
    vid = next(v.id for v in anet_annotations.subset("validation"))
    bare = vid[2:] if vid.startswith("v_") else vid
    path = tmp_path / "p.csv"
    path.write_text(f"video-id,t-start,t-end,label,score\n{bare},0,1,x,0.5\nv_{bare},0,1,x,0.4\nnowhere,0,1,x,0.3\n")
    assert load_predictions(path, anet_annotations).video.tolist() == [vid, vid, "nowhere"]


@pytest.mark.parametrize("name, content", [
    ("empty.json", ""), ("no_results.json", '{"results": {}}'), ("empty.csv", ""),
    ("header_only.csv", "video-id,t-start,t-end,label,score\n"),
])
def test_a_file_without_predictions_is_valid_with_a_warning(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.warns(UserWarning, match="no predictions"):
        table = load_predictions(path)
    assert len(table) == 0
    gt = SegmentTable.from_rows([("a", 0.0, 1.0, "Diving")], with_score=False)
    assert evaluate_detection(gt, table, [0.5]).average == 0.0


@pytest.mark.parametrize("content, message", [
    ("video-id,t-start,t-end,label\na,0,1,x\n", "missing column.*score"),
    ("video-id,t-start,t-end,label,score\na,0,1,x,0.5,extra,more\n", "malformed CSV"),
    ("video-id,t-start,t-end,label,score\na,0,1,x,0.5\nb,0,1,x,nan\n", "line 3 \\(video b\\): score is not a finite"),
    ("video-id,t-start,t-end,label,score\na,0,1,x,inf\n", "line 2 \\(video a\\): score is not a finite"),
    ("video-id,t-start,t-end,label,score\na,zero,1,x,0.5\n", "line 2 \\(video a\\): t-start is not a number: 'zero'"),
    ("video-id,t-start,t-end,label,score\na,0,1,x,\n", "line 2 \\(video a\\): score is not a number"),
    ("video-id,t-start,t-end,label,score\na,0,1,x,0.5\na,3,1,x,0.5\n", "line 3 \\(video a\\): segment \\[3, 1\\] has negative"),
    ("video-id,t-start,t-end,label,score\na,0,1,,0.5\n", "line 2 \\(video a\\): label must be a non-empty"),
    ("video-id,t-start,t-end,label,score,score\na,0,1,x,0.5,0.5\n", "appear twice"),
])
def test_bad_csv_is_one_line_naming_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(PredictionError, match=message) as error:
        load_predictions(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("content, message", [
    ('{"results": {"a": [{"segment": [0, 1], "label": "x", "score": 1e400}]}}', "video a .*score is not a finite number: inf"),
    ('{"results": {"a": [{"segment": [0, 1], "label": "x", "score": Infinity}]}}', "video a .*score is not a finite"),
    ('{"results": {"a": [{"segment": [0, 1], "label": "x", "score": true}]}}', "video a .*score is not a finite"),
    ('{"results": {"a": [{"segment": [0, 1], "label": 3, "score": 1}]}}', "video a .*label must be a string"),
    ('{"results": {"a": [{"segment": [0, 1, 2], "label": "x", "score": 1}]}}', "video a .*prediction without"),
    ('{"results": {"a": [{"segment": [0, 1], "label": "x", "score": 1}], "b": 7}}', "video b: expected a list"),
    ('[1, 2]', "'results'"),
])
def test_bad_json_names_file_and_video(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(PredictionError, match=message) as error:
        load_predictions(path)
    assert isinstance(error.value, InputError) and "\n" not in str(error.value)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_unknown_class_names(tmp_path, suffix):
    path = write_predictions(tmp_path / f"p{suffix}", DETECTIONS)
    with pytest.raises(PredictionError, match="video v_a.*1 unknown class name\\(s\\), e.g. 'Long jump' \\(1 predictions\\)"):
        load_predictions(path, classes=["Diving", "Archery"])
    assert len(load_predictions(path, classes=["Diving", "Long jump"])) == 3


def test_factorised_and_plain_tables_evaluate_alike(tmp_path):
    rng = np.random.default_rng(0)
    videos, classes = [f"v{i}" for i in range(30)], ["a", "b", "c"]
    gt = SegmentTable.from_rows([(v, s, s + rng.uniform(1, 5), rng.choice(classes)) for v in videos
                                 for s in rng.uniform(0, 50, 2)], with_score=False)
    detections = {v: [{"segment": [s, s + rng.uniform(0.5, 6)], "label": str(rng.choice(classes + ["z"])),
                       "score": float(rng.random())} for s in rng.uniform(0, 50, 20)] for v in videos + ["extra"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = load_predictions(write_predictions(tmp_path / "p.json", detections))
    plain = SegmentTable(table.video, table.t0, table.t1, table.label, table.score)
    for t in (table, table.select(table.score > 0.3)):
        a = evaluate_detection(gt, t, [0.3, 0.5, 0.7])
        b = evaluate_detection(gt, SegmentTable(t.video, t.t0, t.t1, t.label, t.score), [0.3, 0.5, 0.7])
        assert a.meta == b.meta and np.array_equal(a.map, b.map) and a.map.any()
    assert not plain.factors
