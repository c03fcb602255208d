"""The training-free CLIP box baselines and OV-STAD (reduced) on the embedded J-HMDB-shaped smoke benchmark."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data.box_annotations import load_box_annotations, load_person_boxes
from benchmark.data.box_features import BoxFeatureStore
from benchmark.data.box_views import box_test_view, box_train_view, gt_person_boxes
from benchmark.data.splits import generate_splits
from benchmark.data.synthetic_stad import ensure_synthetic_stad, load_manifest
from benchmark.evaluation.boxes import BoxTable
from benchmark.evaluation.frame_map import frame_map
from benchmark.harness.registry import ConfigError, MethodContext, apply_hparams, get_method, make_config
from benchmark.text.clip import TextEncoderConfig

FAST = {"iterations": 150, "vrt_iterations": 60}  # the default recipe's 700 / 600 are for the suites


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = ensure_synthetic_stad(tmp_path_factory.mktemp("stad"), "jhmdb_smoke")
    manifest = load_manifest(root)
    ann = load_box_annotations(manifest["annotations"]["act_pkl"])
    detected = load_person_boxes(manifest["person_boxes"], manifest["annotations"]["gt_json"])
    full = {v.split("/")[-1]: v for v in ann.videos}  # the ST-CLIP JSONs name bare movies
    detected = dataclasses.replace(detected, video=np.array([full[v] for v in detected.video]))
    store = BoxFeatureStore(manifest["features"])
    split = generate_splits("synthetic", ann.labels, 15 / 21, n=1)[0]
    train, test = ann.splits[0]
    train_view = dataclasses.replace(box_train_view(ann, split, train, features=store), captions=manifest["captions"])
    views = {"detected": box_test_view(ann, split, test, boxes=detected, rule="top3", features=store),
             "gt": box_test_view(ann, split, test, features=store)}
    text = TextEncoderConfig(**manifest["text_encoder"])
    return {"train": train_view, "test": views, "text": text, "cache": tmp_path_factory.mktemp("text"), "split": split}


def _method(bench, name, seed=0, **overrides):
    context = MethodContext(seed=seed, text_encoder=bench["text"], cache_dir=bench["cache"], log=lambda line: None)
    return get_method(name)(make_config(name, overrides), context)


def _check_table(pred: BoxTable, view) -> np.ndarray:
    """One row per (candidate, class), candidate-major, scores finite in [0, 1]; returns scores [N, K]."""
    n, k = len(view.boxes), len(view.classes)
    assert len(pred) == n * k
    assert pred.label.tolist() == list(view.classes) * n
    assert (pred.video == np.repeat(view.boxes.video, k)).all() and (pred.frame == np.repeat(view.boxes.frame, k)).all()
    assert np.array_equal(pred.box, np.repeat(view.boxes.box, k, axis=0))
    assert np.isfinite(pred.score).all() and pred.score.min() >= 0 and pred.score.max() <= 1
    return pred.score.reshape(n, k)


def _map(pred: BoxTable, view) -> float:
    return frame_map(view.gt, pred, classes=view.evaluated).map


def test_baseline_variants_are_well_formed(bench):
    view = bench["test"]["detected"]
    assert len(np.unique(view.boxes.frame)) < len(view.boxes)  # several candidates a frame
    for feature in ("frame_global", "person_crop"):
        for normalisation in ("softmax", "sigmoid"):
            method = _method(bench, "stad_clip_baseline", feature=feature, normalisation=normalisation)
            method.fit(bench["train"])
            scores = _check_table(method.predict(view), view)
            if normalisation == "softmax":
                assert np.allclose(scores.sum(1), 1, atol=1e-5)
            key = np.char.add(view.boxes.video.astype(str), view.boxes.frame.astype(str))
            same = [np.ptp(scores[key == k], axis=0).max() for k in np.unique(key)]
            if feature == "frame_global":  # every person of a frame scores the same
                assert max(same) == 0
            else:
                assert max(same) > 0
            assert _map(method.predict(view), view) > 1 / len(view.classes)  # above chance


def test_ovstad_is_well_formed(bench):
    view = bench["test"]["gt"]
    method = _method(bench, "ovstad", **FAST)
    method.fit(bench["train"])
    _check_table(method.predict(view), view)
    record = method.context.ledger.training["ovstad"]
    assert record["steps"] == FAST["iterations"] and set(record["stages"]) == {"finetune"}
    assert (method.head.fc2.weight != 0).any()
    detected = bench["test"]["detected"]
    _check_table(method.predict(detected), detected)
    assert apply_hparams("ovstad", make_config("ovstad"), {"recipe": "paper"}).iterations == 70_000


def test_ovstad_overfits_a_tiny_training_set(bench):
    train = bench["train"]
    videos = list(train.videos[:4])
    tiny = dataclasses.replace(train, gt=train.gt.select(np.isin(train.gt.video, videos)), videos=tuple(videos))
    method = _method(bench, "ovstad", iterations=400, lr=0.1)
    method.fit(tiny)
    boxes = gt_person_boxes(tiny.gt)
    view = dataclasses.replace(bench["test"]["gt"], boxes=boxes, gt=tiny.gt, classes=train.classes,
                               evaluated=tuple(np.unique(tiny.gt.label)), resolution=train.resolution)
    untrained = _method(bench, "ovstad", finetune="none")
    untrained.fit(tiny)
    assert _map(method.predict(view), view) > 0.95 > _map(untrained.predict(view), view)


def test_same_seed_same_scores(bench):
    view = bench["test"]["detected"]
    runs = []
    for seed in (0, 0, 1):
        method = _method(bench, "ovstad", seed=seed, vrt="gl", **FAST)
        method.fit(bench["train"])
        runs.append(method.predict(view).score)
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])


def test_beta_one_is_local_only(bench):
    view = bench["test"]["gt"]
    scores = []
    for overrides in ({"finetune": "gl", "beta": 1.0}, {"finetune": "local", "beta": 0.3}):
        method = _method(bench, "ovstad", **FAST, **overrides)
        method.fit(bench["train"])
        scores.append(method.predict(view).score)
    assert np.array_equal(*scores)
    method = _method(bench, "ovstad", beta=0.0, **FAST)
    method.fit(bench["train"])
    assert not np.array_equal(method.predict(view).score, scores[0])


def test_vrt_alignment_runs_on_the_corpus_and_changes_the_adapter(bench):
    view = bench["test"]["gt"]
    before = _method(bench, "ovstad", finetune="none")
    before.fit(bench["train"])
    assert (before.head.fc2.weight == 0).all()  # nothing trained: V is the identity
    pairs = {}
    for vrt, data in (("gl", "all"), ("local", "A"), ("local", "0.5")):
        method = _method(bench, "ovstad", vrt=vrt, vrt_data=data, finetune="none", **FAST)
        method.fit(bench["train"])
        stage = method.context.ledger.training["ovstad"]["stages"]["vrt"]
        assert stage["steps"] == FAST["vrt_iterations"] and stage["captions"] > 1
        pairs[data] = stage["pairs"]
        assert (method.head.fc2.weight != 0).any()
        assert not np.array_equal(method.predict(view).score, before.predict(view).score)
    with np.load(bench["train"].captions) as corpus:
        assert pairs["all"] == len(corpus["region"]) and pairs["A"] == (corpus["source"] == "A").sum()
        assert pairs["0.5"] == round(0.5 * len(corpus["region"]))
        names = {n.replace("_", " ") for n in bench["split"].seen + bench["split"].unseen}
        assert not any(name in caption for caption in set(corpus["caption"].tolist()) for name in names)


def test_config_errors(bench, tmp_path):
    without = dataclasses.replace(bench["train"], captions=None)
    with pytest.raises(ConfigError, match="region-caption corpus"):
        _method(bench, "ovstad", vrt="gl").fit(without)
    corpus = tmp_path / "captions.npz"
    with np.load(bench["train"].captions) as f:
        np.savez(corpus, region=f["region"], caption=f["caption"], source=f["source"])  # no global features
    with pytest.raises(ConfigError, match="no 'global'"):
        _method(bench, "ovstad", vrt="gl", **FAST).fit(dataclasses.replace(bench["train"], captions=str(corpus)))
    _method(bench, "ovstad", vrt="local", finetune="none", vrt_iterations=5).fit(
        dataclasses.replace(bench["train"], captions=str(corpus)))  # local alignment needs regions only
    for overrides in ({"beta": 1.5}, {"vrt": "both"}, {"finetune": "all"}, {"vrt_data": "C"}, {"vrt_data": "0"},
                      {"normalisation": "softmax2"}, {"lr": 0.0}):
        with pytest.raises(ConfigError):
            _method(bench, "ovstad", **overrides)
    for overrides in ({"feature": "crop"}, {"normalisation": "none"}, {"names": "raw"}, {"template": "a person"}):
        with pytest.raises(ConfigError):
            _method(bench, "stad_clip_baseline", **overrides)
    for name in ("ovstad", "stad_clip_baseline"):
        cls = get_method(name)
        cls.check_features(make_config(name), 64, 64)
        with pytest.raises(ConfigError, match="512"):
            cls.check_features(make_config(name), 64, 512)
    with pytest.raises(ConfigError):
        make_config("ovstad", {"vrt_data": 0.25})  # a fraction is a string: "0.25"
