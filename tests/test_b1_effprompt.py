"""B-I (b1_bmn_clip) and EffPrompt (effprompt): the two-stage baselines on the synthetic benchmark,
their oracle hooks, shapes, determinism, the convergence rule's record and config errors."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmark.data.annotations import Video
from benchmark.data.synthetic import ensure_synthetic
from benchmark.data import zero_shot
from benchmark.evaluation.segments import SegmentTable
from benchmark.harness.registry import ConfigError, MethodContext, apply_hparams, get_method, make_config
from benchmark.text.clip import load_text_tower
from methods.b1_bmn_clip import mean_features, training_segments
from methods.effprompt import ProposalClassifier, sample_segments
from methods.modules.convergence import holdout_split
from synthetic_views import check_detections, synthetic_views

torch.set_num_threads(1)
FAST_BMN = {"epochs": 1}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """The smoke synthetic benchmark with features in the text space (no rotation, no residual, little
    nuisance), so that frozen CLIP can name the classes; a 75/25 split; and a view of the seen classes
    on the training videos."""
    root = ensure_synthetic(tmp_path_factory.mktemp("synthetic"), "smoke", 0, rotation=0.0, residual=0.0,
                            scene=0.3, gap=0.0, instance_jitter=0.05, noise=0.2)
    views = synthetic_views(root)
    seen = zero_shot.test_view(replace(views.dataset, test_subset="training"), views.split.seen)
    return SimpleNamespace(train=views.train, test=views.test, seen=seen, text=views.text)


def make(method: str, synthetic, overrides=None, cache_dir=None, log=lambda line: None, seed=0):
    context = MethodContext(seed=seed, text_encoder=synthetic.text, cache_dir=cache_dir, log=log)
    return get_method(method)(make_config(method, overrides or {}), context)


def gt_segments(view) -> dict[str, list[list[float]]]:
    out = {}
    for v in view.videos:
        out[v.id] = [[i.start, i.end] for i in v.instances]
    return out


def top1_accuracy(view, labelled: dict) -> float:
    """Share of GT instances whose segment's best label (first returned) is the instance's class."""
    truth = {(v.id, i.start, i.end): i.label for v in view.videos for i in v.instances}
    best = {}
    for vid, dets in labelled.items():
        for d in dets:
            best.setdefault((vid, d["segment"][0], d["segment"][1]), (d["score"], d["label"]))
            if d["score"] > best[(vid, d["segment"][0], d["segment"][1])][0]:
                best[(vid, d["segment"][0], d["segment"][1])] = (d["score"], d["label"])
    return float(np.mean([best[key][1] == label for key, label in truth.items()]))


@pytest.mark.parametrize("method", ["b1_bmn_clip", "effprompt"])
def test_registered_with_both_oracle_hooks(method):
    assert get_method(method).capabilities() == {"proposals", "classify_segments"}


def test_b1_gt_proposals_name_the_seen_classes(synthetic):
    b1 = make("b1_bmn_clip", synthetic, {"proposals": "gt"})
    b1.fit(synthetic.train)
    assert b1.bmn is None  # the oracle needs no proposal network
    # Chance is 1/15; the misses are one pair whose tiny-tower prompts nearly coincide ("spinning the
    # hair" is read as "spinning a bicycle"), a property of the data, not of the pipeline.
    assert top1_accuracy(synthetic.seen, b1.classify_segments(synthetic.seen, gt_segments(synthetic.seen))) > 0.85
    detections = b1.predict(synthetic.seen)  # ORACLE: GT segments of the view as proposals
    check_detections(detections, synthetic.seen)
    segments = {tuple(d["segment"]) for dets in detections.values() for d in dets}
    assert segments == {(i.start, i.end) for v in synthetic.seen.videos for i in v.instances}


def test_b1_linear_projection_for_other_features(synthetic):
    """512-d features (a random linear map of the CLIP-space ones) against the 64-d tiny tower."""
    mix = np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32)
    train = replace(synthetic.train, features=synthetic.train.features @ mix)
    seen = replace(synthetic.seen, features=synthetic.seen.features @ mix)
    with pytest.raises(ConfigError, match="projection='linear'"):
        make("b1_bmn_clip", synthetic, {"proposals": "gt"}).fit(train)
    b1 = make("b1_bmn_clip", synthetic, {"proposals": "gt", "projection": "linear"})
    b1.fit(train)
    assert top1_accuracy(seen, b1.classify_segments(seen, gt_segments(seen))) > 0.9


def test_effprompt_overfits_the_seen_classes(synthetic):
    ep = make("effprompt", synthetic, {"proposals": "gt", "epochs": 20, "batch_size": 64,
                                       "convergence": {"rule": "epochs"}})  # every training video, 20 epochs
    ep.fit(synthetic.train)
    assert top1_accuracy(synthetic.seen, ep.classify_segments(synthetic.seen, gt_segments(synthetic.seen))) > 0.95


def test_two_stage_pipelines_share_one_cached_bmn(synthetic, tmp_path: Path):
    lines = []
    b1 = make("b1_bmn_clip", synthetic, {"bmn": FAST_BMN}, cache_dir=tmp_path, log=lines.append)
    b1.fit(synthetic.train)
    check_detections(b1.predict(synthetic.test), synthetic.test)
    proposals = b1.proposals(synthetic.test)
    assert max(len(p) for p in proposals.values()) <= 100
    assert all(set(p) == {"segment", "score"} for ps in proposals.values() for p in ps)

    ep = make("effprompt", synthetic, {"bmn": FAST_BMN, "epochs": 1}, cache_dir=tmp_path, log=lines.append)
    ep.fit(synthetic.train)
    check_detections(ep.predict(synthetic.test), synthetic.test)
    assert ep.proposals(synthetic.test) == proposals  # the same cached proposals
    assert sum(line.startswith("bmn: epoch") for line in lines) == 1
    assert any("loaded" in line for line in lines)
    assert ep.context.ledger.training["bmn"] == b1.context.ledger.training["bmn"]  # recorded, built or loaded
    assert set(ep.context.ledger.training) == {"bmn", "effprompt"}

    labelled = ep.classify_segments(synthetic.test, gt_segments(synthetic.test))
    assert sum(len(d) for d in labelled.values()) == 2 * len(synthetic.test.gt)  # top-2 classes each
    assert all(d["label"] in synthetic.test.classes for ds in labelled.values() for d in ds)


def test_effprompt_holds_out_training_videos(synthetic):
    """The plateau rule holds out whole training videos: none of their segments is trained on. (On this
    easy, separable data the held-out loss keeps falling: the cap stops it.)"""
    ep = make("effprompt", synthetic, {"proposals": "gt", "epochs": 3})
    ep.fit(synthetic.train)
    videos = synthetic.train.videos
    fitted, held = holdout_split(len(videos), ep.config.convergence, seed=0)
    assert len(held) > 0 and not set(fitted) & set(held) and len(fitted) + len(held) == len(videos)
    table, _ = training_segments(synthetic.train)
    fitted_segments = np.isin(table.video, [videos[n].id for n in fitted]).sum()
    assert 0 < fitted_segments < len(table)
    record = ep.context.ledger.training["effprompt"]
    assert (record["rule"], record["stopped"], record["epochs"]) == ("plateau", "cap", 3)
    assert (record["fitted_videos"], record["fitted_segments"]) == (len(videos) - len(held), fitted_segments)
    assert record["steps"] == 3 * np.ceil(fitted_segments / ep.config.batch_size)
    assert len(record["curve"]) == 3 and record["best_step"] <= record["steps"]


@pytest.mark.parametrize("method, overrides", [("b1_bmn_clip", {"bmn": FAST_BMN}),
                                               ("effprompt", {"proposals": "gt", "epochs": 2})])
def test_deterministic_on_cpu(synthetic, method, overrides):
    runs = []
    for _ in range(2):
        m = make(method, synthetic, overrides)
        m.fit(synthetic.train)
        runs.append(m.predict(synthetic.test))
    assert runs[0] == runs[1]


def test_effprompt_shapes_and_finite_loss(synthetic):
    """The real default config on random 512-d features (a projection to the 64-d text space)."""
    torch.manual_seed(0)
    cfg = make_config("effprompt")
    tower = load_text_tower(synthetic.text)
    model = ProposalClassifier(512, tower, synthetic.train.classes, cfg)
    logits = model(torch.randn(5, cfg.points, 512), model.prompt())
    assert logits.shape == (5, len(synthetic.train.classes))
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(5))
    loss.backward()
    assert torch.isfinite(loss) and model.prompt.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in tower.parameters())  # the text tower stays frozen


class RampView:
    """Features equal to the snippet index (every channel): means and samples are positions."""

    def __init__(self, T=10, duration=20.0):
        self.videos = [Video("v", "validation", duration, None, ())]
        self.features = np.repeat(np.arange(T, dtype=np.float32)[None, :, None], 3, axis=2)
        self.T = T


def test_mean_and_sampled_features_hand_computed():
    view = RampView()  # 10 snippets of 2 s
    table = SegmentTable.from_rows([("v", 4.0, 10.0, "", 1.0), ("v", 5.0, 5.5, "", 1.0)], with_score=True)
    np.testing.assert_allclose(mean_features(view, table)[:, 0], [3.0, 2.0])  # snippets 2,3,4 / snippet 2
    # 4 points of [4, 10) s at 4.75, 6.25, 7.75, 9.25 s -> snippet coordinates 1.875, 2.625, 3.375, 4.125
    np.testing.assert_allclose(sample_segments(view, table, 4)[0, :, 0], [1.875, 2.625, 3.375, 4.125], rtol=1e-6)


@pytest.mark.parametrize("method, overrides, match", [
    ("b1_bmn_clip", {"proposals": "oracle"}, "proposals must be one of"),
    ("b1_bmn_clip", {"projection": "mlp"}, "projection must be"),
    ("b1_bmn_clip", {"bmn": {"hidden_1d": 30}}, "divisible by groups"),
    ("effprompt", {"n_ctx": 0}, "n_ctx must be"),
    ("effprompt", {"top_k_labels": 0}, "top_k_labels"),
])
def test_bad_config_values_give_one_line_errors(synthetic, method, overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        make(method, synthetic, overrides)
    assert "\n" not in str(err.value)


def test_effprompt_heads_must_divide_the_feature_size(synthetic):
    odd = replace(synthetic.train, features=synthetic.train.features[..., :63])
    with pytest.raises(ConfigError, match="not divisible by heads"):
        make("effprompt", synthetic, {"proposals": "gt"}).fit(odd)


def test_profile_hyper_parameters(synthetic):
    """``recipe: paper`` sizes the model as the papers; ``epochs`` sets every schedule, BMN's included."""
    config = apply_hparams("effprompt", make_config("effprompt", {"proposals": "gt"}), {"recipe": "paper", "epochs": 1})
    ep = get_method("effprompt")(config, MethodContext(text_encoder=synthetic.text))
    assert (ep.config.n_ctx, ep.config.layers, ep.config.epochs, ep.config.proposals) == (16, 2, 1, "gt")
    assert (ep.config.bmn.hidden_2d, ep.config.bmn.epochs) == (128, 1)  # decay_epochs 2 > 1: BMN's one epoch decays
    assert ep.config.convergence.rule == ep.config.bmn.convergence.rule == "epochs"  # the papers' fixed schedules
    b1 = apply_hparams("b1_bmn_clip", make_config("b1_bmn_clip"), {"epochs": 3})
    assert b1.bmn.epochs == 3 and b1.bmn.hidden_2d == make_config("b1_bmn_clip").bmn.hidden_2d
    assert b1.bmn.convergence.rule == make_config("effprompt").convergence.rule == "plateau"  # epochs: the cap
    paper_b1 = apply_hparams("b1_bmn_clip", make_config("b1_bmn_clip"), {"recipe": "paper"})
    assert (paper_b1.bmn.convergence.rule, paper_b1.bmn.epochs, paper_b1.bmn.decay_epochs) == ("epochs", 9, 2)
