"""ST-CLIP reduced (methods/stclip.py) on the embedded J-HMDB-shaped smoke benchmark: every Table 4 axis runs
end to end, outputs are well-formed, a tiny training set is overfitted, training is repeatable, frozen parts stay
frozen, bad configs are refused."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

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


# --- the speed-up keeps the math: the literal forward of methods/stclip.py before it (commit 1267f5c), a slow
# reference run on the parameters of the current modules -----------------------------------------------------

def ref_attention(q, k, v, heads, key_mask=None):
    b, lq, d = q.shape
    split = lambda x: x.reshape(b, x.shape[1], heads, d // heads).transpose(1, 2)
    logits = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // heads)
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    weights = logits.softmax(dim=-1)
    return (weights @ split(v)).transpose(1, 2).reshape(b, lq, d), weights.mean(dim=1)


def ref_linear(layer, x):  # the frozen maps as plain matmuls
    return F.linear(x, layer.weight, layer.bias)


def ref_lora(m, x):
    y = ref_linear(m.base, x)
    return y + (x @ m.lora_A.T @ m.lora_B.T) / m.rank if m.rank else y


def ref_block(block, x, key_mask=None):
    h = block.ln_1(x)
    out, attn = ref_attention(ref_linear(block.q, h), ref_linear(block.k, h), ref_linear(block.v, h), block.heads, key_mask)
    x = x + ref_linear(block.o, out)
    h = ref_lora(block.c_fc, block.ln_2(x))
    return x + ref_lora(block.c_proj, h * torch.sigmoid(1.702 * h)), attn


def ref_temporal(m, z):
    b, t, n, d = z.shape
    z = (z + m.embedding.weight[:t, None, :]).transpose(1, 2).reshape(b * n, t, d)
    for norm, attn in zip(m.norms, m.attn):
        h = norm(z)
        z = z + attn(h, h, h, need_weights=False)[0]
    return z.mean(dim=1).reshape(b, n, d)


def ref_prompt_layer(layer, text, visual, key_mask=None):
    visual = layer.norm(visual)
    h = layer.norm1(text)
    out, _ = ref_attention(layer.q(h), layer.k(visual), layer.v(visual), layer.heads, key_mask)
    bar = text + layer.proj(out)
    hat = bar + layer.mlp(layer.norm3(bar))
    return text + layer.rho * hat


def ref_forward(net, batch, text):
    cfg, s = net.cfg, net.token_scale
    current, window, mask = batch["current"] / s, batch["context"] / s, batch["mask"]
    b, p = mask.shape
    pooled = batch["weights"] @ current
    if cfg.person_token == "patch":
        person = pooled
    elif cfg.person_token == "encoder":
        n = batch["weights"].shape[-1]
        x = torch.cat([pooled.reshape(b * p, 1, -1), current[:, None].expand(b, p, n, -1).reshape(b * p, n, -1)], 1)
        keep = torch.cat([torch.ones(b * p, 1, dtype=torch.bool), batch["weights"].reshape(b * p, n) > 0], 1)
        for block in net.blocks:
            x, _ = ref_block(block, x, keep)
        person = x[:, 0].reshape(b, p, -1)
    else:
        person = pooled + net.adapter(pooled)
    if cfg.temporal == "none":
        context = current
    else:
        context = window.mean(dim=1) if cfg.temporal == "avg" else ref_temporal(net.temporal, window)
    cls = batch["global"][:, None] / s
    if cfg.interaction:
        x = torch.cat([cls, person, context], dim=1)
        keep = torch.cat([torch.ones(b, 1, dtype=torch.bool), mask, torch.ones(b, context.shape[1], dtype=torch.bool)], 1)
    else:
        x, keep = torch.cat([cls, context], dim=1), None
    feats = text[None, None].expand(b, 1, -1, -1)
    for i, block in enumerate(net.blocks):
        x, attn = ref_block(block, x, keep)
        if i in net.prompted:
            visual = net.projector[str(i)](x)
            c, e = visual.shape[1:]
            layer = net.prompts[str(i)]
            if cfg.interest_tokens is None:
                feats = ref_prompt_layer(layer, feats[:, 0], visual, keep)[:, None]
            else:
                k = max(1, round(cfg.interest_tokens * (c - 1 - p)))
                top = attn[:, 1:1 + p].topk(k, dim=-1).indices
                chosen = torch.gather(visual[:, None].expand(b, p, c, e), 2, top[..., None].expand(b, p, k, e))
                t = feats.expand(b, p, -1, -1).reshape(b * p, -1, e)
                feats = ref_prompt_layer(layer, t, chosen.reshape(b * p, k, e)).reshape(b, p, -1, e)
    out = x[:, 1:1 + p] if cfg.interaction else person
    y = F.normalize(out, dim=-1)
    if cfg.add_global:
        y = y + F.normalize(batch["global"], dim=-1)[:, None]
    return torch.einsum("bpe,bpke->bpk", F.normalize(y, dim=-1),
                        F.normalize(feats, dim=-1).expand(b, p, -1, -1)) / cfg.temperature


# every Table 4 value with a code path of its own, and the generic path of frozen maps that are not trivial
EQUIVALENCE = [{}, {"prompting": "none"}, {"prompting": "last"}, {"interest_tokens": 0.39},
               {"interest_tokens": 0.39, "prompting": "last"}, {"interest_tokens": 1.0}, {"person_token": "patch"},
               {"person_token": "encoder"},
               {"person_token": "adapter_fc"}, {"temporal": "none"}, {"temporal": "avg"}, {"temporal": "mhsa2"},
               {"lora_rank": 0}, {"interaction": False}, {"add_global": False}, {"frozen": "perturbed"},
               {"frozen": "perturbed", "lora_rank": 0, "person_token": "encoder", "interest_tokens": 0.39}]


def test_forward_and_gradients_equal_the_literal_forward(bench):
    """Logits (with and without grad), loss and the gradient of every trainable tensor of the model equal the
    literal forward's at a generic point of the parameters, on 7 frames with 1-4 persons (padded slots) and on
    4 frames with 2 persons each (none padded)."""
    train = small(bench, 8)
    data = stclip.frame_set(train.gt, train.features, train.resolution, 4, train.classes)
    text = F.normalize(torch.randn(len(train.classes), 64, generator=torch.Generator().manual_seed(1)), dim=-1)
    rng = np.random.default_rng(0)
    batches = [stclip.gather(data, rng.choice(len(data), len(counts), replace=False),
                             [rng.choice(len(data.weights), n, replace=False) for n in counts])
               for counts in ((1, 3, 2, 4, 1, 3, 2), (2, 2, 2, 2))]
    assert not batches[0]["mask"].all() and batches[1]["mask"].all()
    for case in EQUIVALENCE:
        cfg = make_config("stclip", {k: v for k, v in case.items() if k != "frozen"})
        seed_everything(0)
        net = STClipNet(cfg, 64, 64, float(data.tokens.pow(2).mean().sqrt()))
        with torch.no_grad():  # a generic point: LoRA's B and every trained part away from their init
            for param in net.parameters():
                if param.requires_grad or case.get("frozen"):
                    param.add_(0.05 * torch.randn(param.shape))
        names, trainable = zip(*((n, q) for n, q in net.named_parameters() if q.requires_grad))
        for batch in batches:
            mask, results = batch["mask"], []
            for forward in (net, lambda b, t: ref_forward(net, b, t)):
                logits = forward(batch, text)
                loss = stclip.focal_loss(logits, batch["targets"], mask, 2.0)
                grads = torch.autograd.grad(loss, trainable, allow_unused=True)
                with torch.no_grad():
                    results.append((logits[mask], loss, grads, forward(batch, text)[mask]))
            (new, new_loss, new_grads, new_eval), (ref, ref_loss, ref_grads, ref_eval) = results
            where = f"{case}, {'padded' if not mask.all() else 'no padding'}"
            torch.testing.assert_close(new, ref, atol=1e-5, rtol=1e-5, msg=lambda m: f"{where}: logits: {m}")
            torch.testing.assert_close(new_eval, ref_eval, atol=1e-5, rtol=1e-5, msg=lambda m: f"{where}: no grad: {m}")
            torch.testing.assert_close(new_loss, ref_loss, atol=1e-6, rtol=1e-6)
            for name, a, r in zip(names, new_grads, ref_grads):
                a = torch.zeros_like(r) if a is None else a
                torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-4, msg=lambda m: f"{where}: d loss / d {name}: {m}")


# recorded from the original code (commit 1267f5c) on this file's generated benchmark, text embeddings cached; the
# init checksum is RNG draws only, the curve and scores also read the generated data (a regenerated benchmark
# needs new figures)
ORIGINAL = {"init_checksum": 159379.134342549,
            "curve": [[4, 0.80637], [8, 1.54598], [12, 2.59085], [16, 3.17288], [20, 1.64148], [24, 1.69433]],
            "scores": [0.4553494155406952, 0.0017387063708156347, 0.029024280607700348, 0.04307609051465988,
                       0.007781933061778545, 0.004215514753013849, 0.05625671520829201, 0.012085037305951118,
                       0.18913769721984863, 0.07028596103191376, 0.026758519932627678, 0.0014769857516512275]}


def test_seeded_training_keeps_the_original_trajectory(bench):
    """The same initial draws (the same modules built in the same order) and, for a short seeded run under the
    plateau rule, the original's held-out curve and predicted scores up to float round-off."""
    seed_everything(0)
    net = STClipNet(make_config("stclip"), 64, 64, 1.0)
    with torch.no_grad():
        checksum = float(sum((i + 1) * p.double().sum() for i, p in enumerate(net.parameters())))
    assert checksum == pytest.approx(ORIGINAL["init_checksum"], rel=1e-12)
    # text embeddings first: computing them (not cached yet) builds the text tower, which draws from the global
    # RNG between fit's seeding and the model's init, and the run would start elsewhere
    STClip(make_config("stclip"), bench["context"]).class_text(bench["train"].classes)
    method = fitted(bench, small(bench, 6), **{**PLATEAU, "epochs": 2})
    record = method.context.ledger.training["stclip"]
    assert record["steps"] == ORIGINAL["curve"][-1][0]
    np.testing.assert_allclose(np.array(record["curve"]), np.array(ORIGINAL["curve"]), atol=5e-5, rtol=0)
    scores = method.predict(bench["detected"]).score[::37][:12]
    np.testing.assert_allclose(scores, ORIGINAL["scores"], atol=1e-5, rtol=0)
