"""Box-level readers on the real files (../shared/data), the writers' round trips, and bad input."""
from __future__ import annotations

import json
import pickle
import time
import warnings

import numpy as np
import pytest

from benchmark import cli
from benchmark.data.annotations import AnnotationError
from benchmark.data.box_annotations import (AvaLabelMap, BoxAnnotations, box_dataset_info, detect_box_format,
                                            load_ava, load_box_annotations, load_person_boxes, read_ava_csv,
                                            read_ava_exclusions, read_ava_label_map, read_ava_person_boxes)
from benchmark.data.box_writers import (stclip_image_ids, write_act_pkl, write_ava_csv, write_ava_exclusions,
                                        write_ava_label_map, write_person_boxes, write_stclip_json, write_ucf_pyannot)
from benchmark.data.safe_pickle import load_pickle
from benchmark.evaluation.boxes import BoxTable


def rows(table: BoxTable, bare_video: bool = False) -> list[tuple]:
    """A table as sorted plain rows (video, frame, x1, y1, x2, y2, label[, person][, score])."""
    video = [v.split("/")[-1] for v in table.video.tolist()] if bare_video else table.video.tolist()
    columns = [video, table.frame.tolist(), *table.box.T.tolist(), table.label.tolist()]
    columns += [c.tolist() for c in (table.person, table.score) if c is not None]
    return sorted(zip(*columns))


def same_table(a: BoxTable, b: BoxTable) -> bool:
    """Equal up to row order (a vectorised ``rows(a) == rows(b)`` for the 574k UCF rows)."""
    def ordered(t):
        person = t.person if t.person is not None else np.zeros(len(t), np.int64)
        order = np.lexsort((t.label, person, *t.box.T[::-1], t.frame, t.video))
        return [t.video[order], t.frame[order], t.box[order], t.label[order], person[order]]
    return (a.person is None) == (b.person is None) and all(np.array_equal(x, y) for x, y in zip(ordered(a), ordered(b)))


def same_annotations(a: BoxAnnotations, b: BoxAnnotations) -> None:
    assert same_table(a.gt, b.gt)
    assert (a.labels, a.nframes, a.resolution, a.splits, a.label_types) == (b.labels, b.nframes, b.resolution, b.splits, b.label_types)
    assert (a.keyframes is None) == (b.keyframes is None)
    if a.keyframes is not None:
        assert same_table(a.keyframes, b.keyframes)


@pytest.fixture(scope="module")
def jhmdb(shared_data):
    return load_box_annotations(shared_data / "jhmdb/JHMDB-GT.pkl")


@pytest.fixture(scope="module")
def stclip(shared_data):
    return load_box_annotations(shared_data / "jhmdb/jhmdb_test_gt_min.json")


@pytest.fixture(scope="module")
def ucf(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the 6 training videos without annotations
        return load_box_annotations(shared_data / "ucf101_24/pyannot_with_class_names.pkl")


# ---------------------------------------------------------------------------------------------- real files

def test_jhmdb_act_pickle(jhmdb):
    assert jhmdb.format == "act_pkl" and len(jhmdb.labels) == 21 and jhmdb.labels[0] == "brush_hair"
    assert len(jhmdb.videos) == 928 == len(jhmdb.nframes)
    assert [(len(train), len(test)) for train, test in jhmdb.splits] == [(660, 268), (658, 270), (663, 265)]
    assert all(not set(train) & set(test) and set(train) | set(test) == set(jhmdb.videos) for train, test in jhmdb.splits)
    gt = jhmdb.gt
    assert len(gt) == 31852 == sum(jhmdb.nframes.values())  # one tube per video over every frame
    assert (gt.person == 0).all() and gt.score is None
    assert set(jhmdb.resolution.values()) == {(240, 320)}
    assert gt.frame.min() == 1 and all(gt.frame[gt.video == v].max() == n for v, n in list(jhmdb.nframes.items())[:50])
    assert (np.char.partition(gt.video, "/")[:, 0] == gt.label).all()  # videos are class/video
    assert (gt.box[:, 2] > gt.box[:, 0]).all() and (gt.box[:, 3] > gt.box[:, 1]).all()
    assert jhmdb.keyframes is None and jhmdb.notes == {}


def test_stclip_json_equals_jhmdb_split1_test_rows(jhmdb, stclip):
    test = set(jhmdb.splits[0][1])
    split1 = jhmdb.gt.select(np.isin(jhmdb.gt.video, list(test)))
    assert len(set(stclip.gt.video.tolist())) == 268 and len(stclip.gt) == 9139 == len(split1)
    assert stclip.labels == jhmdb.labels  # from all_label.txt beside the JSON
    drop_person = lambda t: BoxTable(t.video, t.frame, t.box, t.label)  # noqa: E731  (tube index vs person_id 1)
    assert rows(drop_person(stclip.gt)) == rows(drop_person(split1), bare_video=True)
    assert len(stclip.keyframes) == 9139 and stclip.splits == () and stclip.nframes == {}
    assert set(stclip.resolution.values()) == {(240, 320)}


def test_stclip_labels_argument(shared_data, tmp_path):
    src = shared_data / "jhmdb/jhmdb_test_gt_min.json"
    moved = tmp_path / "gt.json"
    moved.write_bytes(src.read_bytes())
    with pytest.raises(AnnotationError, match="needs its label list: all_label.txt beside it"):
        load_box_annotations(moved)
    names = [f"c{i}" for i in range(21)]
    ann = load_box_annotations(moved, labels=names)
    assert ann.labels == tuple(names) and set(ann.gt.label.tolist()) <= set(names)
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    assert rows(load_box_annotations(moved, labels=tmp_path / "names.txt").gt) == rows(ann.gt)


def test_person_boxes(shared_data, stclip):
    boxes = load_person_boxes(shared_data / "jhmdb/jhmdb_faster_RCNN_person.json", shared_data / "jhmdb/jhmdb_test_gt_min.json")
    assert len(boxes) == 44374 and len(boxes.keys()) == 9114
    assert set(boxes.label.tolist()) == {"person"} and boxes.person is None
    assert boxes.score.min() >= 0.05 and boxes.score.max() <= 1
    assert set(boxes.video.tolist()) <= set(stclip.gt.video.tolist())
    first = json.loads((shared_data / "jhmdb/jhmdb_faster_RCNN_person.json").read_text())[0]
    assert boxes.box[0].tolist() == first["bbox"] and boxes.score[0] == float(first["score"])


def test_ucf101_24_pyannot(ucf, shared_data):
    assert ucf.format == "ucf_pyannot" and len(ucf.labels) == 24 and len(ucf.videos) == 3194
    (train, test), = ucf.splits
    assert len(train) == 2290 and len(test) == 910 and not set(train) & set(test)
    assert ucf.notes == {"split videos without annotations in 'db' (kept in the splits)": 6}
    assert len(ucf.gt) == 573862 and len(np.unique(np.char.add(ucf.gt.video, ucf.gt.person.astype(str)))) == 4458
    assert set(ucf.resolution.values()) == {(240, 320)}
    box = ucf.gt.box  # x2 = x + w, y2 = y + h: inside the 320 x 240 frame
    assert box[:, 0].min() >= 0 and box[:, 2].max() <= 320 and box[:, 3].max() <= 240 and (box[:, 2] > box[:, 0]).all()
    # the conversion, checked on a tube whose boxes overflow uint8 if added in the file's dtype
    raw = load_pickle(shared_data / "ucf101_24/pyannot_with_class_names.pkl")
    video, entry = next((v, e) for v, e in raw["db"].items() if e["annotations"][0]["boxes"].dtype == np.uint8
                        and (e["annotations"][0]["boxes"][:, 0].astype(int) + e["annotations"][0]["boxes"][:, 2] > 255).any())
    tube = entry["annotations"][0]
    got = ucf.gt.select((ucf.gt.video == video) & (ucf.gt.person == 0))
    xywh = tube["boxes"].astype(float)
    assert got.frame.tolist() == list(range(tube["sf"] + 1, tube["ef"] + 1))
    assert np.array_equal(got.box, np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]))
    assert set(got.label.tolist()) == {raw["classes"][tube["label"]]}


def test_ucf_test_list_defaults(shared_data, tmp_path):
    """Without testlist01.txt beside it, the test videos are the annotated videos not in trainvideos."""
    moved = tmp_path / "pyannot_with_class_names.pkl"
    moved.write_bytes((shared_data / "ucf101_24/pyannot_with_class_names.pkl").read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ann = load_box_annotations(moved)
    assert len(ann.splits[0][1]) == 910 and ann.notes == {"split videos without annotations in 'db' (kept in the splits)": 6}


def test_dataset_info_of_the_real_files(jhmdb, ucf, stclip):
    info = box_dataset_info(jhmdb)["subsets"]
    assert info["all"] == {"videos": 928, "annotated_frames": 31852, "frames_with_boxes": 31852, "boxes": 31852,
                           "tubes": 928, "classes": 21}
    assert info["split1/test"]["videos"] == 268 and info["split1/test"]["frames_with_boxes"] == 9139
    info = box_dataset_info(ucf)["subsets"]
    assert info["split1/test"] == {"videos": 910, "annotated_frames": 159289, "frames_with_boxes": 138527,
                                   "boxes": 170580, "tubes": 1315, "classes": 24}  # STAD.md §2.2: 1,315 tubes, 159,289 frames
    assert info["all"]["tubes"] == 4458 and info["all"]["boxes"] == 573862
    assert box_dataset_info(stclip)["subsets"]["all"]["annotated_frames"] == 9139


@pytest.mark.parametrize("name", ["jhmdb/JHMDB-GT.pkl", "ucf101_24/pyannot_with_class_names.pkl", "jhmdb/jhmdb_test_gt_min.json"])
def test_dataset_info_command(shared_data, capsys, name):
    assert cli.main(["dataset-info", "--annotations", str(shared_data / name), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == {"pkl": "act_pkl" if "JHMDB" in name else "ucf_pyannot", "json": "stclip_json"}[name.rsplit(".")[-1]]
    assert cli.main(["dataset-info", "--annotations", str(shared_data / name)]) == 0
    assert "frames with boxes" in capsys.readouterr().out


def test_temporal_files_still_get_the_temporal_summary(shared_data, capsys):
    path = shared_data / "thumos14/thumos14.json"
    assert detect_box_format(path) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert cli.main(["dataset-info", "--annotations", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "actionformer"


def test_reading_is_fast(shared_data):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        load_box_annotations(shared_data / "ucf101_24/pyannot_with_class_names.pkl")
    assert time.perf_counter() - start < 10  # ~1 s on 2 CPU cores (574k boxes); a per-box Python loop is ~10x


# ---------------------------------------------------------------------------------------------- writers: round trips

def test_jhmdb_round_trip(jhmdb, tmp_path):
    path = write_act_pkl(jhmdb, tmp_path / "JHMDB-GT.pkl")
    assert path.read_bytes()[:2] == b"\x80\x02"  # protocol 2
    same_annotations(load_box_annotations(path), jhmdb)
    python2 = write_act_pkl(jhmdb, tmp_path / "py2" / "JHMDB-GT.pkl", protocol=0, python2=True)
    same_annotations(load_box_annotations(python2), jhmdb)


def test_ucf_round_trip_reproduces_the_file(ucf, shared_data, tmp_path):
    path = write_ucf_pyannot(ucf, tmp_path / "pyannot_with_class_names.pkl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        same_annotations(load_box_annotations(path), ucf)
    original, written = (load_pickle(p) for p in (shared_data / "ucf101_24/pyannot_with_class_names.pkl", path))
    assert written["trainvideos"] == original["trainvideos"] and written["classes"] == original["classes"]
    for video, entry in original["db"].items():
        tubes = written["db"][video]["annotations"]
        assert written["db"][video]["numf"] == entry["numf"] and written["db"][video]["label"] == entry["label"]
        assert [(t["label"], t["sf"], t["ef"]) for t in tubes] == [(t["label"], t["sf"], t["ef"]) for t in entry["annotations"]]
        assert all(np.array_equal(a["boxes"], b["boxes"]) for a, b in zip(tubes, entry["annotations"]))


def test_stclip_and_person_box_round_trip(shared_data, stclip, tmp_path):
    gt_path = write_stclip_json(stclip, tmp_path / "gt.json")
    again = load_box_annotations(gt_path)
    same_annotations(again, stclip)
    boxes = load_person_boxes(shared_data / "jhmdb/jhmdb_faster_RCNN_person.json", shared_data / "jhmdb/jhmdb_test_gt_min.json")
    ids = stclip_image_ids(zip(stclip.keyframes.video.tolist(), stclip.keyframes.frame.tolist()))
    box_path = write_person_boxes(boxes, tmp_path / "person.json", ids)
    assert rows(load_person_boxes(box_path, gt_path)) == rows(boxes)
    assert rows(load_person_boxes(box_path, {i: key for key, i in ids.items()})) == rows(boxes)
    written = json.loads(box_path.read_text())
    assert all(isinstance(d["score"], str) for d in written)
    image = np.array([d["image_id"] for d in written])
    score = np.array([float(d["score"]) for d in written])
    same_image = image[1:] == image[:-1]
    assert (np.diff(image) >= 0).all() and (score[1:][same_image] <= score[:-1][same_image]).all()


def small_ann(person=True) -> BoxAnnotations:
    """Two videos, two labels, one two-tube video, one multi-label person (row per label)."""
    gt = BoxTable.from_rows([
        ("a/v1", 1, 10, 20, 50, 80, "a"), ("a/v1", 2, 11, 21, 51, 81, "a"), ("a/v1", 2, 0, 0, 5.5, 9.5, "b"),
        ("b/v2", 3, 1, 2, 3, 4, "b"), ("b/v2", 4, 1, 2, 3, 4.5, "b"),
    ], with_score=False)
    gt = BoxTable(gt.video, gt.frame, gt.box, gt.label, person=np.array([0, 0, 1, 0, 0]) if person else None)
    return BoxAnnotations("hand", "act_pkl", ("a", "b"), gt, {"a/v1": 3, "b/v2": 4, "c/v3": 2},
                          {"a/v1": (240, 320), "b/v2": (240, 320), "c/v3": (120, 160)},
                          ((("a/v1",), ("b/v2", "c/v3")), (("b/v2", "c/v3"), ("a/v1",))))


@pytest.mark.parametrize("protocol, python2", [(0, False), (2, False), (4, False), (0, True), (2, True)])
def test_act_round_trip_small(tmp_path, protocol, python2):
    ann = small_ann()
    path = write_act_pkl(ann, tmp_path / "x-GT.pkl", protocol=protocol, python2=python2)
    if python2:  # Python-2 `str` opcodes, as in JHMDB-GT.pkl: a plain pickle.load cannot decode the buffers
        with pytest.raises(UnicodeDecodeError):
            pickle.loads(path.read_bytes())
    back = load_box_annotations(path)
    same_annotations(back, ann)
    assert back.gt.factors["video"][0].tolist() == ["a/v1", "b/v2", "c/v3"]  # every video, tubes or not


def test_stclip_round_trip_with_multi_label_persons(tmp_path):
    gt = BoxTable.from_rows([("v1", 1, 0.5, 1, 2, 3, "b"), ("v1", 1, 0.5, 1, 2, 3, "a"), ("v1", 2, 1, 1, 2, 3, "a")], False)
    gt = BoxTable(gt.video, gt.frame, gt.box, gt.label, person=np.array([3, 3, 3]))
    keys = BoxTable.from_rows([("v1", f, 0, 0, 0, 0, "") for f in (1, 2, 3)], False)
    ann = BoxAnnotations("hand", "stclip_json", ("a", "b"), gt, resolution={"v1": (240, 320)}, keyframes=keys)
    path = write_stclip_json(ann, tmp_path / "t.json")
    raw = json.loads(path.read_text())
    assert len(raw["images"]) == 3 and [a["action_ids"] for a in raw["annotations"]] == [[1, 2], [1]]
    same_annotations(load_box_annotations(path), ann)


# ---------------------------------------------------------------------------------------------- AVA

LABEL_MAP_80 = '''item {
  name: "bend/bow (at the waist)"
  id: 1
  label_type: PERSON_MOVEMENT
}
item {
  name: "crawl"
  id: 2
  label_type: PERSON_MOVEMENT
}
item {
  name: "answer phone"
  id: 3
  label_type: OBJECT_MANIPULATION
}
item {
  name: "fight/hit (a person)"
  id: 64
  label_type: PERSON_INTERACTION
}
'''
LABEL_MAP_60 = '''# the 60 evaluated classes (excerpt): ids are not contiguous, no label_type
item {
  name: "bend/bow (at the waist)"
  id: 1
}
item {
  name: "answer phone"
  id: 3
}
'''
AVA_CSV = """-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,1,0
-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,3,0
-5KQ66BBWC4,0902,0.332,0.194,0.554,0.952,2,1
-5KQ66BBWC4,0903,0.076,0.150,0.282,0.810,64,0
-5KQ66BBWC4,0904
1j20qq1JyX4,1798,0.000,0.000,1.000,1.000,3,4
"""


@pytest.fixture
def ava_files(tmp_path):
    (tmp_path / "ava_action_list_v2.2.pbtxt").write_text(LABEL_MAP_80)
    (tmp_path / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text(LABEL_MAP_60)
    (tmp_path / "ava_val_v2.2.csv").write_text(AVA_CSV)
    (tmp_path / "ava_val_excluded_timestamps_v2.2.csv").write_text("-5KQ66BBWC4,0905\n1j20qq1JyX4,0902\n")
    return tmp_path


def test_ava_label_maps(ava_files):
    eighty = read_ava_label_map(ava_files / "ava_action_list_v2.2.pbtxt")
    assert eighty.names == {1: "bend/bow (at the waist)", 2: "crawl", 3: "answer phone", 64: "fight/hit (a person)"}
    assert eighty.label_types["answer phone"] == "OBJECT_MANIPULATION"
    sixty = read_ava_label_map(ava_files / "ava_action_list_v2.2_for_activitynet_2019.pbtxt")
    assert sixty == AvaLabelMap({1: "bend/bow (at the waist)", 3: "answer phone"}, {})


def test_ava_csv(ava_files):
    ann = read_ava_csv(ava_files / "ava_val_v2.2.csv", ava_files / "ava_action_list_v2.2.pbtxt")
    assert ann.format == "ava_csv" and ann.labels == ("bend/bow (at the waist)", "crawl", "answer phone", "fight/hit (a person)")
    assert len(ann.gt) == 5 and ann.gt.frame.tolist() == [902, 902, 902, 903, 1798]
    assert ann.gt.label.tolist()[:2] == ["bend/bow (at the waist)", "answer phone"]  # one row per (box, label)
    assert ann.gt.person.tolist() == [0, 0, 1, 0, 4] and ann.gt.box[4].tolist() == [0, 0, 1, 1]
    assert rows(ann.keyframes)[2][:2] == ("-5KQ66BBWC4", 904) and len(ann.keyframes) == 4  # the empty keyframe counts
    assert ann.label_types["fight/hit (a person)"] == "PERSON_INTERACTION" and ann.notes == {}
    info = box_dataset_info(ann)["subsets"]["all"]
    assert info == {"videos": 2, "annotated_frames": 4, "frames_with_boxes": 3, "boxes": 4, "tubes": 3, "classes": 4}


def test_ava_csv_with_the_60_class_map_drops_other_ids(ava_files):
    with pytest.warns(UserWarning, match="2 × rows with an action id outside the label map"):
        ann = load_box_annotations(ava_files / "ava_val_v2.2.csv", labels=ava_files / "ava_action_list_v2.2_for_activitynet_2019.pbtxt")
    assert ann.labels == ("bend/bow (at the waist)", "answer phone") and len(ann.gt) == 3 and len(ann.keyframes) == 4


def test_ava_csv_without_a_map_keeps_action_ids(ava_files):
    ann = load_box_annotations(ava_files / "ava_val_v2.2.csv")
    assert ann.labels == ("1", "2", "3", "64") and ann.gt.label.tolist()[3] == "64"


def test_ava_train_and_val_as_one_dataset(ava_files):
    (ava_files / "ava_train_v2.2.csv").write_text("trainMovie01,0902,0.1,0.1,0.5,0.9,2,0\ntrainMovie01,0903\n")
    ann = load_ava(ava_files / "ava_train_v2.2.csv", ava_files / "ava_val_v2.2.csv", ava_files / "ava_action_list_v2.2.pbtxt")
    assert ann.splits == ((("trainMovie01",), ("-5KQ66BBWC4", "1j20qq1JyX4")),)
    assert len(ann.gt) == 6 and ann.gt.video[0] == "trainMovie01" and len(ann.keyframes) == 6
    assert ann.resolution["1j20qq1JyX4"] == (1, 1) and ann.video_classes["trainMovie01"] == {"crawl"}
    (ava_files / "ava_train_v2.2.csv").write_text("1j20qq1JyX4,0902,0.1,0.1,0.5,0.9,2,0\n")
    with pytest.raises(AnnotationError, match="1 movies are also in"):
        load_ava(ava_files / "ava_train_v2.2.csv", ava_files / "ava_val_v2.2.csv", ava_files / "ava_action_list_v2.2.pbtxt")


def test_ava_person_boxes_in_the_lfb_layout(ava_files):
    path = ava_files / "ava_val_predicted_boxes.csv"
    path.write_text("-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,,0.998\n-5KQ66BBWC4,0903,0.1,0.2,0.3,0.4,,0.5\n")
    boxes = load_person_boxes(path)  # a .csv: the AVA layout, no image index needed
    assert rows(boxes) == [("-5KQ66BBWC4", 902, 0.077, 0.151, 0.283, 0.811, "person", 0.998),
                           ("-5KQ66BBWC4", 903, 0.1, 0.2, 0.3, 0.4, "person", 0.5)]
    path.write_text("-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,,high\n")
    with pytest.raises(AnnotationError, match=r"ava_val_predicted_boxes.csv: line 1: .* must be numbers") as e:
        load_person_boxes(path)
    assert "\n" not in str(e.value)
    path.write_text("-5KQ66BBWC4,0902,0.077,0.151,0.283\n")
    with pytest.raises(AnnotationError, match="line 1: expected 8 columns"):
        read_ava_person_boxes(path)


def test_ava_exclusions(ava_files):
    assert read_ava_exclusions(ava_files / "ava_val_excluded_timestamps_v2.2.csv") == {("-5KQ66BBWC4", 905), ("1j20qq1JyX4", 902)}


def test_ava_round_trip(ava_files, tmp_path):
    label_map = read_ava_label_map(ava_files / "ava_action_list_v2.2.pbtxt")
    ann = read_ava_csv(ava_files / "ava_val_v2.2.csv", label_map)
    out = tmp_path / "out"
    write_ava_label_map(label_map.names, out / "map.pbtxt", label_map.label_types)
    assert read_ava_label_map(out / "map.pbtxt") == label_map
    csv_path = write_ava_csv(ann, out / "ava_val_v2.2.csv", label_map.names)
    assert csv_path.read_text() == AVA_CSV  # the file's own layout, byte for byte
    same_annotations(read_ava_csv(csv_path, out / "map.pbtxt"), ann)
    no_map = read_ava_csv(ava_files / "ava_val_v2.2.csv")
    assert write_ava_csv(no_map, out / "ids.csv").read_text() == AVA_CSV
    keys = read_ava_exclusions(ava_files / "ava_val_excluded_timestamps_v2.2.csv")
    assert read_ava_exclusions(write_ava_exclusions(keys, out / "excl.csv")) == keys


def test_label_map_names_with_quotes_round_trip(tmp_path):
    names = {1: 'say "hi"', 2: "a\\b"}
    assert read_ava_label_map(write_ava_label_map(names, tmp_path / "m.pbtxt")).names == names


# ---------------------------------------------------------------------------------------------- bad input

def act_raw(**changes) -> dict:
    raw = {"labels": ["run", "walk"], "nframes": {"run/v1": 3},
           "gttubes": {"run/v1": {0: [np.array([[1, 10, 10, 20, 20], [2, 10, 10, 20, 20], [3, 10, 10, 20, 20]], np.float32)]}},
           "train_videos": [["run/v1"]], "test_videos": [[]], "resolution": {"run/v1": (240, 320)}}
    raw.update(changes)
    return raw


def tube(*rows) -> dict:
    return {"run/v1": {0: [np.array(rows, dtype=np.float32)]}}


@pytest.mark.parametrize("raw, message", [
    (act_raw(gttubes=tube([1, 10, 10, 5, 20])), "video run/v1: tube 0 (run) row 0: box [10.0, 10.0, 5.0, 20.0] has x2 < x1"),
    (act_raw(gttubes=tube([1, 10, 30, 20, 20])), "video run/v1: tube 0 (run) row 0: box [10.0, 30.0, 20.0, 20.0] has y2 < y1"),
    (act_raw(gttubes=tube([1, 1, 1, 2, 2], [4, 1, 1, 2, 2])), "video run/v1: tube 0 (run) row 1: frame 4 is beyond the video's 3 frames"),
    (act_raw(gttubes=tube([0, 1, 1, 2, 2])), "video run/v1: tube 0 (run) row 0: frame 0 is before the first frame (1)"),
    (act_raw(gttubes=tube([1.5, 1, 1, 2, 2])), "frame 1.5 is not a whole number"),
    (act_raw(gttubes=tube([1, np.nan, 1, 2, 2])), "video run/v1: tube 0 (run) row 0: coordinates or frame not finite"),
    (act_raw(gttubes={"run/v1": {2: [np.ones((1, 5))]}}), "video run/v1: label index 2 is out of range (2 labels, from 0)"),
    (act_raw(gttubes={"run/v1": {-1: [np.ones((1, 5))]}}), "label index -1 is out of range"),
    (act_raw(gttubes={"run/v1": {0: [np.ones((2, 4))]}}), "video run/v1: tube 0 (run): expected an array of shape (n, 5), got (2, 4)"),
    (act_raw(gttubes={"walk/v2": {}}), "video walk/v2: has tubes but no 'nframes' entry"),
    (act_raw(test_videos=[[], []]), "1 train_videos lists but 2 test_videos lists"),
    ({"labels": []}, "an ACT ground-truth pickle needs 'labels', 'gttubes' and 'nframes'"),
])
def test_bad_act_pickles(tmp_path, raw, message):
    path = tmp_path / "bad-GT.pkl"
    path.write_bytes(pickle.dumps(raw, protocol=2))
    with pytest.raises(AnnotationError) as e:
        load_box_annotations(path, format="act_pkl")
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value) and "\n" not in str(e.value)


def ucf_raw(**tube_changes) -> dict:
    t = {"label": 0, "sf": 0, "ef": 2, "boxes": np.array([[1, 2, 3, 4], [1, 2, 3, 4]], np.uint8)}
    t.update(tube_changes)
    return {"db": {"Run/v_1": {"numf": 2, "label": 0, "annotations": [t]}}, "trainvideos": ["Run/v_1"], "classes": ["Run"]}


@pytest.mark.parametrize("raw, message", [
    (ucf_raw(ef=3), "video Run/v_1: tube 0: 2 boxes for frames sf=0..ef=3 (expected ef - sf)"),
    (ucf_raw(sf=1, ef=3), "video Run/v_1: tube 0 box 1: frame 3 is beyond the video's 2 frames"),
    (ucf_raw(label=1), "video Run/v_1: tube 0: label index 1 is out of range (1 labels, from 0)"),
    (ucf_raw(boxes=np.array([[1, 2, -3, 4], [1, 2, 3, 4]])), "video Run/v_1: tube 0 box 0: box [1.0, 2.0, -2.0, 6.0] has x2 < x1"),
    (ucf_raw(boxes=np.array([[1, 2, 3, np.inf], [1, 2, 3, 4]])), "coordinates or frame not finite"),
])
def test_bad_ucf_pickles(tmp_path, raw, message):
    path = tmp_path / "pyannot.pkl"
    path.write_bytes(pickle.dumps(raw, protocol=2))
    with pytest.raises(AnnotationError) as e:
        load_box_annotations(path, test_list=None)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def test_bare_pyannot_needs_labels(tmp_path):
    path = tmp_path / "pyannot.pkl"
    path.write_bytes(pickle.dumps(ucf_raw()["db"], protocol=2))
    with pytest.raises(AnnotationError, match="a bare pyannot.pkl has label indices only"):
        load_box_annotations(path)
    ann = load_box_annotations(path, labels=["Run"])
    assert ann.format == "ucf_pyannot" and ann.gt.box[0].tolist() == [1, 2, 4, 6] and ann.gt.frame.tolist() == [1, 2]


def stclip_raw(**annotation_changes) -> dict:
    a = {"image_id": 10001, "bbox": [1, 2, 3, 4], "action_ids": [1], "person_id": 1}
    a.update(annotation_changes)
    return {"images": [{"id": 10001, "movie": "v", "timestamp": "00001", "width": 320, "height": 240}], "annotations": [a]}


@pytest.mark.parametrize("raw, message", [
    (stclip_raw(action_ids=[3]), "annotations[0]: action id 3 is out of range (2 labels, from 1)"),
    (stclip_raw(action_ids=[0]), "annotations[0]: action id 0 is out of range"),
    (stclip_raw(bbox=[5, 2, 3, 4]), "video v frame 1: box [5.0, 2.0, 3.0, 4.0] has x2 < x1"),
    (stclip_raw(bbox=[1, 2, 3]), "annotations[0]: 'bbox' must be 4 numbers"),
    (stclip_raw(image_id=7), "annotations[0]: image id 7 is not in 'images'"),
    ({"images": [{"id": 1, "movie": "v", "timestamp": "x1"}], "annotations": []}, "image 1: timestamp 'x1' is not a frame number"),
])
def test_bad_stclip_json(tmp_path, raw, message):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(AnnotationError) as e:
        load_box_annotations(path, labels=["a", "b"])
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def test_nan_in_json_is_refused(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(stclip_raw()).replace("[1, 2, 3, 4]", "[1, NaN, 3, 4]"))
    with pytest.raises(AnnotationError, match="coordinates or frame not finite"):
        load_box_annotations(path, labels=["a"])


def test_bad_person_boxes(tmp_path, shared_data):
    gt = shared_data / "jhmdb/jhmdb_test_gt_min.json"
    path = tmp_path / "p.json"
    cases = [([{"image_id": 1, "bbox": [1, 2, 3, 4], "score": "0.5"}], "box 0: image id 1 is not among the images"),
             ([{"image_id": 40014, "bbox": [1, 2, 3, 4], "score": "high"}], "box 0: score 'high' is not a number"),
             ([{"image_id": 40014, "bbox": [1, 2, 3, 4], "score": "nan"}], "box 0: score is not finite"),
             ([{"image_id": 40014, "bbox": [3, 2, 1, 4], "score": "0.5"}], "box 0 (image 40014): box [3.0, 2.0, 1.0, 4.0] has x2 < x1"),
             ({"a": 1}, "expected a JSON list of person boxes")]
    for raw, message in cases:
        path.write_text(json.dumps(raw))
        with pytest.raises(AnnotationError) as e:
            load_person_boxes(path, gt)
        assert str(e.value).startswith(f"{path}: ") and message in str(e.value), raw


AVA_BAD = [
    ("v,0902,0.5,0.1,0.2,0.9,1,0\n", "line 1: box [0.5, 0.1, 0.2, 0.9] has x2 < x1"),
    ("v,0902\nv,0902,0.1,0.1,0.2,nan,1,0\n", "line 2: coordinates or frame not finite"),
    ("v,0902,0.1,0.1,0.2,1.5,1,0\n", "line 1: box [0.1, 0.1, 0.2, 1.5] is not normalised to [0, 1]"),
    ("v,0902,0.1,0.1,0.2\n", "line 1: expected 2, 7 or 8 columns, got 5"),
    ("v,0902,0.1,0.1,0.2,0.3,x,0\n", "line 1: action id is not a non-negative whole number: 'x'"),
    ("v,0902,0.1,0.1,0.2,0.3,0,0\n", "line 1: action id 0 (ids start at 1)"),
    ("v,-1\n", "line 1: timestamp is not a non-negative whole number: '-1'"),
    ("v,0902,0.1,0.1,0.2,0.3,1,p\n", "line 1: person id 'p' is not an integer"),
]


@pytest.mark.parametrize("text, message", AVA_BAD)
def test_bad_ava_csv(tmp_path, text, message):
    path = tmp_path / "a.csv"
    path.write_text(text)
    with pytest.raises(AnnotationError) as e:
        read_ava_csv(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


@pytest.mark.parametrize("text, message", [
    ('item { name: "a" id: 1 }\nitem { name: "b" }\n', "item 2 needs a name and an id"),
    ('item { name: "a" id: 1 }\nitem { name: "b" id: 1 }\n', "id 1 appears twice ('a', 'b')"),
    ('item { name: "a" id: one }\n', "item 'a': id 'one' is not an integer"),
    ('item { name: "a" id: 1 \n', "malformed label map near 'item { name: \"a\" id: 1' (expected item { name: \"...\" id: N })"),
    ("", "no 'item' in the label map"),
])
def test_bad_label_maps(tmp_path, text, message):
    path = tmp_path / "m.pbtxt"
    path.write_text(text)
    with pytest.raises(AnnotationError) as e:
        read_ava_label_map(path)
    assert str(e.value) == f"{path}: {message}"


def test_truncated_malformed_and_unknown_files(tmp_path, shared_data):
    truncated = tmp_path / "JHMDB-GT.pkl"
    truncated.write_bytes((shared_data / "jhmdb/JHMDB-GT.pkl").read_bytes()[:100000])
    with pytest.raises(AnnotationError, match=f"^{truncated}: truncated pickle"):
        load_box_annotations(truncated)
    broken = tmp_path / "gt.json"
    broken.write_text('{"images": [')
    with pytest.raises(AnnotationError, match=f"^{broken}: malformed JSON at line 1"):
        load_box_annotations(broken)
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"boxes": []}))
    with pytest.raises(AnnotationError, match="not a recognised box-level pickle"):
        load_box_annotations(other)
    with pytest.raises(AnnotationError, match="unknown box annotation format 'mot'; known: act_pkl, ucf_pyannot, stclip_json, ava_csv"):
        load_box_annotations(other, format="mot")
    with pytest.raises(AnnotationError, match="not a box-level JSON"):
        load_box_annotations(shared_data / "thumos14/thumos14.json")
    with pytest.raises(AnnotationError, match="person-detection file, not ground truth; read it with load_person_boxes"):
        load_box_annotations(shared_data / "jhmdb/jhmdb_faster_RCNN_person.json")
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    with pytest.raises(AnnotationError.__mro__[1], match="refused to unpickle os.system"):
        load_box_annotations(evil)
    assert not (tmp_path / "pwned").exists()


def test_cli_bad_box_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "bad-GT.pkl"
    path.write_bytes(pickle.dumps(act_raw(gttubes=tube([1, 10, 10, 5, 20])), protocol=2))
    assert cli.main(["dataset-info", "--annotations", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {path}: video run/v1: tube 0 (run) row 0: box [10.0, 10.0, 5.0, 20.0] has x2 < x1"
