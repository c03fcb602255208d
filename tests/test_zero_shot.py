import json

import numpy as np
import pytest

from benchmark.data.annotations import load_annotations
from benchmark.data.features import open_feature_store
from benchmark.data.splits import ClassSplit
from benchmark.data.zero_shot import (Dataset, closed_set_views, double_label_leaks, double_label_pairs,
                                      zero_shot_views)
from benchmark.errors import InputError

T = 10


@pytest.fixture()
def toy(tmp_path):
    """Four videos of 100 s: A only; A + C (C unseen); C only; B only. Features are the snippet index."""
    videos = {
        "a": [([0, 30], "A")],
        "ac": [([0, 30], "A"), ([50, 80], "C")],
        "c": [([10, 40], "C")],
        "b": [([20, 60], "B")],
    }
    database = {vid: {"subset": "training", "duration": 100.0,
                      "annotations": [{"segment": s, "label": label} for s, label in annotations]}
                for vid, annotations in videos.items()}
    database |= {"test_" + vid: dict(entry, subset="validation") for vid, entry in database.items()}
    (tmp_path / "gt.json").write_text(json.dumps({"version": "1.3", "taxonomy": [], "database": database}))
    (tmp_path / "features").mkdir()
    for vid in database:
        np.save(tmp_path / "features" / f"v_{vid}.npy", np.tile(np.arange(20, dtype=np.float32)[:, None], (1, 4)))
    annotations = load_annotations(tmp_path / "gt.json")
    store = open_feature_store(tmp_path / "features")
    return Dataset("toy", annotations, store, T, "training", "validation", cache_dir=tmp_path / "cache")


SPLIT = ClassSplit("toy", 0.75, 0, ("A", "B"), ("C",), "x", "generated", 0)


def test_unseen_instances_become_background_in_training(toy):
    train, test = zero_shot_views(toy, SPLIT)
    ids = [v.id for v in train.videos]
    assert ids == ["a", "ac", "b"]  # "c" has no seen instance left
    ac = ids.index("ac")
    assert [i.label for i in train.videos[ac].instances] == ["A"]
    assert train.classes == ("A", "B")
    background = len(train.classes)
    assert (train.targets.cls[ac, 5:8] == background).all()  # C's snippets [50, 80) are background
    assert (train.targets.cls[ac, :3] == 0).all()
    assert train.features.shape == (3, T, 4)


def test_drop_videos_with_unseen_instances(toy):
    train, _ = zero_shot_views(toy, SPLIT, unseen_in_training="drop")
    assert [v.id for v in train.videos] == ["a", "b"]


def test_test_view_scores_unseen_videos_with_unseen_gt_only(toy):
    _, test = zero_shot_views(toy, SPLIT)
    assert [v.id for v in test.videos] == ["test_ac", "test_c"]
    assert test.classes == ("C",)
    assert list(test.gt.label) == ["C", "C"] and list(test.gt.video) == ["test_ac", "test_c"]
    _, everything = zero_shot_views(toy, SPLIT, score_all_test_videos=True)
    assert len(everything.videos) == 4 and len(everything.gt) == 2


def test_last_annotation_only_mimics_the_released_loader(toy):
    train, _ = zero_shot_views(toy, ClassSplit("toy", 0.75, 0, ("A", "C"), ("B",), "x", "generated", 0), last_only=True)
    ac = [v for v in train.videos if v.id == "ac"][0]
    assert [i.label for i in ac.instances] == ["C"]


def test_closed_set_uses_every_class(toy):
    train, test = closed_set_views(toy)
    assert train.classes == test.classes == ("A", "B", "C")
    assert len(test.gt) == 5


def test_cliffdiving_diving_leak_is_flagged():
    pairs = [("CliffDiving", "Diving")]
    split = ClassSplit("THUMOS14", 0.75, 2, ("CliffDiving",), ("Diving",), "x", "imported", None)
    assert double_label_leaks(split, pairs) == ["CliffDiving/Diving double labels cross the split"]
    assert double_label_leaks(ClassSplit("THUMOS14", 0.75, 0, ("CliffDiving", "Diving"), ("X",), "x", "g", 0), pairs) == []


@pytest.fixture()
def twins(tmp_path):
    """Training: "xy" holds one segment labelled X and Y (Y ⊂ X: every Y instance is an X instance) and one
    X-only segment; "x" an X instance; "z" a Z instance. Test: the same videos."""
    videos = {"xy": [([0, 30], "X"), ([0, 30], "Y"), ([50, 80], "X")], "x": [([10, 20], "X")], "z": [([5, 9], "Z")]}
    database = {f"{subset[0]}{vid}": {"subset": subset, "duration": 100.0,
                                      "annotations": [{"segment": seg, "label": label} for seg, label in annotations]}
                for subset in ("training", "validation") for vid, annotations in videos.items()}
    (tmp_path / "gt.json").write_text(json.dumps({"version": "1.3", "taxonomy": [], "database": database}))
    (tmp_path / "features").mkdir()
    for vid in database:
        np.save(tmp_path / "features" / f"v_{vid}.npy", np.ones((20, 4), np.float32))
    annotations = load_annotations(tmp_path / "gt.json")
    return Dataset("twins", annotations, open_feature_store(tmp_path / "features"), T, "training", "validation")


def test_double_label_pairs_are_found_in_the_annotations(twins):
    assert double_label_pairs(twins.annotations) == [("Y", "X")]  # X has an instance Y has not: not the other way


def test_remove_twins_drops_training_instances_also_annotated_with_an_unseen_class(twins):
    split = ClassSplit("twins", 0.75, 0, ("X", "Z"), ("Y",), "x", "generated", 0)
    kept, _ = zero_shot_views(twins, split)  # as published: the Y instance is learnt as X
    clean, test = zero_shot_views(twins, split, double_labels="remove_twins")
    instances = lambda view: {(v.id, i.start, i.label) for v in view.videos for i in v.instances}  # noqa: E731
    assert instances(kept) - instances(clean) == {("txy", 0.0, "X")}  # only the twin of the unseen instance goes
    assert ("txy", 50.0, "X") in instances(clean) and ("tx", 10.0, "X") in instances(clean)
    assert test.notes == ("Y/X double labels cross the split",)
    with pytest.raises(InputError, match="double_labels must be one of keep, remove_twins"):
        zero_shot_views(twins, split, double_labels="drop")


def test_leaky_published_thumos_splits_are_exactly_the_known_ones(shared_data):
    from benchmark.data.splits import import_split_lists

    with pytest.warns(UserWarning):
        annotations = load_annotations(shared_data / "thumos14/thumos14.json")
    pairs = double_label_pairs(annotations)
    assert pairs == [("CliffDiving", "Diving")]  # found in the file, not written down anywhere in the code
    leaky = {ratio: [s.index for s in import_split_lists(shared_data / "splits", "THUMOS14", annotations.classes, ratio)
                     if double_label_leaks(s, pairs)] for ratio in (0.75, 0.5)}
    assert leaky == {0.75: [2, 5, 6, 7], 0.5: [2, 4, 5, 6, 7, 9]}  # as SOURCES.md lists them


def test_test_subsets_all_adds_training_videos_with_an_unseen_instance(toy):
    """T3AL's released loader: every annotated video with an unseen instance, the training subset's too."""
    _, test = zero_shot_views(toy, SPLIT, test_subsets="all")
    assert sorted(v.id for v in test.videos) == ["ac", "c", "test_ac", "test_c"]
    assert len(test.gt) == 4 and set(test.gt.label) == {"C"}
    with pytest.raises(InputError, match="test_subsets must be one of test, all"):
        zero_shot_views(toy, SPLIT, test_subsets="train")
