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
from benchmark.harness.stad import PROTOCOL, _evaluation, score_boxes, shortcut_analyses, with_detector_scores
from benchmark.text.clip import TextEncoderConfig
from methods.modules import convergence
from methods.ovstad import OvStadHead

FAST = {"epochs": 6, "vrt_iterations": 60}  # the default recipe's cap of 30 epochs and 600 VR-T steps are for the suites


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
    return {"train": train_view, "test": views, "text": text, "cache": tmp_path_factory.mktemp("text"), "split": split,
            "data": (ann, detected, store, split, test)}


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
    assert record["rule"] == "plateau" and record["stopped"] in ("cap", "plateau") and "vrt" not in record
    assert 0 < record["epochs"] <= FAST["epochs"] and record["fitted_videos"] < len(bench["train"].videos)
    assert (method.head.fc2.weight != 0).any()
    detected = bench["test"]["detected"]
    _check_table(method.predict(detected), detected)
    paper = apply_hparams("ovstad", make_config("ovstad"), {"recipe": "paper"})
    assert (paper.convergence.rule, paper.iterations, paper.batch_size) == ("epochs", 70_000, 32)
    assert make_config("ovstad").iterations == 0 and make_config("ovstad").convergence.rule == "plateau"
    fixed = _method(bench, "ovstad", convergence={"rule": "epochs"}, iterations=20)  # the paper's exact step count
    fixed.fit(bench["train"])
    record = fixed.context.ledger.training["ovstad"]
    assert (record["rule"], record["steps"], record["stopped"]) == ("epochs", 20, "epochs") and "curve" not in record
    assert record["fitted_videos"] == len(bench["train"].videos) and not fixed.heldout_videos


def test_ovstad_stops_on_the_heldout_plateau_and_never_fits_a_heldout_video(bench, monkeypatch):
    train = bench["train"]
    seen = {"fit": [], "held": []}
    fuse = OvStadHead.fuse

    def spy(self, region, global_, beta):  # training steps run with gradients, held-out evaluations without
        seen["fit" if torch.is_grad_enabled() else "held"].append(region.detach().clone())
        return fuse(self, region, global_, beta)

    monkeypatch.setattr(OvStadHead, "fuse", spy)
    method = _method(bench, "ovstad")  # the default recipe: cap 30 epochs
    method.fit(train)
    record = method.context.ledger.training["ovstad"]
    assert record["rule"] == "plateau" and record["stopped"] == "plateau" and record["epochs"] < 30
    assert len(record["curve"]) >= 3 and record["lr_decays"] == 1 and record["best_step"] <= record["steps"]
    fitted, held = convergence.holdout_split(len(train.videos), method.config.convergence, 0)
    assert method.heldout_videos == tuple(train.videos[i] for i in held) and len(held) >= 1
    assert record["fitted_videos"] == len(fitted)
    # which video each region row came from: the rows the fit read are all of fitted videos, the held-out ones of held
    from methods.ovstad import training_boxes
    from methods.stad_clip_baseline import box_features
    boxes, _ = training_boxes(train.gt, train.classes)
    region = torch.nn.functional.normalize(torch.from_numpy(box_features(train, boxes)[0]), dim=-1)
    video_of = {row.numpy().tobytes(): v for row, v in zip(region, boxes.video)}
    fit_videos = {video_of[row.numpy().tobytes()] for batch in seen["fit"] for row in batch}
    held_videos = {video_of[row.numpy().tobytes()] for batch in seen["held"] for row in batch}
    assert held_videos == set(method.heldout_videos) and fit_videos == set(train.videos) - held_videos


def test_ovstad_overfits_a_tiny_training_set(bench):
    train = bench["train"]
    videos = list(train.videos[:4])
    tiny = dataclasses.replace(train, gt=train.gt.select(np.isin(train.gt.video, videos)), videos=tuple(videos))
    method = _method(bench, "ovstad", convergence={"rule": "epochs"}, epochs=150)  # every box fitted, default lr
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
        record = method.context.ledger.training["ovstad"]
        stage = record["vrt"]  # a fixed pre-training stage; nothing fine-tuned on seen-class data
        assert (record["rule"], record["steps"], record["epochs"]) == ("epochs", 0, 0.0)
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
                      {"normalisation": "softmax2"}, {"lr": 0.0}, {"epochs": 0},
                      {"iterations": 5}, {"convergence": {"rule": "early"}}):  # iterations: rule epochs only
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


def test_shortcut_analyses_score_what_a_job_under_that_protocol_would(bench):
    """The audit rows read analyses of one job (test_videos_all/, rule:<rule>/, detector_score_ignore/,
    soft_voting/): on a training-free baseline each equals the headline of a job run under that protocol."""
    method = _method(bench, "stad_clip_baseline")

    def job(protocol):
        space = {key: protocol[key] for key in ("label_space", "evaluated", "test_videos")}
        evaluation = _evaluation("", *bench["data"], protocol, space)
        rows = method.predict(evaluation.test)
        final = with_detector_scores(rows, evaluation.test.boxes, protocol)
        return evaluation, rows, score_boxes(evaluation.test, final, (), protocol["evaluator"])[0]["frame_mAP@0.5"]

    evaluation, rows, _ = job(PROTOCOL)
    found = shortcut_analyses(method, rows, evaluation, PROTOCOL)
    for prefix, change in (("test_videos_all/", {"test_videos": "all"}), ("rule:score>0.3/", {"box_rule": "score>0.3"}),
                           ("detector_score_ignore/", {"detector_score": "ignore"}), ("soft_voting/", {"soft_voting": True})):
        assert found[prefix + "frame_mAP@0.5"] == job(PROTOCOL | change)[2], prefix
    assert len(job(PROTOCOL | {"test_videos": "all"})[0].test.videos) > len(evaluation.test.videos)
