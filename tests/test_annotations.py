import json

import pytest

from benchmark.data.annotations import AnnotationError, load_annotations
from benchmark.data.cli import dataset_info


def counts(path, **kw):
    info = dataset_info(load_annotations(path, **kw))
    return info["classes"], {s: (d["videos"], d["instances"]) for s, d in info["subsets"].items()}


@pytest.mark.filterwarnings("ignore:.*after the video's duration")
def test_real_activitynet_v13(shared_data):
    classes, subsets = counts(shared_data / "activitynet/activity_net.v1-3.reconstructed.json")
    assert classes == 200
    assert subsets["training"] == (9649, 14859)
    assert subsets["validation"] == (4926, 7654)


@pytest.mark.filterwarnings("ignore:.*after the video's duration")
def test_real_bmn_files_agree_with_activitynet_json(shared_data):
    bmn = load_annotations(shared_data / "activitynet/anet_anno_action.json")
    anet = load_annotations(shared_data / "activitynet/activity_net.v1-3.reconstructed.json")
    assert bmn.format == "bmn" and anet.format == "activitynet"
    assert len(bmn.subset("validation")) == 4728  # BMN's validation set lacks 198 videos
    for vid in list(bmn.videos)[:500]:
        assert bmn.videos[vid].instances == anet.videos[vid].instances
        assert bmn.videos[vid].subset == anet.videos[vid].subset


@pytest.mark.filterwarnings("ignore:.*after the video's duration")
def test_real_thumos14_actionformer(shared_data):
    classes, subsets = counts(shared_data / "thumos14/thumos14.json")
    assert classes == 20
    assert subsets["Validation"] == (200, 3007)
    assert subsets["Test"] == (212, 3358)
    a = load_annotations(shared_data / "thumos14/thumos14.json")
    assert a.skipped == {"segments ending after the video's duration (kept)": 30}
    assert all(v.fps == 30.0 for v in a.subset("Test")[:5])


def test_real_thumos14_gtad(shared_data):
    a = load_annotations(shared_data / "thumos14/thumos_gt.json")
    assert a.format == "gtad" and len(a.classes) == 20
    assert len(a.subset("train")) == 200
    assert all(v.duration is None for v in a.videos.values())
    assert isinstance(a.subset("test")[0].instances[0].start, float)  # segments are strings in the file


def test_all_annotations_of_a_video_are_kept(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"version": "1.3", "taxonomy": [], "database": {
        "vid1": {"subset": "training", "duration": 100.0, "annotations": [
            {"segment": [1, 10], "label": "A"}, {"segment": [20, 30], "label": "B"}, {"segment": [40, 50], "label": "A"}]}}}))
    a = load_annotations(path)
    assert [(i.start, i.label) for i in a.videos["vid1"].instances] == [(1, "A"), (20, "B"), (40, "A")]
    assert a.classes == ("A", "B")


def anet_file(tmp_path, annotations, duration=100.0):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"version": "1.3", "taxonomy": [], "database": {
        "vidX": {"subset": "training", "duration": duration, "annotations": annotations}}}))
    return path


@pytest.mark.parametrize("annotations, duration, message", [
    ([{"segment": [10, 5], "label": "A"}], 100.0, "negative length"),
    ([{"segment": [float("nan"), 5], "label": "A"}], 100.0, "not finite"),
    ([{"segment": ["x", 5], "label": "A"}], 100.0, "not a number"),
    ([{"segment": [1, 5]}], 100.0, "without segment"),
    ([{"segment": [1, 5], "label": ""}], 100.0, "non-empty string"),
    ([{"segment": [-1, 5], "label": "A"}], 100.0, "starts before 0"),
    ([], -3.0, "duration must be positive"),
])
def test_bad_segments_give_one_line_errors_naming_file_and_video(tmp_path, annotations, duration, message):
    path = anet_file(tmp_path, annotations, duration)
    with pytest.raises(AnnotationError, match=message) as e:
        load_annotations(path)
    text = str(e.value)
    assert "\n" not in text and str(path) in text and "vidX" in text


def test_zero_length_segment_is_kept_and_beyond_duration_is_counted(tmp_path):
    path = anet_file(tmp_path, [{"segment": [5, 5], "label": "A"}, {"segment": [90, 120], "label": "A"}])
    with pytest.warns(UserWarning, match="1 × segments ending after"):
        a = load_annotations(path)
    assert [(i.start, i.end) for i in a.videos["vidX"].instances] == [(5, 5), (90, 120)]


def test_malformed_json_names_file_and_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"database": {"a": ')
    with pytest.raises(AnnotationError, match=r"broken.json: malformed JSON at line 1"):
        load_annotations(path)


def test_unknown_format_and_missing_file(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"results": {}}')
    with pytest.raises(AnnotationError, match="not a recognised annotation format"):
        load_annotations(path)
    with pytest.raises(AnnotationError, match="file not found"):
        load_annotations(tmp_path / "nope.json")


def test_bmn_needs_video_info(tmp_path):
    path = tmp_path / "anno.json"
    path.write_text(json.dumps({"v_abc": {"duration_second": 10.0, "annotations": []}}))
    with pytest.raises(AnnotationError, match="video_info_new.csv"):
        load_annotations(path)
    (tmp_path / "video_info_new.csv").write_text("video,numFrame,seconds,fps,rfps,subset,featureFrame\nv_abc,300,10,30,30,training,288\n")
    a = load_annotations(path)
    assert list(a.videos) == ["abc"] and a.videos["abc"].fps == 30.0
    assert a.resolve_video_id("v_abc") == "abc"


def test_resolve_ids_that_really_start_with_v_(shared_data):
    a = load_annotations(shared_data / "thumos14/thumos_gt.json")
    assert a.resolve_video_id("video_test_0000004") == "video_test_0000004"
    assert a.resolve_video_id("nope") is None
