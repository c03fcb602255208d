import json

import pytest

from benchmark.data.annotations import load_annotations
from benchmark.data.splits import (REPO_SPLITS, SplitError, class_list_hash, generate_splits, import_split_lists,
                                   load_splits, read_split, setting_ratio, write_splits)

CLASSES = [f"class {i:02d}" for i in range(20)]


def test_generation_is_deterministic_disjoint_and_covering():
    a = generate_splits("toy", CLASSES, 0.75, n=10, seed=3)
    b = generate_splits("toy", list(reversed(CLASSES)), 0.75, n=10, seed=3)
    assert a == b
    for s in a:
        assert len(s.seen) == 15 and len(s.unseen) == 5
        assert set(s.seen).isdisjoint(s.unseen) and set(s.seen) | set(s.unseen) == set(CLASSES)
    assert len({s.unseen for s in a}) == 10  # ten different samplings
    assert generate_splits("toy", CLASSES, 0.75, n=10, seed=4) != a
    assert generate_splits("toy", CLASSES, 0.75, n=3, seed=3) == a[:3]  # split i depends only on i


def test_write_and_read_round_trip(tmp_path):
    splits = generate_splits("toy", CLASSES, 0.5, n=2, seed=0)
    paths = write_splits(splits, tmp_path)
    record = json.loads(paths[1].read_text())
    assert record["seed"] == 0 and record["ratio"] == 0.5 and record["index"] == 1
    assert record["class_list_sha256"] == class_list_hash(CLASSES)
    assert load_splits(tmp_path, "toy", "generated", 0.5, CLASSES) == splits
    with pytest.raises(SplitError, match="another class list"):
        read_split(paths[0], CLASSES[:-1])


def test_committed_splits_match_the_generator(shared_data):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dataset, path in (("ActivityNet", "activitynet/activity_net.v1-3.reconstructed.json"),
                              ("THUMOS14", "thumos14/thumos14.json")):
            classes = load_annotations(shared_data / path).classes
            for ratio in (0.75, 0.5):
                assert load_splits(REPO_SPLITS, dataset, "generated", ratio, classes) == generate_splits(
                    dataset, classes, ratio, 10, seed=0)


@pytest.mark.parametrize("dataset, path, sizes", [
    ("ActivityNet", "activitynet/activity_net.v1-3.reconstructed.json", {0.75: (150, 50), 0.5: (100, 100)}),
    ("THUMOS14", "thumos14/thumos14.json", {0.75: (15, 5), 0.5: (10, 10)}),
])
@pytest.mark.filterwarnings("ignore:.*after the video's duration")
def test_import_published_lists(shared_data, dataset, path, sizes):
    classes = load_annotations(shared_data / path).classes
    for ratio, (n_seen, n_unseen) in sizes.items():
        splits = import_split_lists(shared_data / "splits", dataset, classes, ratio)
        assert [s.index for s in splits] == list(range(10))
        assert all((len(s.seen), len(s.unseen)) == (n_seen, n_unseen) for s in splits)


def make_lists(tmp_path, train, test):
    for part, names in (("train", train), ("test", test)):
        folder = tmp_path / "train_75_test_25" / "toy" / part
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "split_0.list").write_text("\n".join(names) + "\n")
    return tmp_path


def test_import_rejects_unknown_name_with_file_and_line(tmp_path):
    root = make_lists(tmp_path, CLASSES[:14] + ["Not a class"], CLASSES[15:])
    with pytest.raises(SplitError, match=r"train/split_0.list:15: class 'Not a class' is not in the annotations"):
        import_split_lists(root, "toy", CLASSES, 0.75)


def test_import_rejects_overlap_and_missing_coverage(tmp_path):
    root = make_lists(tmp_path, CLASSES[:15], CLASSES[14:])
    with pytest.raises(SplitError, match="also in split_0.list"):
        import_split_lists(root, "toy", CLASSES, 0.75)
    root = make_lists(tmp_path, CLASSES[:15], CLASSES[16:])
    with pytest.raises(SplitError, match="1 classes in neither list, e.g. 'class 15'"):
        import_split_lists(root, "toy", CLASSES, 0.75)


def test_setting_names():
    assert setting_ratio("75/25") == setting_ratio("train_75_test_25") == 0.75
    assert setting_ratio("50/50") == 0.5
    with pytest.raises(SplitError):
        setting_ratio("60/40")
