"""ST-CLIP reduced (methods/stclip.py) on the embedded J-HMDB-shaped smoke benchmark: every Table 4 axis runs
end to end, outputs are well-formed, a tiny training set is overfitted, training is repeatable, frozen parts stay
frozen, bad configs are refused."""
from __future__ import annotations

import dataclasses

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
from methods import stclip
from methods.modules import convergence
from methods.modules.training import seed_everything
from methods.stclip import STClip, STClipNet

FIXED = {"convergence": {"rule": "epochs"}}  # the paper's kind of schedule: exact iterations, no held-out set
FAST = {**FIXED, "iterations": 3, "warmup_iters": 1}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = ensure_synthetic_stad(tmp_path_factory.mktemp("stad"), "jhmdb_smoke")
    manifest = load_manifest(root)
    ann = load_box_annotations(manifest["annotations"]["act_pkl"])
    split = generate_splits("jhmdb_smoke", ann.labels, 15 / 21, n=1)[0]
    store = BoxFeatureStore(manifest["features"])
    train, test = ann.splits[0]
    detections = load_person_boxes(manifest["person_boxes"], manifest["annotations"]["gt_json"])
    full = {video.split("/")[-1]: video for video in ann.videos}  # ST-CLIP's JSON names the bare movie
    detections = BoxTable(np.array([full[v] for v in detections.video]), detections.frame, detections.box,
                          detections.label, detections.score)
    context = MethodContext(text_encoder=TextEncoderConfig(**manifest["text_encoder"]),
                            cache_dir=tmp_path_factory.mktemp("text"), log=lambda line: None)
    return {"train": box_train_view(ann, split, train, features=store),
            "gt": box_test_view(ann, split, test, features=store),
            "detected": box_test_view(ann, split, test, boxes=detections, rule="top3", features=store),
            "context": context, "split": split}


def fitted(bench, train=None, **overrides) -> STClip:
    method = STClip(make_config("stclip", overrides), bench["context"])
    method.fit(train or bench["train"])
    return method


def check_table(pred: BoxTable, view) -> None:
    classes = list(view.classes)
    assert len(pred) == len(view.boxes) * len(classes)
    assert pred.score is not None and np.isfinite(pred.score).all() and (pred.score >= 0).all()
    rows = pred.score.reshape(-1, len(classes))
    assert np.allclose(rows.sum(1), 1.0, atol=1e-5)
    assert (pred.label.reshape(-1, len(classes)) == np.array(classes)).all()
    candidates = sorted(zip(view.boxes.video.tolist(), view.boxes.frame.tolist(), map(tuple, view.boxes.box.tolist())))
    mine = sorted(zip(pred.video[::len(classes)].tolist(), pred.frame[::len(classes)].tolist(),
                      map(tuple, pred.box[::len(classes)].tolist())))
    assert mine == candidates  # every candidate box once, nothing else


AXES = [{"interaction": False}, {"prompting": "none"}, {"prompting": "last"}, {"interest_tokens": 0.39},
        {"lora_rank": 0}, {"lora_rank": 2}, {"lora_rank": 16}, {"person_token": "patch"},
        {"person_token": "encoder"}, {"person_token": "adapter_fc"}, {"temporal": "none"}, {"temporal": "avg"},
        {"temporal": "mhsa2"}, {"names": "as_in_code", "add_global": False}]


@pytest.mark.parametrize("axis", AXES, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
def test_every_ablation_runs_end_to_end(bench, axis):
    method = fitted(bench, **FAST, **axis)
    for view in (bench["gt"], bench["detected"]):
        check_table(method.predict(view), view)


def test_default_on_unseen_classes_and_detected_boxes(bench):
    method = fitted(bench, **FAST)
    pred = method.predict(bench["detected"])
    check_table(pred, bench["detected"])
    assert set(pred.label) == set(bench["split"].unseen)
    assert get_method("stclip") is STClip


def test_overfits_a_tiny_training_set(bench):
    train = bench["train"]
    videos = train.videos[:3]
    tiny = dataclasses.replace(train, gt=train.gt.select(np.isin(train.gt.video, videos)), videos=videos)
    method = fitted(bench, tiny, **FIXED, iterations=50, warmup_iters=5)
    view = dataclasses.replace(bench["gt"], boxes=gt_person_boxes(tiny.gt), gt=tiny.gt, classes=train.classes,
                               evaluated=train.classes, videos=videos)
    pred = method.predict(view)
    check_table(pred, view)
    assert frame_map(tiny.gt, pred, classes=sorted(set(tiny.gt.label))).map > 0.95


def small(bench, n: int):
    train = bench["train"]
    videos = train.videos[:n]
    return dataclasses.replace(train, gt=train.gt.select(np.isin(train.gt.video, videos)), videos=videos)


PLATEAU = {"epochs": 6, "convergence": {"eval_every": 4, "warmup_steps": 4}}  # the rule on a small case


def test_same_seed_same_bits(bench):
    tiny = small(bench, 6)
    runs = [fitted(bench, tiny, **{**PLATEAU, "epochs": 2}) for _ in range(2)]
    a, b = (method.predict(bench["detected"]) for method in runs)
    assert np.array_equal(a.score, b.score) and np.array_equal(a.box, b.box)
    first, second = (method.context.ledger.training["stclip"] for method in runs)
    assert first["curve"] == second["curve"] and first["steps"] == second["steps"]


def test_stops_on_the_heldout_plateau_and_never_fits_a_heldout_video(bench, monkeypatch):
    train = small(bench, 10)
    seen = {"fit": set(), "held": set()}
    real = stclip.gather

    def spy(data, frames, people):  # training steps run with gradients, held-out evaluations without
        videos = train.gt.video[data.rows[data.start[np.asarray(frames)]]]
        seen["fit" if torch.is_grad_enabled() else "held"].update(videos.tolist())
        return real(data, frames, people)

    monkeypatch.setattr(stclip, "gather", spy)
    method = fitted(bench, train, **PLATEAU)
    record = method.context.ledger.training["stclip"]
    assert record["rule"] == "plateau" and record["stopped"] == "plateau" and record["epochs"] < PLATEAU["epochs"]
    assert len(record["curve"]) >= 3 and record["lr_decays"] == 1
    fitted_idx, held = convergence.holdout_split(len(train.videos), method.config.convergence, 0)
    assert method.heldout_videos == tuple(train.videos[i] for i in held) and record["fitted_videos"] == len(fitted_idx)
    assert seen["held"] == set(method.heldout_videos) and seen["fit"] == set(train.videos) - seen["held"]


def test_frozen_parts_stay_frozen(bench):
    method = fitted(bench, **FIXED, iterations=8, warmup_iters=2)
    model = method.model
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("adapter.", "temporal.", "projector.", "prompts.")) or ".lora_" in name
                             for name in trainable), sorted(trainable)
    assert any(".lora_B" in name for name in trainable) and any(name.endswith(".rho") for name in trainable)
    assert not any("logit" in name or "temperature" in name for name, _ in model.named_parameters())
    seed_everything(method.context.seed)  # fit builds the network right after seeding: the same frozen draws
    fresh = STClipNet(method.config, 64, 64, 1.0)
    before = dict(fresh.named_parameters())
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert len(frozen) >= 4 * 12  # per block: q, k, v, o, two LayerNorms, c_fc, c_proj (weights and biases)
    for name in frozen:
        assert torch.equal(dict(model.named_parameters())[name], before[name]), name
    block = model.blocks[0]
    assert torch.count_nonzero(block.c_proj.base.weight) == 0  # FFN = 0: the stand-in's frozen state
    assert torch.equal(block.q.weight, block.k.weight) and torch.equal(block.q.weight, block.q.weight[0, 0] * torch.eye(64))
    # something trainable did move
    moved = [name for name in trainable if not torch.equal(dict(model.named_parameters())[name], before[name])]
    assert moved


def test_lora_rank_zero_has_no_lora_parameters(bench):
    method = fitted(bench, lora_rank=0, **FAST)
    assert not any("lora" in name for name, _ in method.model.named_parameters())
    with_lora = fitted(bench, lora_rank=4, **FAST)
    shapes = {name: p.shape for name, p in with_lora.model.named_parameters() if "lora_A" in name}
    assert shapes and all(shape[0] == 4 for shape in shapes.values())


def test_recipes_and_bad_configs():
    paper = apply_hparams("stclip", make_config("stclip"), {"recipe": "paper"})
    assert (paper.iterations, paper.warmup_iters, paper.lr, paper.names, paper.clips_per_batch) == (3000, 800, 2.5e-4, "as_in_code", 8)
    assert paper.convergence.rule == "epochs"
    default = make_config("stclip")
    assert (default.convergence.rule, default.convergence.warmup_steps, default.epochs, default.iterations) == ("plateau", 80, 2, 0)
    assert default.lora_rank == 8 and default.lr == 0.05
    bad = [{"prompting": "first"}, {"lora_rank": 3}, {"person_token": "crop"}, {"temporal": "mhsa3"},
           {"interest_tokens": 0.0}, {"interest_tokens": 1.5}, {"interest_tokens": 0.4, "interaction": False},
           {"interest_tokens": 0.4, "prompting": "none"}, {"names": "pretty"}, {"layers": 0}, {"lr": 0.0},
           {"interaction": "yes"}, {"warmup_factor": 0.0}, {"epochs": 0}, {"iterations": 5},
           {"convergence": {"holdout": 0.6}}]  # iterations: rule epochs only
    for overrides in bad:
        with pytest.raises(ConfigError):
            make_config("stclip", overrides)
    with pytest.raises(ConfigError, match="dimension"):
        STClip.check_features(default, 64, 512)
    with pytest.raises(ConfigError, match="text encoder"):
        STClip(default, MethodContext()).class_text(["a"])
