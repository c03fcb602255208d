import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmark.data.annotations import load_annotations
from benchmark.data.cli import dataset_info
from benchmark.data.features import load_features, open_feature_store
from benchmark.data.splits import generate_splits
from benchmark.data.synthetic import PROFILES, ensure_synthetic, generate, load_manifest
from benchmark.data.targets import snippet_targets
from benchmark.data.zero_shot import double_label_pairs
from benchmark.text.clip import TextEncoderConfig, class_embeddings, load_text_tower

CFG = replace(PROFILES["smoke"], classes=24, train_videos=240, val_videos=120, seed=5)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn"), CFG)


def test_written_in_the_real_formats_and_marked_synthetic(bench):
    manifest = json.loads((bench / "synthetic.json").read_text())
    assert manifest["synthetic"] is True and len(manifest["classes"]) == 24
    annotations = load_annotations(bench / "annotations.json")
    assert annotations.format == "activitynet" and "synthetic" in json.loads((bench / "annotations.json").read_text())["version"]
    store = open_feature_store(bench / "features")
    assert len(store.ids()) == 360
    x = store.read(next(iter(annotations.videos)))
    assert x.dtype == np.float32 and x.shape[1] == CFG.embed_dim and np.isfinite(x).all()


def test_activitynet_shape_with_several_instances_a_video(bench):
    annotations = load_annotations(bench / "annotations.json")
    info = dataset_info(annotations)["subsets"]
    assert info["training"]["videos"] == 240 and info["validation"]["videos"] == 120
    videos = list(annotations.videos.values())
    per_video = [len(v.instances) for v in videos]
    assert set(per_video) == {1, 2, 3, 4, 5, 6} and 2.8 < np.mean(per_video) < 3.6  # SynthConfig.instances: 3.15
    assert np.mean([len({i.label for i in v.instances}) > 1 for v in videos]) > 0.2  # videos of several classes
    gaps = [b.start - a.end for v in videos for a, b in zip(v.instances, v.instances[1:])]
    assert min(gaps) >= 0 and np.mean(np.array(gaps) <= 8.0) > 0.4  # short background gaps between instances
    assert 0.1 < info["training"]["median_length_fraction"] < 0.22  # ActivityNet: 0.32, with 1.5 instances a video
    lengths = {len(open_feature_store(bench / "features").read(v)) for v in list(annotations.videos)[:50]}
    assert len(lengths) > 10  # T_raw varies with the duration, as real features do


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_wherever_written(tmp_path):
    """Every file, the text tower's checkpoint included, is byte-identical for one config, whatever the folder."""
    small = replace(CFG, train_videos=6, val_videos=3)
    a, b = generate(tmp_path / "a", small), generate(tmp_path / "deeper" / "b", small)
    files = _files(a)
    assert {"annotations.json", "synthetic.json"} <= set(files) and any(f.endswith(".pt") for f in files)
    assert files == _files(b)
    c = generate(tmp_path / "c", replace(small, seed=6))
    assert (c / "annotations.json").read_text() != (a / "annotations.json").read_text()


def test_a_moved_folder_still_loads(tmp_path):
    """The manifest's paths are relative to the folder: move it, and the tower and data still load."""
    small = replace(CFG, train_videos=6, val_videos=3)
    first = generate(tmp_path / "first", small)
    raw = json.loads((first / "synthetic.json").read_text())
    assert not any(Path(p).is_absolute() for p in (raw["annotations"], raw["features"], *raw["text_encoder"].values()))
    moved = tmp_path / "elsewhere" / "moved"
    shutil.move(first, moved)
    manifest = load_manifest(moved)
    assert Path(manifest["text_encoder"]["pretrained"]).is_file() and Path(manifest["annotations"]).is_file()
    tower = load_text_tower(TextEncoderConfig(**manifest["text_encoder"]))
    assert tower.encode_text(manifest["classes"][:2]).shape == (2, small.embed_dim)
    assert len(open_feature_store(manifest["features"]).ids()) == 9


def test_ensure_generates_once(tmp_path):
    first = ensure_synthetic(tmp_path, "smoke", seed=1, train_videos=4, val_videos=2)
    stamp = (first / "synthetic.json").stat().st_mtime_ns
    assert ensure_synthetic(tmp_path, "smoke", seed=1, train_videos=4, val_videos=2) == first
    assert (first / "synthetic.json").stat().st_mtime_ns == stamp


def _snippets(bench, subset, names):
    annotations = load_annotations(bench / "annotations.json")
    videos = annotations.subset(subset)
    x = load_features(open_feature_store(bench / "features"), [v.id for v in videos], 100)
    y = snippet_targets(videos, {n: i for i, n in enumerate(names)}, 100).cls
    return x.reshape(-1, x.shape[-1]), y.reshape(-1)


def test_zero_shot_transfer_works_only_through_the_text_side(bench):
    """A linear map learned on seen classes names unseen classes via their text embeddings —
    well above chance with the true names, at chance once names and classes are shuffled. Mean over
    four random 18/6 class splits: with 6 unseen classes one split is noisy (two unseen names that
    share a verb are hard to tell apart)."""
    manifest = load_manifest(bench)
    names = manifest["classes"]
    text = class_embeddings(TextEncoderConfig(**manifest["text_encoder"]), names)
    x_train, y_train = _snippets(bench, "training", names)
    x_test, y_test = _snippets(bench, "validation", names)
    splits = [[np.array([names.index(n) for n in part]) for part in (s.seen, s.unseen)]
              for s in generate_splits("synthetic", names, 0.75, n=4, seed=0)]

    def unseen_accuracy(text, seen, unseen):
        fg = np.isin(y_train, seen)
        target = text[y_train[fg]]
        w = np.linalg.solve(x_train[fg].T @ x_train[fg] + 1.0 * np.eye(x_train.shape[1]), x_train[fg].T @ target)
        test = np.isin(y_test, unseen)
        scores = (x_test[test] @ w) @ text[unseen].T
        return (unseen[scores.argmax(1)] == y_test[test]).mean()

    chance = 1 / len(splits[0][1])
    shuffled_text = text[np.random.default_rng(0).permutation(len(names))]
    true_names = np.mean([unseen_accuracy(text, *split) for split in splits])
    shuffled = np.mean([unseen_accuracy(shuffled_text, *split) for split in splits])
    print(f"unseen accuracy {true_names:.3f} (shuffled names {shuffled:.3f}, chance {chance:.3f})")
    assert true_names > 2.5 * chance
    assert shuffled < 1.6 * chance


def test_thumos_shape_in_the_actionformer_format(tmp_path):
    """The THUMOS-shaped profile: ActionFormer JSON (Validation / Test, fps, segment(frames), label_id), <id>.npy
    features, many short instances a video, mostly one class a video, and one double-labelled class pair."""
    root = generate(tmp_path, replace(PROFILES["thumos"], train_videos=40, val_videos=30, seed=0))
    raw = json.loads((root / "annotations.json").read_text())
    annotations = load_annotations(root / "annotations.json")
    assert annotations.format == "actionformer" and annotations.subsets() == ["Test", "Validation"]
    first = next(iter(raw["database"].values()))
    assert first["fps"] == 30.0 and {"segment(frames)", "label_id"} <= set(first["annotations"][0])
    store = open_feature_store(root / "features")
    assert not store.prefixed and set(store.ids()) == set(annotations.videos)
    (child, parent), = double_label_pairs(annotations)
    videos = list(annotations.videos.values())
    own = [[i for i in v.instances if i.label != parent or all(
        (j.start, j.end) != (i.start, i.end) for j in v.instances if j.label == child)] for v in videos]
    assert 8 < np.mean([len(o) for o in own]) < 20  # THUMOS14: 15.4 (median 8); the double labels not counted
    assert 0.01 < np.median([(i.end - i.start) / v.duration for v in videos for i in v.instances]) < 0.02
    assert np.mean([len({i.label for i in o}) for o in own]) < 1.3  # THUMOS14: 1.15 classes a video
    assert sum(i.label == child for v in videos for i in v.instances) > 0
