"""OV-ActionFormer (methods/ovactionformer.py) and Ti-FAD (methods/tifad.py) on real-shaped random features:
label assignment and losses by hand, overfitting, determinism from a cold text cache, the convergence rule's
record, every ablation switch, the paper recipe and config errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.data import zero_shot
from benchmark.data.annotations import Instance, Video
from benchmark.data.targets import snippet_targets
from benchmark.evaluation.detection import evaluate_detection
from benchmark.evaluation.segments import SegmentTable
from benchmark.harness.registry import ConfigError, MethodContext, apply_hparams, get_method, make_config
from benchmark.text.tiny import make_tiny_clip
from methods.modules.losses import sigmoid_focal_loss
from methods.ovactionformer import Config, Points, assign_targets, diou_loss_1d
from methods.tifad import TiCABlock
from methods.tifad import Config as TiFADConfig
from synthetic_views import check_detections

torch.set_num_threads(1)

T, D = 32, 48  # D differs from the tiny tower's 64-d embeddings: the model must project
SEEN = ("brushing the dog", "kicking a ball", "washing the car", "riding a horse")
UNSEEN = ("folding a box", "painting a fence")
METHODS = ("ovactionformer", "tifad")
FIXED = {"rule": "epochs", "warmup_steps": 0}  # a fixed schedule: on the tiny views ``epochs`` sets the length
SMALL = {"dim": 32, "heads": 2, "levels": 3, "head_layers": 2, "mlp_ratio": 2.0, "embed_layers": 1}  # for time


@pytest.fixture(scope="module")
def text_cfg(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The class-embedding cache of these tests (not the user's)."""
    return tmp_path_factory.mktemp("text_cache")


def make_videos(n: int, classes, rng, prefix: str) -> list[Video]:
    """One instance a video, a second one every third video; durations in seconds."""
    videos = []
    for i in range(n):
        duration = float(rng.uniform(40, 120))
        instances = [Instance(float(rng.uniform(0.05, 0.2)) * duration, float(rng.uniform(0.35, 0.5)) * duration,
                              classes[i % len(classes)])]
        if i % 3 == 0:
            instances.append(Instance(0.65 * duration, 0.8 * duration, classes[(i + 1) % len(classes)]))
        videos.append(Video(f"{prefix}{i}", "x", duration, None, tuple(instances)))
    return videos


def ground_truth(videos) -> SegmentTable:
    return SegmentTable.from_rows(((v.id, i.start, i.end, i.label) for v in videos for i in v.instances),
                                  with_score=False)


def views(n_train=16, n_test=6, noise=0.3, seed=0, test_classes=UNSEEN):
    """Background noise plus a class signature inside every instance; a train view on SEEN, a test view."""
    rng = np.random.default_rng(seed)
    classes = tuple(sorted(SEEN + UNSEEN))
    signatures = {c: rng.standard_normal(D).astype(np.float32) for c in classes}

    def features(videos, names):
        x = noise * rng.standard_normal((len(videos), T, D)).astype(np.float32)
        targets = snippet_targets(videos, {c: k for k, c in enumerate(names)}, T)
        fg = targets.cls < len(names)
        x[fg] += np.stack([signatures[c] for c in names])[targets.cls[fg]]
        return x, targets

    seen, test = tuple(sorted(SEEN)), tuple(sorted(test_classes))
    train_videos, test_videos = make_videos(n_train, seen, rng, "tr"), make_videos(n_test, test, rng, "te")
    x_train, targets = features(train_videos, seen)
    x_test, _ = features(test_videos, test)
    return (zero_shot.TrainView(train_videos, x_train, targets, seen, T),
            zero_shot.TestView(test_videos, x_test, test, ground_truth(test_videos), T))


def train_as_test(train) -> zero_shot.TestView:
    return zero_shot.TestView(train.videos, train.features, train.classes, ground_truth(train.videos), train.T)


def fit(method: str, text_cfg, train, overrides=None, seed=0, cache_dir=None):
    """Fit a model of ``SMALL`` size with ``overrides``."""
    context = MethodContext(seed=seed, text_encoder=text_cfg, cache_dir=cache_dir, log=lambda line: None)
    model = get_method(method)(make_config(method, SMALL | (overrides or {})), context)
    model.fit(train)
    return model, context


def table(detections) -> SegmentTable:
    return SegmentTable.from_rows(((v, d["segment"][0], d["segment"][1], d["label"], d["score"])
                                   for v, dets in detections.items() for d in dets), with_score=True)


# -- label assignment and losses by hand ---------------------------------------------------------

def test_pyramid_locations_and_label_assignment_by_hand():
    cfg = Config(levels=3, regression_base=4, center_radius=1.5)
    points = Points.make(10, cfg)
    assert points.lengths == (10, 5, 3) and len(points.centre) == 18
    assert points.centre[10:12].tolist() == [1.0, 3.0] and points.stride[10] == 2  # level 2 covers [0, 2), [2, 4)
    # 10 s over 10 snippets: instance [2, 9) s = snippets [2, 9), centre 5.5, longest distance from 5.5 is 3.5
    video = Video("v", "x", 10.0, None, (Instance(2.0, 9.0, "b"),))
    t = assign_targets([video], ("a", "b"), 10, points, cfg)
    # level 1 (stride 1, range [0, 4]): centre sampling keeps 4.5, 5.5 and 6.5 (within 1.5 of 5.5); the longest
    # distances of 4.5 and 6.5 to the boundaries (4.5) exceed 4: only 5.5 stays
    assert np.flatnonzero(t.positive[0, :10]).tolist() == [5]
    np.testing.assert_allclose(t.offsets[0, 5], [3.5, 3.5])
    # level 2 (stride 2, range [4, 8], ends included): centres 1, 3, 5, 7, 9 within 3 of 5.5 -> 3, 5, 7, whose
    # longest distances 6, 4, 5 are all in range; level 3 (stride 4, range [8, inf)): centre 6 reaches only 4
    assert np.flatnonzero(t.positive[0, 10:15]).tolist() == [1, 2, 3] and not t.positive[0, 15:].any()
    np.testing.assert_allclose(t.offsets[0, 11], [(3 - 2) / 2, (9 - 3) / 2])  # in strides
    assert t.cls[0][t.positive[0]].tolist() == [[0.0, 1.0]] * 4 and t.cls[0][~t.positive[0]].sum() == 0
    assert t.centre_weight[0, 5] == pytest.approx(1.0) and (t.centre_weight[0][~t.positive[0]] == 0).all()


def test_diou_loss_by_hand():
    same = torch.tensor([[2.0, 3.0]])
    assert diou_loss_1d(same, same).item() == pytest.approx(0.0, abs=1e-6)
    # predicted [-1, 1], target [-2, 3] around the location: IoU 2/5, centres 0 and 0.5, enclosing 5
    loss = diou_loss_1d(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 3.0]]))
    assert loss.item() == pytest.approx(1 - 2 / 5 + (0.5 / 5) ** 2, rel=1e-6)


def test_focal_loss_by_hand():
    """The shared focal loss (OV-ActionFormer, Ti-FAD, OV-STAD) at logit 0: p = 0.5, -log p_t = ln 2,
    (1 - p_t)^2 = 1/4; α_t = 0.25 for a positive, 0.75 for a negative; a soft target 0.5 gives p_t = 0.5 too."""
    loss = sigmoid_focal_loss(torch.zeros(3), torch.tensor([1.0, 0.0, 0.5]), gamma=2.0, alpha=0.25)
    ln2 = float(np.log(2))
    assert loss.tolist() == pytest.approx([0.25 * 0.25 * ln2, 0.75 * 0.25 * ln2, 0.5 * 0.25 * ln2])
    assert sigmoid_focal_loss(torch.tensor([4.0]), torch.tensor([1.0]), 0.0, -1.0).item() == pytest.approx(np.log1p(np.exp(-4)))


def test_salient_attentive_mask_peaks_on_the_snippets_most_similar_to_a_text():
    cfg = TiFADConfig(dim=8, heads=2, sam_topk=0.1, sam_sigma=1.0)
    block = TiCABlock(cfg, stride=1)
    text = torch.zeros(1, 2, 8)
    text[0, 0, 0] = 1.0
    z = torch.randn(1, 20, 8, generator=torch.Generator().manual_seed(0)) * 0.01
    z[0, :, 0] = -0.05  # every snippet unlike text 0 but two
    z[0, 4, 0], z[0, 15, 0] = 5.0, 4.0
    sam = block.salient_mask(z, text)[0]
    assert sam[4] == pytest.approx(1.0) and sam[15] == pytest.approx(1.0)
    assert sam[5] == pytest.approx(np.exp(-0.5), rel=1e-5) and sam[10] < 1e-3
    merged = TiCABlock(TiFADConfig(dim=8, heads=2, sam_topk=0.1, sam_sigma=1.0, sam_combine="merged_sum",
                                   sam_merge=0.6), stride=1).salient_mask(z, text)[0]
    assert int(merged.argmax()) in (9, 10) and merged.max() == pytest.approx(1.0, abs=1e-4)  # one bump at their mean


# -- training: overfitting, determinism, the convergence rule ------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_overfits_a_tiny_seen_class_training_set(text_cfg, cache, method):
    train, _ = views(n_train=12)
    model, _ = fit(method, text_cfg, train, {"convergence": FIXED, "epochs": 25, "batch_size": 4, "lr": 3e-3,
                                             "pre_nms_topk": 200}, cache_dir=cache)
    test = train_as_test(train)
    detections = model.predict(test)
    check_detections(detections, test)
    result = evaluate_detection(test.gt, table(detections), [0.5, 0.7])
    assert result.map.min() > 0.9, result.map
    # the analysis hooks on the same model: its classifier on the ground-truth segments, its proposals
    given = {v.id: [[i.start, i.end] for i in v.instances] for v in test.videos}
    classified = model.classify_segments(test, given)
    assert [d["segment"] for d in classified["tr0"]] == [given["tr0"][0]] * 2 + [given["tr0"][1]] * 2  # top 2 labels
    assert evaluate_detection(test.gt, table(classified), [0.5]).map[0] > 0.9
    proposals = model.proposals(test)
    assert set(proposals) == {v.id for v in test.videos} and all("label" not in p for p in proposals["tr0"])
    best = [max(tiou(p["segment"], (i.start, i.end)) for p in proposals[v.id]) for v in test.videos for i in v.instances]
    assert min(best) > 0.7, best


def tiou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def test_snippet_scores_take_the_best_covering_location_of_every_level():
    model = get_method("ovactionformer")(make_config("ovactionformer", {"levels": 3}), MethodContext())
    model.points = Points.make(6, model.config)  # levels of 6, 3, 2 locations
    scores = np.zeros((1, 11, 1))
    scores[0, 2, 0], scores[0, 6 + 2, 0], scores[0, 9 + 0, 0] = 0.9, 0.5, 0.2  # snippet 2; level 2 loc. 2; level 3 loc. 0
    # level 2 location 2 covers snippets 4-5, level 3 location 0 snippets 0-3 (location 1: 4-7, clipped to 4-5)
    assert model.snippet_scores(scores)[0, :, 0].tolist() == [0.2, 0.2, 0.9, 0.2, 0.5, 0.5]


@pytest.mark.parametrize("method", METHODS)
def test_epoch_end_observes_every_epoch_without_changing_training(text_cfg, cache, method):
    """``context.epoch_end`` (the best-epoch-on-test audit) is called once an epoch, in eval mode without
    gradients, and the trained model is the same bit for bit as without it."""
    train, test = views(n_train=8)
    overrides = SMALL | {"convergence": FIXED, "epochs": 3, "batch_size": 4}
    seen = []

    def probe(epoch):
        assert not model.model.training and not torch.is_grad_enabled()
        seen.append((epoch, model.predict(test)))

    context = MethodContext(seed=1, text_encoder=text_cfg, cache_dir=cache, log=lambda line: None, epoch_end=probe)
    model = get_method(method)(make_config(method, overrides), context)
    model.fit(train)
    plain, _ = fit(method, text_cfg, train, overrides, seed=1, cache_dir=cache)
    assert [e for e, _ in seen] == [1, 2, 3] and seen[0][1] != seen[-1][1]
    assert seen[-1][1] == model.predict(test) == plain.predict(test)


@pytest.mark.parametrize("method", METHODS)
def test_fit_predict_is_deterministic_from_a_cold_text_cache(text_cfg, method, tmp_path):
    """Two fits with one seed, the first building the class embeddings (cold cache: the text tower is built,
    which draws torch's RNG), the second reading them: the same scores bit for bit, the same detections."""
    train, test = views(n_train=8)
    overrides = {"convergence": FIXED, "epochs": 3, "batch_size": 4}
    runs = [fit(method, text_cfg, train, overrides, seed=3, cache_dir=tmp_path / "text")[0] for _ in range(2)]
    (scores_a, segments_a), (scores_b, segments_b) = (m.outputs(test) for m in runs)
    np.testing.assert_array_equal(scores_a, scores_b)
    np.testing.assert_array_equal(segments_a, segments_b)
    assert scores_a.std() > 1e-4  # trained outputs, not two constant arrays
    first = runs[0].predict(test)
    assert first == runs[1].predict(test)
    assert {d["label"] for dets in first.values() for d in dets} <= set(UNSEEN)


@pytest.mark.parametrize("method", METHODS)
def test_training_stops_by_the_shared_convergence_rule_and_records_it(text_cfg, cache, method):
    train, _ = views(n_train=20)
    _, context = fit(method, text_cfg, train, {"epochs": 60, "batch_size": 6, "lr": 3e-3,
                                               "convergence": {"warmup_steps": 6}}, cache_dir=cache)
    record = context.ledger.training[method]
    assert record["rule"] == "plateau" and record["fitted_videos"] == 18  # 2 of 20 videos held out
    assert record["stopped"] == "plateau" and record["steps"] < 60 * 3 and len(record["curve"]) >= 3, record
    _, fixed = fit(method, text_cfg, train, {"epochs": 2, "batch_size": 5, "convergence": FIXED}, cache_dir=cache)
    record = fixed.ledger.training[method]
    assert (record["stopped"], record["steps"], record["fitted_videos"]) == ("epochs", 8, 20)


# -- ablation switches, recipe, configuration ----------------------------------------------------

SWITCHES = [
    ("ovactionformer", {"window": 0}),
    ("ovactionformer", {"abs_position": True, "multiclass_nms": False, "label_smoothing": 0.1}),
    ("tifad", {"cross_modal": False, "sam": False}),
    ("tifad", {"sam": False}),
    ("tifad", {"soft_fad": False}),
    ("tifad", {"hard_fad": False}),
    ("tifad", {"soft_fad": False, "hard_fad": False}),
    ("tifad", {"sam_apply": "code"}),
    ("tifad", {"sam_combine": "merged_sum"}),
    ("tifad", {"sam_sigma": 2.0}),
    ("tifad", {"soft_target": "code"}),
]


@pytest.mark.parametrize("method, overrides", SWITCHES, ids=lambda o: str(o))
def test_every_ablation_switch_trains_and_detects(text_cfg, cache, method, overrides):
    train, test = views(n_train=6, n_test=3)
    model, _ = fit(method, text_cfg, train, {"convergence": FIXED, "epochs": 1, "batch_size": 3,
                                             "pre_nms_thresh": 0.0} | overrides,
                   cache_dir=cache)
    detections = model.predict(test)
    check_detections(detections, test)
    assert sum(map(len, detections.values())) > 0
    cfg = model.config
    heads = {"fg": getattr(cfg, "hard_fad", False), "soft": getattr(cfg, "soft_fad", False)}
    with torch.no_grad():
        out = model.model(torch.as_tensor(test.features), model.class_text(test.classes))
    assert set(out.extra) == {k for k, on in heads.items() if on}
    assert out.cls_logits.shape == (3, len(model.points.centre), len(UNSEEN))
    if method == "tifad" and not cfg.cross_modal:
        assert not any(isinstance(b, TiCABlock) for b in model.model.blocks)


def test_paper_recipe_is_per_dataset():
    anet = apply_hparams("tifad", make_config("tifad"), {"recipe": "paper"}, "activitynet")
    assert (anet.dim, anet.levels, anet.window, anet.lr, anet.sam_topk, anet.convergence.rule) == (
        256, 6, 7, 1e-4, 0.1, "epochs")
    thumos = apply_hparams("ovactionformer", make_config("ovactionformer"), {"recipe": "paper", "epochs": 3},
                           "thumos14")
    assert (thumos.dim, thumos.window, thumos.lr, thumos.epochs) == (512, 19, 1e-4, 3)  # epochs: the profile's


@pytest.mark.parametrize("method, overrides, message", [
    ("ovactionformer", {"window": 8}, "window must be 0"),
    ("ovactionformer", {"dim": 30, "heads": 4}, "divisible by heads"),
    ("ovactionformer", {"levels": 0}, "levels must be >= 1"),
    ("ovactionformer", {"prior_prob": 1.0}, "prior_prob must be in"),
    ("ovactionformer", {"lr": "fast"}, "expects float"),
    ("ovactionformer", {"convergence": {"rule": "forever"}}, "rule must be one of"),
    ("tifad", {"cross_modal": False}, "sam needs cross_modal"),
    ("tifad", {"sam_apply": "both"}, "sam_apply must be one of"),
    ("tifad", {"sam_combine": "mean"}, "sam_combine must be one of"),
    ("tifad", {"soft_target": "edge"}, "soft_target must be one of"),
    ("tifad", {"sam_topk": 0.0}, "sam_topk must be in"),
    ("tifad", {"masking": "none"}, "unknown config key"),
])
def test_bad_config_values_fail_with_one_line(method, overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        make_config(method, overrides)
    assert "\n" not in str(error.value)
