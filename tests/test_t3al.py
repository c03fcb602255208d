"""T3AL (methods/t3al.py): hand-computed pseudo-label, loss and localisation, test-time adaptation moving the
pseudo-positives away from the pseudo-negatives, single-label switch, determinism, config errors, hooks that
never read the ground truth, and zero-shot detection on planted CLIP features."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from benchmark.evaluation.detection import evaluate_detection
from benchmark.evaluation.segments import SegmentTable
from benchmark.harness.compute import measure
from benchmark.harness.registry import ConfigError, MethodContext, get_method, make_config
from benchmark.perf.bench_b2 import random_views
from benchmark.text.clip import TextEncoderConfig, class_embeddings
from benchmark.text.tiny import make_tiny_clip
from methods import t3al
from synthetic_views import check_detections

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory) -> TextEncoderConfig:
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


def build(text, tmp_path, overrides=None, seed=0):
    return get_method("t3al")(make_config("t3al", overrides or {}),
                              MethodContext(text_encoder=text, cache_dir=tmp_path, log=lambda _: None, seed=seed))


def planted(text, tmp_path, n_test=6, T=50, noise=0.05, seed=2):
    """Test videos whose instance snippets are the class's text embedding plus noise (one instance each)."""
    emb = class_embeddings(text, [f"class {i}" for i in range(6)], tmp_path)
    return random_views(2, n_test, 3, 3, T=T, D=emb.shape[1], signature=emb, strength=1.0, noise=noise, seed=seed)[1]


def as_table(detections) -> SegmentTable:
    return SegmentTable.from_rows(((v, d["segment"][0], d["segment"][1], d["label"], d["score"])
                                   for v, ds in detections.items() for d in ds), with_score=True)


def test_pseudo_label_is_the_top_class_of_the_mean_feature(tiny_text, tmp_path):
    method = build(tiny_text, tmp_path)
    method.logit_scale = 100.0
    text = torch.eye(3, 4)  # class k = axis k
    # two of three snippets look like class 1, but the mean [1, 2/3, 0, 0] is closest to class 0
    x = torch.tensor([[[3.0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0]],
                      [[0.0, 0, 2, 0], [0, 1, 0, 0], [0, 0, 1, 1]]])  # mean [0, 1/3, 1, 1/3]: class 2
    assert method.pseudo_labels(x, text).tolist() == [0, 2]


def test_byol_loss_hand_computed():
    one = torch.tensor([1.0, 0.0])
    assert t3al.byol_loss(one, one, 0.0).item() == pytest.approx(0.0)
    # target smoothed to (0.8 · [1, 0] + 0.2 / 2) = [0.9, 0.1]: 2 - 2 · 0.9
    assert t3al.byol_loss(torch.tensor([3.0, 0.0]), one, 0.2).item() == pytest.approx(0.2)
    # similarities (2, 2) against target (1, 0): cos 1/√2
    assert t3al.byol_loss(torch.tensor([2.0, 2.0]), one, 0.0).item() == pytest.approx(2 - 2 ** 0.5)


def test_segments_from_curve_hand_computed():
    curve = np.array([0, 0, 1, 1, 1, 0, 1, 0, 1, 1], dtype=float)  # mean 0.6
    assert t3al.segments_from_curve(curve, 0, 1).tolist() == [[2, 5], [6, 7], [8, 10]]
    assert t3al.segments_from_curve(curve, 0, 2).tolist() == [[2, 5], [8, 10]]  # the single snippet goes
    assert t3al.segments_from_curve(curve, 1, 2).tolist() == [[2, 10]]  # one-snippet gaps closed
    assert t3al.segments_from_curve(np.ones(6), 0, 1).shape == (0, 2)  # nothing strictly above the mean
    assert np.allclose(t3al._smooth(np.array([[0.0, 3, 0, 0]]), 3), [[1, 1, 1, 0]])


def test_adaptation_separates_pseudo_positives_from_negatives(tiny_text, tmp_path):
    """With positive similarities everywhere (CLIP's cosines are: the modality gap, here a shared offset
    towards the class embeddings) the loss raises the pseudo-positives' similarity relative to the
    pseudo-negatives': ratio negative / positive down, margin up; more so with a larger learning rate."""
    view = planted(tiny_text, tmp_path, n_test=4, noise=0.3)
    text = torch.from_numpy(class_embeddings(tiny_text, view.classes, tmp_path))
    x = torch.from_numpy(view.features) + torch.nn.functional.normalize(text.mean(0), dim=0)
    ratio, margin = {}, {}
    for steps, lr in [(0, 1e-5), (15, 1e-5), (15, 1e-3)]:
        method = build(tiny_text, tmp_path, {"steps": steps, "lr_text": lr})
        method.logit_scale = 100.0
        pseudo, curve, _, _ = method._adapt_chunk(x, text)
        if steps == 0:
            order = np.argsort(-curve, axis=1, kind="stable")
            top, bottom = order[:, :5], order[:, -5:]  # the first step's pseudo-positives and negatives (M = 5)
            assert (curve > 0).all()
        rows = np.arange(len(curve))[:, None]
        positive, negative = curve[rows, top].mean(1), curve[rows, bottom].mean(1)
        ratio[steps, lr], margin[steps, lr] = negative / positive, positive - negative
    assert (ratio[15, 1e-5] < ratio[0, 1e-5]).all() and (margin[15, 1e-5] > margin[0, 1e-5]).all()  # code's lr: small
    assert (ratio[15, 1e-3] < ratio[15, 1e-5] - 0.05).all() and (margin[15, 1e-3] > margin[15, 1e-5]).all()


def test_adaptation_steps_are_counted(tiny_text, tmp_path):
    view = planted(tiny_text, tmp_path, n_test=t3al._CHUNK + 2, T=20)  # two chunks of videos
    method = build(tiny_text, tmp_path, {"steps": 3})
    with measure() as cost:
        method.predict(view)
    assert cost.steps == 3 * 2  # every step of every chunk, seen by the runner's optimizer hook
    for name in ("byol", "code", "none"):
        check_detections(build(tiny_text, tmp_path, {"steps": 2, "feature_loss": name}).predict(view), view)


def test_zero_shot_detection_on_planted_features(tiny_text, tmp_path):
    view = planted(tiny_text, tmp_path)
    method = build(tiny_text, tmp_path)
    method.fit(None)  # nothing to learn
    detections = method.predict(view)
    check_detections(detections, view)
    assert evaluate_detection(view.gt, as_table(detections)).map[0] > 0.9  # mAP at tIoU 0.5
    assert all(d["label"] == v.instances[0].label for v in view.videos for d in detections[v.id])


def two_class_video(text, tmp_path):
    """One 40-snippet video: class 0's embedding over snippets 4-14, class 1's (weaker) over 24-34."""
    view = planted(text, tmp_path, n_test=1, T=40)
    emb = class_embeddings(text, view.classes, tmp_path)
    x = 0.05 * np.random.default_rng(0).standard_normal((1, 40, emb.shape[1])).astype(np.float32)
    x[0, 4:15] += emb[0]
    x[0, 24:35] += 0.8 * emb[1]
    video = replace(view.videos[0], duration=40.0)
    return replace(view, videos=[video], features=x), video.id


def test_single_label_switch(tiny_text, tmp_path):
    view, vid = two_class_video(tiny_text, tmp_path)
    given = {vid: [[4.0, 15.0], [24.0, 35.0]]}
    single, per_segment = build(tiny_text, tmp_path), build(tiny_text, tmp_path, {"single_label": False})
    assert [d["label"] for d in single.classify_segments(view, given)[vid]] == [view.classes[0]] * 2
    assert [d["label"] for d in per_segment.classify_segments(view, given)[vid]] == list(view.classes[:2])
    two = build(tiny_text, tmp_path, {"single_label": False, "top_k_labels": 2}).classify_segments(view, given)[vid]
    assert len(two) == 4 and two[0]["score"] >= two[1]["score"] and two[0]["segment"] == two[1]["segment"]
    # predict: one label for every segment of the video, or each segment's own top class
    assert {d["label"] for d in single.predict(view)[vid]} == {view.classes[0]}
    adapted = per_segment.adapt(view)
    segments = per_segment._segments(adapted)[0]
    own = per_segment.segment_probs(adapted, 0, segments).argmax(1)
    got = {(round(d["segment"][0], 6), d["label"]) for d in per_segment.predict(view)[vid]}
    assert got == {(round(lo * 40.0 / 40, 6), view.classes[k]) for (lo, _), k in zip(segments, own)}


def test_deterministic_and_seed_independent(tiny_text, tmp_path):
    view = planted(tiny_text, tmp_path, noise=0.3)
    first = build(tiny_text, tmp_path).predict(view)
    assert build(tiny_text, tmp_path).predict(view) == first
    assert build(tiny_text, tmp_path, seed=7).predict(view) == first


def test_hooks_never_read_instances(tiny_text, tmp_path):
    view = planted(tiny_text, tmp_path, noise=0.3)
    given = {v.id: [[i.start, i.end] for i in v.instances] + [[0.0, v.duration]] for v in view.videos}
    method = build(tiny_text, tmp_path)
    assert method.capabilities() == {"proposals", "classify_segments"}
    outputs = (method.predict(view), method.proposals(view), method.classify_segments(view, given))
    blind = replace(view, videos=[replace(v, instances=()) for v in view.videos])
    assert (method.predict(blind), method.proposals(blind), method.classify_segments(blind, given)) == outputs
    predicted, proposals, labelled = outputs
    for v in view.videos:
        assert [p["segment"] for p in proposals[v.id]] == [d["segment"] for d in predicted[v.id]]
        assert all(set(p) == {"segment", "score"} for p in proposals[v.id])
        assert [d["segment"] for d in labelled[v.id]] == given[v.id]  # one label each (top_k_labels 1)


@pytest.mark.parametrize("overrides, fragment", [
    ({"steps": -1}, "steps"),
    ({"pseudo_fraction": 0.0}, "pseudo_fraction"),
    ({"pseudo_fraction": 0.7}, "pseudo_fraction"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"feature_loss": "hybrid"}, "feature_loss"),
    ({"smoothing": 4}, "smoothing"),
    ({"min_length": 0}, "min_length"),
    ({"merge_gap": -1}, "merge_gap"),
    ({"top_k_labels": 0}, "top_k_labels"),
])
def test_config_errors(tiny_text, tmp_path, overrides, fragment):
    with pytest.raises(ConfigError) as info:
        build(tiny_text, tmp_path, overrides)
    assert "\n" not in str(info.value) and fragment in str(info.value)


def test_needs_joint_space_features(tiny_text, tmp_path):
    with pytest.raises(ConfigError, match="joint space"):
        t3al.T3AL.check_features(t3al.Config(), 32, 64)
