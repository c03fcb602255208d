import json
from dataclasses import replace

import numpy as np
import pytest

from benchmark.data.annotations import load_annotations
from benchmark.data.cli import dataset_info
from benchmark.data.features import load_features, open_feature_store
from benchmark.data.synthetic import PROFILES, ensure_synthetic, generate
from benchmark.data.targets import snippet_targets
from benchmark.text.clip import TextEncoderConfig, class_embeddings

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


def test_activitynet_shape(bench):
    annotations = load_annotations(bench / "annotations.json")
    info = dataset_info(annotations)["subsets"]
    assert info["training"]["videos"] == 240 and info["validation"]["videos"] == 120
    per_video = [len(v.instances) for v in annotations.videos.values()]
    assert set(per_video) <= {1, 2, 3} and 1.2 < np.mean(per_video) < 1.9
    assert 0.25 < info["training"]["median_length_fraction"] < 0.42  # ActivityNet: 0.32
    lengths = {len(open_feature_store(bench / "features").read(v)) for v in list(annotations.videos)[:50]}
    assert len(lengths) > 10  # T_raw varies with the duration, as real features do


def test_deterministic_per_seed(tmp_path, bench):
    small = replace(CFG, train_videos=6, val_videos=3)
    a, b = generate(tmp_path / "a", small), generate(tmp_path / "b", small)
    assert (a / "annotations.json").read_text() == (b / "annotations.json").read_text()
    for f in sorted((a / "features").iterdir()):
        assert np.array_equal(np.load(f), np.load(b / "features" / f.name))
    c = generate(tmp_path / "c", replace(small, seed=6))
    assert (c / "annotations.json").read_text() != (a / "annotations.json").read_text()


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
    well above chance with the true names, at chance once names and classes are shuffled."""
    manifest = json.loads((bench / "synthetic.json").read_text())
    names = manifest["classes"]
    text = class_embeddings(TextEncoderConfig(**manifest["text_encoder"]), names)
    x_train, y_train = _snippets(bench, "training", names)
    x_test, y_test = _snippets(bench, "validation", names)
    seen, unseen = np.arange(18), np.arange(18, 24)

    def unseen_accuracy(text):
        fg = np.isin(y_train, seen)
        target = text[y_train[fg]]
        w = np.linalg.solve(x_train[fg].T @ x_train[fg] + 1.0 * np.eye(x_train.shape[1]), x_train[fg].T @ target)
        test = np.isin(y_test, unseen)
        scores = (x_test[test] @ w) @ text[unseen].T
        return (unseen[scores.argmax(1)] == y_test[test]).mean()

    chance = 1 / len(unseen)
    true_names = unseen_accuracy(text)
    shuffled = unseen_accuracy(text[np.random.default_rng(0).permutation(len(names))])
    print(f"unseen accuracy {true_names:.3f} (shuffled names {shuffled:.3f}, chance {chance:.3f})")
    assert true_names > 2.5 * chance
    assert shuffled < 1.6 * chance
