"""B-II (b2_denseclip), the training-free CLIP reference (clip_training_free) and the snippet grouping
they share: hand-computed grouping cases, real-config models on random features of the real shape,
overfitting a tiny seen-class set, determinism, one-line config errors, the synthetic benchmark."""
import numpy as np
import pytest
import torch

from benchmark.data.synthetic import ensure_synthetic
from benchmark.data import zero_shot
from benchmark.evaluation.detection import evaluate_detection
from benchmark.evaluation.segments import SegmentTable
from benchmark.harness.registry import ConfigError, MethodContext, apply_hparams, get_method, make_config
from benchmark.perf.bench_b2 import random_views
from benchmark.text.clip import TextEncoderConfig, class_embeddings
from benchmark.text.tiny import make_tiny_clip
from methods.b2_denseclip import DenseClipBaseline, boundary_targets
from methods.modules import grouping
from methods.modules.convergence import holdout_split
from synthetic_views import check_detections, synthetic_views

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory) -> TextEncoderConfig:
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


def context(text, tmp_path=None, **kw):
    return MethodContext(text_encoder=text, cache_dir=tmp_path, log=lambda _: None, **kw)


def build(name, text, overrides=None, hparams=None, **kw):
    """The method as the runner builds it: variant overrides, then the profile's hyper-parameters."""
    config = apply_hparams(name, make_config(name, overrides or {}), hparams or {})
    return get_method(name)(config, context(text, **kw))


def as_table(detections) -> SegmentTable:
    return SegmentTable.from_rows(((v, d["segment"][0], d["segment"][1], d["label"], d["score"])
                                   for v, ds in detections.items() for d in ds), with_score=True)


def test_grouping_hand_computed():
    assert grouping.runs(np.array([0, 1, 1, 0, 1, 0, 0, 1], bool)).tolist() == [[1, 3], [4, 5], [7, 8]]
    assert grouping.runs(np.zeros(4, bool)).shape == (0, 2)
    score = np.array([0.1, 0.6, 0.9, 0.6, 0.2, 0.7])
    assert grouping.threshold_runs(score, (0.5, 0.8)).tolist() == [[1, 4], [2, 3], [5, 6]]
    assert grouping.threshold_runs(score, (0.5, 0.8), min_length=2).tolist() == [[1, 4]]
    start = np.array([0.9, 0.1, 0.1, 0.6, 0.1, 0.1])
    end = np.array([0.1, 0.1, 0.8, 0.1, 0.1, 0.7])
    # starts {0, 3}, ends {2, 5} (peaks, and >= half the max); end e closes segment [s, e + 1)
    assert grouping.boundary_pairs(start, end, 0.5, max_length=6).tolist() == [[0, 3], [0, 6], [3, 6]]
    assert grouping.boundary_pairs(start, end, 0.5, max_length=3).tolist() == [[0, 3], [3, 6]]
    assert np.allclose(grouping.moving_average(np.array([0.0, 3, 0, 0]), 3), [1, 1, 1, 0])
    assert np.allclose(grouping.segment_means(np.arange(6.0), np.array([[0, 2], [2, 6]])), [0.5, 3.5])
    rows, labels = grouping.top_k_labels(np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]), 2)
    assert rows.tolist() == [0, 0, 1, 1] and labels.tolist() == [1, 2, 0, 2]
    # 10 s over T = 5 snippets of 2 s: [3, 5.5] touches snippets 1, 2; [0, 0] still takes snippet 0
    assert grouping.seconds_to_snippets(np.array([[3.0, 5.5], [0, 0], [9, 12]]), 10.0, 5).tolist() == [[1, 3], [0, 1], [4, 5]]
    with pytest.raises(ValueError, match="odd"):
        grouping.moving_average(np.zeros(3), 2)


def test_boundary_targets_from_instance_masks(tiny_text):
    train, _ = random_views(4, 1, 2, 1, T=20)
    t = train.targets
    start, end = boundary_targets(t.masks, t.fg, radius=0)
    for n in range(4):
        lo, hi = grouping.runs(t.fg[n] > 0)[0]
        assert np.flatnonzero(start[n]).tolist() == [lo] and np.flatnonzero(end[n]).tolist() == [hi - 1]
    start, _ = boundary_targets(t.masks, t.fg, radius=1)
    assert start.sum(1).max() <= 3


@pytest.mark.parametrize("overrides, D", [
    ({}, 64),
    ({}, 512),  # features wider than the 64-d tiny tower: W_v projects
    ({"fine_tune_text": True, "ctx_init": "", "n_ctx": 3}, 64),
    ({"decoder_layers": 2, "temporal_layers": 2, "dropout": 0.1, "top_k_labels": 1}, 64),
])
def test_b2_shapes_and_finite_losses(tiny_text, overrides, D):
    train, test = random_views(6, 3, 4, 2, T=40, D=D)
    method = build("b2_denseclip", tiny_text, dict(overrides, epochs=1))
    method.fit(train)
    x = torch.as_tensor(train.features[:2])
    scores, loc = method.model(x, method.model.prompt())
    assert scores.shape == (2, 40, 5) and loc.shape == (2, 40, 3)
    start, end = boundary_targets(train.targets.masks, train.targets.fg, 1)
    target = torch.as_tensor(np.stack([train.targets.fg, start, end], -1)[:2])
    losses = method.losses(x, torch.as_tensor(train.targets.cls[:2]), target)
    assert all(torch.isfinite(v) for v in losses.values())
    assert method.model.prompt.tower.token_embedding.weight.requires_grad == method.config.fine_tune_text
    probs, loc = method.snippet_outputs(test)
    assert probs.shape == (3, 40, 2) and np.allclose(probs.sum(-1), 1) and loc.shape == (3, 40, 3)
    check_detections(method.predict(test), test)


def test_b2_paper_recipe(tiny_text):
    method = build("b2_denseclip", tiny_text, hparams={"recipe": "paper", "epochs": 1})
    assert method.config.epochs == 1 and method.config.decoder_width == DenseClipBaseline.PAPER["decoder_width"] == 256
    assert method.config.convergence.rule == "epochs"  # STALE's fixed schedule, on every training video
    train, _ = random_views(2, 1, 2, 1, T=16)
    method.fit(train)
    assert len(method.model.context_decoder.layers) == 3 and method.model.prompt.n_ctx == 8


def test_b2_overfits_tiny_seen_set(tiny_text):
    train, _ = random_views(16, 1, 3, 1, T=32, D=32, strength=3.0, seed=1)
    method = build("b2_denseclip", tiny_text, {"epochs": 60, "batch_size": 16, "lr": 1e-2,
                                               "convergence": {"rule": "epochs"}})  # every video, 60 epochs
    method.fit(train)
    # test on the training videos and classes themselves
    gt = SegmentTable.from_rows(((v.id, i.start, i.end, i.label) for v in train.videos for i in v.instances), False)
    seen = zero_shot.TestView(train.videos, train.features, train.classes, gt, train.T)
    probs, loc = method.snippet_outputs(seen)
    fg = train.targets.fg > 0
    accuracy = (probs.argmax(-1) == train.targets.cls)[fg].mean()
    assert accuracy > 0.95
    assert loc[..., 0][fg].mean() > 0.8 and loc[..., 0][~fg].mean() < 0.2
    result = evaluate_detection(gt, as_table(method.predict(seen)))
    assert result.map[0] > 0.9  # mAP at tIoU 0.5


def test_b2_deterministic(tiny_text):
    train, test = random_views(8, 3, 3, 2, T=24)
    first = build("b2_denseclip", tiny_text, {"epochs": 2})
    first.fit(train)
    second = build("b2_denseclip", tiny_text, {"epochs": 2})
    second.fit(train)
    assert first.predict(test) == second.predict(test)
    other = build("b2_denseclip", tiny_text, {"epochs": 2}, seed=1)
    other.fit(train)
    assert other.predict(test) != first.predict(test)


def test_b2_plateau_rule_holds_out_training_videos(tiny_text):
    """Default rule: held-out training videos are not trained on; the run's record reaches the ledger."""
    train, _ = random_views(20, 1, 3, 1, T=24, seed=3)
    method = build("b2_denseclip", tiny_text, {"batch_size": 4})
    method.fit(train)
    fitted, held = holdout_split(20, method.config.convergence, seed=0)
    assert len(held) == 2 and not set(fitted) & set(held) and len(fitted) + len(held) == 20
    record = method.context.ledger.training["b2_denseclip"]
    assert record["rule"] == "plateau" and record["fitted_videos"] == 20 - len(held)
    assert record["epochs"] == round(record["steps"] / np.ceil((20 - len(held)) / 4), 2)
    assert record["stopped"] == "plateau" and record["epochs"] < method.config.epochs
    assert record["best_step"] <= record["steps"] and len(record["curve"]) == record["epochs"]


def test_b2_hooks(tiny_text):
    train, test = random_views(6, 3, 3, 2, T=24)
    method = build("b2_denseclip", tiny_text, {"epochs": 1, "top_k_labels": 2, "max_detections": 5})
    assert {"proposals", "classify_segments"} <= method.capabilities()
    with pytest.raises(RuntimeError, match="before fit"):
        method.predict(test)
    method.fit(train)
    segments = {v.id: [[i.start, i.end] for i in v.instances] for v in test.videos}
    labelled = method.classify_segments(test, segments)
    for v in test.videos:
        got = labelled[v.id]
        assert len(got) == 2 * len(v.instances) and {d["label"] for d in got} == set(test.classes)
        assert got[0]["segment"] == segments[v.id][0] and got[0]["score"] >= got[1]["score"]
    proposals = method.proposals(test)
    assert all(len(p) <= 5 and all(set(d) == {"segment", "score"} for d in p) for p in proposals.values())


@pytest.mark.parametrize("overrides, hparams, fragment", [
    ({"hidden": 30, "temporal_heads": 4}, {}, "divisible"),
    ({"actionness_thresholds": (0.5, 1.5)}, {}, "actionness_thresholds"),
    ({"top_k_labels": 0}, {}, "top_k_labels"),
    ({"tau": 0.0}, {}, "tau"),
    ({}, {"recipe": "fast"}, "recipe"),
])
def test_b2_config_errors(tiny_text, overrides, hparams, fragment):
    with pytest.raises(ConfigError) as info:
        build("b2_denseclip", tiny_text, overrides, hparams=hparams)
    assert "\n" not in str(info.value) and fragment in str(info.value)


def planted_clip_views(text, tmp_path, n_test=6):
    """Test videos whose instance snippets are the class's CLIP text embedding plus a little noise."""
    names = [f"class {i}" for i in range(6)]
    emb = class_embeddings(text, names, tmp_path)
    return random_views(2, n_test, 3, 3, T=50, D=emb.shape[1], signature=emb, strength=1.0, noise=0.05, seed=2)


def test_training_free_zero_shot_on_planted_features(tiny_text, tmp_path):
    train, test = planted_clip_views(tiny_text, tmp_path)
    method = build("clip_training_free", tiny_text, tmp_path=tmp_path)
    method.fit(train)  # nothing to learn
    detections = method.predict(test)
    check_detections(detections, test)
    assert method.predict(test) == detections  # deterministic
    assert evaluate_detection(test.gt, as_table(detections)).map[0] > 0.9
    labelled = method.classify_segments(test, {v.id: [[i.start, i.end] for i in v.instances] for v in test.videos})
    assert all(ds[0]["label"] == v.instances[0].label for v in test.videos for ds in [labelled[v.id]])
    assert method.capabilities() == {"classify_segments"}


def test_training_free_errors(tiny_text, tmp_path):
    _, test = random_views(1, 2, 2, 2, T=20, D=32)
    with pytest.raises(ConfigError) as info:
        build("clip_training_free", tiny_text, tmp_path=tmp_path).predict(test)
    assert "\n" not in str(info.value) and "32-d" in str(info.value) and "64-d" in str(info.value)
    for bad in ({"smoothing": 4}, {"chance_multiples": ()}, {"min_length": 0}):
        with pytest.raises(ConfigError, match="clip_training_free"):
            build("clip_training_free", tiny_text, bad)


def test_both_methods_on_the_synthetic_benchmark(tmp_path):
    views = synthetic_views(ensure_synthetic(tmp_path / "synthetic", "smoke", seed=0))
    train, test, text = views.train, views.test, views.text
    for name in ("b2_denseclip", "clip_training_free"):
        method = build(name, text, tmp_path=tmp_path, hparams={"recipe": "default", "epochs": 1})
        method.fit(train)
        detections = method.predict(test)
        check_detections(detections, test)
        result = evaluate_detection(test.gt, as_table(detections))
        assert 0 <= result.average <= 1
