"""STALE (methods/stale.py): every ablation variant on real-shaped random features, the learning
signals, overfitting, the GT-mask oracle, determinism, label fusion and config errors."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from benchmark.data.annotations import Instance, Video
from benchmark.data.synthetic import ensure_synthetic
from benchmark.data.targets import snippet_targets
from benchmark.data import zero_shot
from benchmark.evaluation.detection import evaluate_detection
from benchmark.evaluation.segments import SegmentTable
from benchmark.harness.registry import ConfigError, MethodContext, apply_hparams, get_method, make_config
from benchmark.text.clip import load_text_tower
from benchmark.text.tiny import make_tiny_clip
from methods import label_fusion
from methods.modules.dynamic_conv import DynamicMaskHead
from methods.modules.losses import completeness_loss, consistency_loss, dice_loss, mask_loss, weighted_bce
from methods.modules.temporal import TEMPORAL_MODELS, temporal_model
from methods.stale import (StaleConfig, build_model, make_optimizer, make_scheduler, runs, stale_losses,
                           training_steps, video_detections)
from synthetic_views import DEV_ROOT, check_detections, development_benchmark, synthetic_views

torch.set_num_threads(1)

T, D = 32, 48  # D differs from the tiny tower's 64-d embeddings: the model must project
SEEN = ("brushing the dog", "kicking a ball", "washing the car", "riding a horse")
UNSEEN = ("folding a box", "painting a fence")


@pytest.fixture(scope="module")
def text_cfg(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def make_videos(n: int, classes, rng, prefix: str) -> list[Video]:
    """One or two instances a video, durations in seconds, instances away from each other."""
    videos = []
    for i in range(n):
        duration = float(rng.uniform(40, 120))
        first = (float(rng.uniform(0.05, 0.25)) * duration, float(rng.uniform(0.35, 0.45)) * duration)
        instances = [Instance(*first, classes[i % len(classes)])]
        if i % 3 == 0:
            instances.append(Instance(0.65 * duration, 0.9 * duration, classes[i % len(classes)]))
        videos.append(Video(f"{prefix}{i}", "x", duration, None, tuple(instances)))
    return videos


def features_for(videos, classes, signatures, rng, noise: float) -> np.ndarray:
    """Background noise, plus the class signature on every snippet inside an instance."""
    x = noise * rng.standard_normal((len(videos), T, D)).astype(np.float32)
    targets = snippet_targets(videos, {c: k for k, c in enumerate(classes)}, T)
    fg = targets.cls < len(classes)
    x[fg] += signatures[targets.cls[fg]]
    return x


def views(n_train=16, n_test=8, noise=0.3, seed=0, test_classes=SEEN):
    """A train view on SEEN and a test view on ``test_classes`` (SEEN: closed-set, UNSEEN: zero-shot)."""
    rng = np.random.default_rng(seed)
    classes = tuple(sorted(SEEN + UNSEEN))
    signatures = rng.standard_normal((len(classes), D)).astype(np.float32)
    seen, test = tuple(sorted(SEEN)), tuple(sorted(test_classes))
    train_videos = make_videos(n_train, seen, rng, "tr")
    x_train = features_for(train_videos, seen, signatures[[classes.index(c) for c in seen]], rng, noise)
    targets = snippet_targets(train_videos, {c: k for k, c in enumerate(seen)}, T)
    train = zero_shot.TrainView(train_videos, x_train, targets, seen, T)
    test_videos = make_videos(n_test, test, rng, "te")
    x_test = features_for(test_videos, test, signatures[[classes.index(c) for c in test]], rng, noise)
    return train, zero_shot.TestView(test_videos, x_test, test, ground_truth(test_videos), T)


def ground_truth(videos) -> SegmentTable:
    rows = ((v.id, i.start, i.end, i.label) for v in videos for i in v.instances)
    return SegmentTable.from_rows(rows, with_score=False)


def train_as_test(train: zero_shot.TrainView) -> zero_shot.TestView:
    """The training videos as a (seen-class) test view: for overfitting."""
    return zero_shot.TestView(train.videos, train.features, train.classes, ground_truth(train.videos), train.T)


def context(text_cfg, seed=0, logs=None) -> MethodContext:
    return MethodContext(seed=seed, text_encoder=text_cfg,
                         log=(logs.append if logs is not None else lambda line: None))


def detections_table(detections) -> SegmentTable:
    return SegmentTable.from_rows(((v, d["segment"][0], d["segment"][1], d["label"], d["score"])
                                   for v, dets in detections.items() for d in dets), with_score=True)


def fit_predict(text_cfg, train, test, seed=0, **overrides):
    """Fit and predict; on the tiny views ``epochs`` alone sets the length (min_steps 0) unless given."""
    method = get_method("stale")(make_config("stale", {"min_steps": 0} | overrides), context(text_cfg, seed))
    method.fit(train)
    return method, method.predict(test)


# -- model: every variant of Tables 4-6 -----------------------------------------------------------

VARIANTS = [
    {},
    {"temporal_model": "cnn_1d"},
    {"temporal_model": "ms_tcn"},
    {"masking": "none"},
    {"masking": "gt"},
    {"masking": "cnn_1d"},
    {"num_queries": 5},
    {"num_queries": 100},
    {"text_encoder": "frozen"},
    {"text_encoder": "none"},
    {"text_encoder": "hand_crafted"},
    {"logit_scale": "clip", "ctx_init": "a video of a person"},
]


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_every_variant_has_the_right_shapes_and_finite_losses(text_cfg, overrides):
    cfg = make_config("stale", overrides)
    train, _ = views(n_train=4)
    model = build_model(cfg, load_text_tower(text_cfg), train.classes, D, text_cfg.templates)
    K = len(train.classes)
    x = torch.as_tensor(train.features)
    targets = train.targets
    fg = torch.as_tensor(targets.fg)
    out = model(x, model.text(), fg if cfg.masking == "gt" else None)
    assert out.logits.shape == (4, T, K + 1)
    assert out.mask_logits.shape == (4, T, T)
    assert out.features.shape == (4, T, 64)
    assert (out.fg_logits is None) == (cfg.masking == "none")  # the GT-mask oracle keeps L̂ and L_comp
    if out.fg_logits is not None:
        assert out.fg_logits.shape == (4, T)
    losses = stale_losses(cfg, out, torch.as_tensor(targets.cls), fg, torch.as_tensor(targets.masks))
    assert set(losses) == ({"cls", "mask", "const"} | ({"comp"} if out.fg_logits is not None else set()))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.temporal.proj.weight.grad is not None


def test_temporal_models_shapes_and_no_positional_encoding():
    x = torch.randn(2, T, D)
    for kind in TEMPORAL_MODELS:
        assert temporal_model(kind, D, 16).eval()(x).shape == (2, T, 16)
    # Eq. 1 has no positional encoding: permuting the snippets permutes the embedding
    model = temporal_model("transformer", D, 16, layers=2, heads=4, dropout=0.0).eval()
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(x[:, perm]), model(x)[:, perm], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="temporal model must be one of"):
        temporal_model("lstm", D, 16)


def test_ms_tcn_starts_as_a_rotation_of_the_projected_snippets():
    """With PyTorch's default init MS-TCN's 1x1 chain flattened F_vis and STALE never left chance (0.0
    mAP on every split): it must start as an orthogonal map of proj(x), distances between snippets kept."""
    torch.manual_seed(0)
    model = temporal_model("ms_tcn", D, 16, dropout=0.0).eval()
    x = torch.randn(2, T, D)
    with torch.no_grad():
        f, projected = model(x), model.proj(x)
    exact = "donot_use_mm_for_euclid_dist"
    torch.testing.assert_close(torch.cdist(f, f, compute_mode=exact),
                               torch.cdist(projected, projected, compute_mode=exact), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(f, projected, atol=1e-3)  # a rotation, not the identity


def test_dynamic_mask_head_applies_the_filter_of_location_t_along_the_sequence():
    torch.manual_seed(0)
    head = DynamicMaskHead(dim=12, mask_dim=5, hidden=6, num_kernels=3)
    f = torch.randn(2, 9, 12)
    out = head(f)
    assert out.shape == (2, 9, 9)
    b, t = 1, 4  # recompute row t of video b by hand: mix the kernels with pi(t), run the 3 layers
    pi = torch.softmax(head.attention(f[b, t]).view(3, 3), dim=-1)
    x = torch.cat([head.mask_features(f[b]), ((torch.arange(9.0) - t) / 9).unsqueeze(-1)], dim=-1)
    for layer in range(3):
        w = sum(pi[layer, k] * head.kernels[layer][k] for k in range(3))
        bias = sum(pi[layer, k] * head.biases[layer][k] for k in range(3))
        x = x @ w + bias
        x = torch.relu(x) if layer < 2 else x
    torch.testing.assert_close(out[b, t], x.squeeze(-1), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[b, 0], out[b, 8])  # filters differ from location to location


# -- losses --------------------------------------------------------------------------------------

def test_losses_on_hand_computed_cases():
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    # inverse-proportion weights: mean over fg + mean over bg, each ln 2 at logit 0
    assert weighted_bce(logits, target).item() == pytest.approx(2 * np.log(2), rel=1e-5)
    assert dice_loss(target, target).item() == pytest.approx(0.0, abs=1e-5)
    assert dice_loss(torch.full((1, 4), 0.5), target).item() == pytest.approx(1 - 2 * 0.5 / (1.0 + 1.0), rel=1e-5)
    big = torch.tensor([[20.0, -20.0, -20.0, -20.0]])
    assert mask_loss(big, target).item() == pytest.approx(0.0, abs=1e-4)
    assert mask_loss(logits, target).item() == pytest.approx(2 * np.log(2) + 0.4 * 0.5, rel=1e-5)
    assert completeness_loss(logits, target).item() == pytest.approx(np.log(2), rel=1e-5)
    features = torch.randn(2, 6, 8)
    score = torch.rand(2, 6)
    assert consistency_loss(features, score, score, k=3).item() == pytest.approx(0.0, abs=1e-5)
    assert consistency_loss(features, score, 1 - score, k=3).item() > 0.0


# -- learning signals ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["finetuned", "frozen", "hand_crafted"])
def test_gradient_reaches_the_prompt_and_the_tower_only_when_fine_tuned(text_cfg, kind):
    cfg = make_config("stale", {"text_encoder": kind})
    train, _ = views(n_train=4)
    model = build_model(cfg, load_text_tower(text_cfg), train.classes, D, text_cfg.templates)
    out = model(torch.as_tensor(train.features), model.text())
    targets = train.targets
    cls, fg, masks = (torch.as_tensor(a) for a in (targets.cls, targets.fg, targets.masks))
    losses = stale_losses(cfg, out, cls, fg, masks)
    losses["cls"].backward()
    tower = model.text.tower
    if kind == "hand_crafted":
        assert model.text.background.grad is not None and model.text.background.grad.abs().sum() > 0
    else:
        ctx = model.text.prompts.ctx
        assert ctx.grad is not None and ctx.grad.abs().sum() > 0, "the learnable context (Eq. 2) gets no gradient"
    tower_grads = [p.grad for p in tower.transformer.parameters()]
    if kind == "finetuned":
        assert all(g is not None for g in tower_grads) and sum(g.abs().sum() for g in tower_grads) > 0
        assert not tower.token_embedding.weight.requires_grad  # the vocabulary stays frozen
    else:
        assert all(g is None for g in tower_grads) and not any(p.requires_grad for p in tower.parameters())


def test_stale_overfits_a_tiny_seen_class_training_set(text_cfg):
    train, _ = views(n_train=16)
    test = train_as_test(train)
    method, detections = fit_predict(text_cfg, train, test, epochs=60, batch_size=8, lr=3e-3,
                                     schedule="constant", mask_hidden=8)
    result = evaluate_detection(test.gt, detections_table(detections), [0.5])
    assert result.map[0] > 0.9, result.map
    # the GT-localisation oracle hook: the ground-truth segments labelled by the classification stream
    assert "classify_segments" in method.capabilities()
    labelled = method.classify_segments(test, test.gt.segments_by_video())
    assert all(len(labelled[v.id]) == 2 * len(v.instances) for v in train.videos)  # segment_top_k = 2
    oracle = evaluate_detection(test.gt, detections_table(labelled), [0.5, 0.95])
    assert oracle.map.min() > 0.9, oracle.map  # exact segments: every tIoU is met, only labels count


def development_views(split: int):
    """Zero-shot 75/25 views of the development benchmark (the default synthetic profile with seed 1),
    on which STALE's defaults were chosen."""
    return synthetic_views(development_benchmark(), split=split, cache_dir=DEV_ROOT / "cache")


@pytest.mark.xfail(strict=True, reason=(
    "on the fair benchmark (GENERATOR_VERSION 3) the representation-mask oracle is below the predicted "
    "mask: mean avg mAP over dev splits 0-3 3.4 vs 4.0, both under the 5% floor; it is no upper bound by "
    "construction (L_c then sees no background). The oracle that mirrors B-I's GT proposals is the "
    "action-mask one, to be built with its own floor test (issue 13); this test then goes"))
def test_gt_mask_oracle_scores_at_least_the_predicted_mask_on_the_development_benchmark():
    """Default recipe, the four first class splits: the oracle's mean average mAP must reach the
    predicted mask's. (The broken oracle of 19e9b03's parent scored 0.9 here against 9.2.) On single
    splits it can fall below -- H_m then gets no help from L_c on background snippets -- so the test
    is on the mean, as Table 4 reports it. Strict xfail: it fails today (see the mark), and a pass
    would be news."""
    scores = {"maskformer": [], "gt": []}
    for split in range(4):
        views = development_views(split)
        for masking in scores:
            _, detections = fit_predict(views.text, views.train, views.test, masking=masking, min_steps=StaleConfig.min_steps)
            scores[masking].append(evaluate_detection(views.test.gt, detections_table(detections)).average)
    assert np.mean(scores["gt"]) >= np.mean(scores["maskformer"]) > 0.05, scores


def test_fit_predict_is_deterministic_on_cpu(text_cfg):
    train, test = views(n_train=8, test_classes=UNSEEN)
    first = fit_predict(text_cfg, train, test, seed=3, epochs=2, batch_size=4)[1]
    second = fit_predict(text_cfg, train, test, seed=3, epochs=2, batch_size=4)[1]
    assert first == second
    assert sum(len(d) for d in first.values()) > 0
    assert all(len(d) <= 100 for d in first.values())
    assert {d["label"] for dets in first.values() for d in dets} <= set(UNSEEN)


def test_without_text_encoder_unseen_classes_cannot_be_named(text_cfg):
    train, test = views(n_train=8, test_classes=UNSEEN)
    logs = []
    config = make_config("stale", {"text_encoder": "none", "epochs": 1, "min_steps": 0})
    method = get_method("stale")(config, context(text_cfg, logs=logs))
    method.fit(train)
    detections = method.predict(test)
    labels = {d["label"] for dets in detections.values() for d in dets}
    assert labels and labels <= set(SEEN)  # honest: it only knows the training classes...
    result = evaluate_detection(test.gt, detections_table(detections), [0.5])
    assert result.map[0] == 0.0  # ...which all count as false positives
    assert any("false positives" in line for line in logs)
    given = method.classify_segments(test, test.gt.segments_by_video())  # also for given segments
    assert {d["label"] for dets in given.values() for d in dets} <= set(SEEN)


# -- inference -----------------------------------------------------------------------------------

def test_runs_and_video_detections_by_hand():
    binary = np.array([[0, 1, 1, 0, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    row, start, end = runs(binary)
    assert row.tolist() == [0, 0, 1] and start.tolist() == [1, 4, 0] and end.tolist() == [3, 5, 5]

    cfg = StaleConfig(theta_c=0.5, mask_thresholds=(0.5,), top_snippets=5)
    probs = np.zeros((10, 2))
    probs[3, 1] = 0.8  # one confident snippet, class 1
    masks = np.zeros((10, 10))
    masks[3, 2:6] = [0.6, 0.9, 0.7, 0.55]
    dets = video_detections(cfg, probs, masks, ("a", "b"), duration=20.0)
    assert len(dets) == 1
    assert dets[0]["label"] == "b"
    assert dets[0]["segment"] == pytest.approx([4.0, 12.0])  # snippets 2..5 of 10 over 20 s
    assert dets[0]["score"] == pytest.approx(0.8 * 0.9)  # class probability x max mask score
    assert video_detections(cfg, np.full((10, 2), 0.1), masks, ("a", "b"), 20.0) == []  # nothing above theta_c


# -- label fusion (the leak, as a switch) --------------------------------------------------------

def test_label_fusion_rule_and_json_round_trip(tmp_path):
    detections = {"a": [{"segment": [0, 1], "label": "x", "score": 0.2},
                        {"segment": [1, 2], "label": "x", "score": 0.95}],
                  "b": [{"segment": [0, 1], "label": "y", "score": 0.3}]}
    path = label_fusion.write_external_scores(tmp_path / "best.json", {"v_a": {"class": "z", "score": 0.9}})
    fused = label_fusion.fuse_labels(detections, label_fusion.read_external_scores(path))
    assert [d["label"] for d in fused["a"]] == ["z", "x"]  # kept only above the classifier's confidence
    assert fused["b"] == detections["b"]  # a video the file does not cover keeps its labels
    (tmp_path / "bad.json").write_text(json.dumps({"v_a": {"class": 3}}))
    with pytest.raises(ValueError, match="bad.json"):
        label_fusion.read_external_scores(tmp_path / "bad.json")


def test_all_class_video_classifier_learns_the_leak_and_stale_fuses_it(text_cfg, tmp_path):
    # the classifier is trained on ALL classes (seen and unseen): that is exactly the leak
    rng = np.random.default_rng(0)
    classes = tuple(sorted(SEEN + UNSEEN))
    signatures = rng.standard_normal((len(classes), D)).astype(np.float32)
    videos = make_videos(24, classes, rng, "all")
    x = features_for(videos, classes, signatures, rng, 0.3)
    labels = np.array([classes.index(label_fusion.dominant_class(v)) for v in videos])
    classifier = label_fusion.train_video_classifier(x, labels, len(classes), epochs=50)
    top, prob = label_fusion.classify_videos(classifier, x)
    assert (top == labels).mean() > 0.9 and np.all((prob > 0) & (prob <= 1))

    train, test = views(n_train=8, test_classes=UNSEEN)
    leaked = {f"v_{v.id}": {"class": "folding a box", "score": 1.0} for v in test.videos}
    path = label_fusion.write_external_scores(tmp_path / "scores.json", leaked)
    method, detections = fit_predict(text_cfg, train, test, epochs=2, masking="none", lr=3e-3, schedule="constant",
                                     label_fusion="external", external_scores=str(path))
    assert {d["label"] for dets in detections.values() for d in dets} == {"folding a box"}
    assert method.notes == (label_fusion.NOT_ZERO_SHOT,)
    clean, _ = fit_predict(text_cfg, train, test, epochs=1)
    assert clean.notes == ()


def test_cross_adaptation_runs_the_text_self_attention_once_yet_equals_the_decoder_layer(text_cfg):
    train, _ = views(n_train=3)
    model = build_model(make_config("stale", {}), load_text_tower(text_cfg), train.classes, D).eval()
    lan = torch.randn(1, len(train.classes) + 1, 64)
    f_fg = torch.randn(3, T, 64)
    ignore = torch.rand(3, T) > 0.5
    full = model.cross(lan.expand(3, -1, -1), f_fg, memory_key_padding_mask=ignore)
    torch.testing.assert_close(model.cross_adapt(lan, f_fg, ignore), full)


def test_onecycle_warms_up_to_each_groups_lr_and_anneals(text_cfg):
    train, _ = views(n_train=3)
    cfg = make_config("stale", {"lr": 1e-2, "text_lr_scale": 0.1})
    model = build_model(cfg, load_text_tower(text_cfg), train.classes, D)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer, 20)
    seen = []
    for _ in range(20):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    seen = np.array(seen)
    np.testing.assert_allclose(seen.max(0), [1e-2, 1e-3], rtol=1e-3)
    assert seen[0, 0] < 1e-3 and seen[-1, 0] < 1e-4


def test_training_length_is_epochs_but_at_least_min_steps(text_cfg):
    cfg = StaleConfig(epochs=3, batch_size=16, min_steps=114)
    assert training_steps(cfg, 610) == 3 * 39  # a 75/25 training set: the epochs decide
    assert training_steps(cfg, 430) == 114  # a 50/50 one: as many updates, the last epoch cut short
    assert training_steps(replace(cfg, min_steps=0), 430) == 3 * 27
    train, _ = views(n_train=8)
    logs = []
    method = get_method("stale")(make_config("stale", {"epochs": 1, "batch_size": 4, "min_steps": 5}),
                                 context(text_cfg, logs=logs))
    method.fit(train)
    assert [line.split(" L_")[0] for line in logs] == ["stale: epoch 1 (2/5 steps)", "stale: epoch 2 (4/5 steps)",
                                                     "stale: epoch 3 (5/5 steps)"]


# -- configuration -------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"masking": "oracle"}, "masking must be one of"),
    ({"text_encoder": "bert"}, "text_encoder must be one of"),
    ({"temporal_model": "lstm"}, "temporal_model must be one of"),
    ({"num_queries": 0}, "num_queries must be >= 1"),
    ({"theta_c": 1.5}, "theta_c must be in"),
    ({"mask_thresholds": [0.2, 1.2]}, "mask_thresholds must be in"),
    ({"label_fusion": "external"}, "needs external_scores"),
    ({"epochs": "many"}, "expects int"),
    ({"schedule": "cosine"}, "schedule must be one of"),
    ({"mask_hidden": 0}, "mask_hidden must be >= 1"),
    ({"min_steps": -1}, "min_steps must be >= 0"),
])
def test_bad_config_values_fail_with_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        make_config("stale", overrides)
    assert "\n" not in str(error.value)


def test_hyper_parameters_from_the_profile_override_the_config():
    config = apply_hparams("stale", StaleConfig(), {"epochs": 15, "lr": "1e-4", "other": 1})
    assert config.epochs == 15 and config.lr == 1e-4


def test_paper_recipe_is_per_dataset():
    thumos = apply_hparams("stale", StaleConfig(), {"recipe": "paper", "epochs": 2}, "thumos14")
    assert (thumos.lr, thumos.num_queries, thumos.n_ctx, thumos.epochs) == (1e-5, 20, 16, 2)  # epochs: the profile's
    assert apply_hparams("stale", StaleConfig(), {"recipe": "paper"}, "activitynet").lr == 1e-4


# -- end to end on the embedded synthetic benchmark ----------------------------------------------

def test_end_to_end_on_the_synthetic_smoke_benchmark(tmp_path):
    views = synthetic_views(ensure_synthetic(tmp_path / "synthetic", "smoke", seed=0))
    train, test, text, dataset = views.train, views.test, views.text, views.dataset
    annotations = dataset.annotations
    method = get_method("stale")(make_config("stale", {"epochs": 1, "min_steps": 0}),
                                 MethodContext(seed=0, text_encoder=text, log=lambda line: None))
    method.fit(train)
    detections = method.predict(test)
    check_detections(detections, test)
    result = evaluate_detection(test.gt, detections_table(detections))
    assert 0.0 <= result.average <= 1.0

    # the leak, as the synthetic suite produces it: an all-class video classifier's top-1 per test video
    path = label_fusion.external_video_scores(dataset, tmp_path / "best_score.json", epochs=20)
    scores = label_fusion.read_external_scores(path)
    assert set(scores) == {f"v_{v.id}" for v in annotations.subset("validation")}
    assert {s["class"] for s in scores.values()} <= set(annotations.classes)
    truth = {v.id: label_fusion.dominant_class(v) for v in annotations.subset("validation") if v.instances}
    accuracy = np.mean([scores[f"v_{vid}"]["class"] == label for vid, label in truth.items()])
    assert accuracy > 5 / len(annotations.classes)  # it has learnt the unseen classes too: that is the leak
