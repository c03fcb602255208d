"""BMN (methods/bmn.py): the BM layer against a direct loop, hand-computed targets, the real configs
on random features, overfitting, determinism, the convergence rule's record and the shared cache."""
from __future__ import annotations

import math
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data.annotations import Instance, Video
from benchmark.evaluation.proposals import evaluate_proposals
from benchmark.evaluation.segments import SegmentTable
from benchmark.harness.registry import ConfigError, MethodContext
from methods.bmn import (BMN, PAPER_BMN, BMNConfig, BoundaryMatching, binary_logistic, bmn_loss, bmn_proposals,
                         bmn_targets, check_bmn_config, fit_bmn, instance_table)
from methods.modules.convergence import Convergence, holdout_split

torch.set_num_threads(1)
# a fixed schedule (rule epochs): the tests below count epochs; test_plateau_rule_* covers the default rule
TINY = BMNConfig(hidden_1d=16, hidden_2d=8, hidden_3d=8, num_samples=4, epochs=40, decay_epochs=5, batch_size=8,
                 lr=4e-3, convergence=Convergence(rule="epochs"))


def direct_bm(f: np.ndarray, K: np.ndarray, b: np.ndarray, D: int, N: int, per_bin: int, ratio: float) -> np.ndarray:
    """BM layer + conv_N by the paper's definition, one proposal at a time. f [C, T] -> [O, D, T]."""
    C, T = f.shape
    out = np.tile(b[:, None, None], (1, D, T)).astype(np.float64)
    for d in range(D):
        for t in range(T - d):
            length = d + 1
            lo, hi = t - ratio * length, t + d + ratio * length
            points = [lo + (hi - lo) * k / (N * per_bin - 1) for k in range(N * per_bin)]
            S = np.zeros((C, N))
            for k, p in enumerate(points):
                floor = math.floor(p)
                for tau, w in ((floor, 1 - (p - floor)), (floor + 1, p - floor)):
                    if 0 <= tau < T:
                        S[:, k // per_bin] += w * f[:, tau] / per_bin
            out[:, d, t] += np.einsum("ocn,cn->o", K, S)
    return out


def test_boundary_matching_equals_direct_loop():
    torch.manual_seed(0)
    T, D, N, per_bin, ratio = 9, 6, 3, 2, 0.5
    bm = BoundaryMatching(4, 5, T, D, N, per_bin, ratio)
    f = torch.randn(2, 4, T)
    got = bm(f).detach().numpy()
    assert got.shape == (2, 5, D, T)
    for i in range(2):
        want = direct_bm(f[i].numpy(), bm.weight.detach().numpy(), bm.bias.detach().numpy(), D, N, per_bin, ratio)
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5)


def test_boundary_matching_gradient_is_the_transpose():
    bm = BoundaryMatching(3, 2, 7, 7, 3, 3, 0.5).double()
    f = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: bm(x), (f,))


def test_targets_hand_computed():
    T = 10
    out = bmn_targets(torch.tensor([[[2.0, 5.0], [-1e4, -1e4]]]), T, T)  # one instance, one padding row
    # start region [0.5, 3.5]: anchors [l - 1/2, l + 1/2] for l = 1, 2, 3 lie inside it
    np.testing.assert_allclose(out["start"][0].numpy(), [0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(out["end"][0].numpy(), [0, 0, 0, 0, 1, 1, 1, 0, 0, 0])
    g = out["confidence"][0]
    assert g[2, 2] == pytest.approx(1.0)  # proposal [2, 5)
    assert g[0, 2] == pytest.approx(1 / 3)  # [2, 3)
    assert g[4, 1] == pytest.approx(3 / 5)  # [1, 6)
    assert g[9, 1] == 0 and g[9, 0] == pytest.approx(0.3)  # [1, 11) runs past the end: invalid; [0, 10)


@pytest.mark.parametrize("cfg, in_dim, batch", [(BMNConfig(), 64, 3), (BMNConfig(), 512, 2),
                                                (BMNConfig(max_duration=40), 64, 2), (PAPER_BMN, 512, 1)],
                         ids=["default", "default-512d", "durations<=40", "paper"])
def test_real_configs_shapes_and_finite_loss(cfg, in_dim, batch):
    torch.manual_seed(0)
    T = 100
    D = cfg.max_duration or T
    model = BMN(in_dim, T, cfg)
    out = model(torch.randn(batch, T, in_dim))
    assert out["start"].shape == out["end"].shape == (batch, T)
    assert out["regression"].shape == out["classification"].shape == (batch, D, T)
    gt = torch.tensor([[[10.0, 40.0], [60.0, 100.0]]]).expand(batch, -1, -1)
    losses = bmn_loss(out, bmn_targets(gt, T, D), cfg.reg_weight)
    assert all(torch.isfinite(v) for v in losses.values())
    if cfg is not PAPER_BMN:  # the paper-sized backward is slow on CPU; the default one runs the same code
        losses["loss"].backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bad_config_values_give_one_line_errors():
    for bad in (dict(hidden_1d=30), dict(num_samples=0), dict(decay_epochs=-1), dict(peak_fraction=0.0)):
        with pytest.raises(ConfigError) as err:
            check_bmn_config(replace(BMNConfig(), **bad))
        assert "\n" not in str(err.value)


def toy_videos(n: int, T: int, dim: int, seed: int) -> tuple[list[Video], np.ndarray]:
    """Videos of T seconds with 1-2 instances whose snippets carry a shared 'action' direction."""
    rng = np.random.default_rng(seed)
    action = rng.standard_normal(dim)
    videos, features = [], np.zeros((n, T, dim), np.float32)
    for i in range(n):
        starts = sorted(rng.choice(np.arange(1, T - 4, 7), size=rng.integers(1, 3), replace=False))
        instances = []
        for s in starts:
            e = min(s + int(rng.integers(3, 7)), T)
            instances.append(Instance(float(s), float(e), "a"))
            features[i, s:e] += action
        features[i] += 0.3 * rng.standard_normal((T, dim))
        videos.append(Video(f"toy{seed}-{i}", "training", float(T), None, tuple(instances)))
    return videos, features


class ToyView:
    """The fields of a TrainView / TestView that BMN reads."""

    def __init__(self, videos, features, classes=("a",)):
        self.videos, self.features, self.classes, self.T = videos, features, classes, features.shape[1]


def gt_table(videos) -> SegmentTable:
    return SegmentTable.from_rows(((v.id, i.start, i.end, "") for v in videos for i in v.instances), with_score=False)


def context(cache_dir=None, log=lambda line: None, seed=0) -> MethodContext:
    return MethodContext(seed=seed, cache_dir=cache_dir, log=log)


def test_overfits_its_training_videos():
    videos, features = toy_videos(24, 32, 8, seed=1)
    bmn = fit_bmn(ToyView(videos, features), TINY, context())
    result = evaluate_proposals(gt_table(videos), bmn_proposals(bmn, ToyView(videos, features)))
    assert result.ar_at[100] > 0.85, result.ar_at
    assert result.ar_at[10] > 0.7, result.ar_at


def test_untrained_is_worse():
    """Guards the overfitting test: the AR above comes from training, not from the candidates alone."""
    videos, features = toy_videos(24, 32, 8, seed=1)
    bmn = fit_bmn(ToyView(videos, features), replace(TINY, epochs=1, decay_epochs=0, lr=1e-6), context())
    result = evaluate_proposals(gt_table(videos), bmn_proposals(bmn, ToyView(videos, features)))
    assert result.ar_at[10] < 0.6, result.ar_at


def test_training_is_deterministic_and_proposals_bounded():
    videos, features = toy_videos(12, 32, 8, seed=2)
    cfg = replace(TINY, epochs=3, decay_epochs=1, max_proposals=20)
    tables = [bmn_proposals(fit_bmn(ToyView(videos, features), cfg, context()), ToyView(videos, features))
              for _ in range(2)]
    np.testing.assert_array_equal(tables[0].t0, tables[1].t0)
    np.testing.assert_array_equal(tables[0].score, tables[1].score)
    counts = np.unique(tables[0].video, return_counts=True)[1]
    assert counts.max() <= 20 and np.all(tables[0].t1 > tables[0].t0) and np.all(tables[0].label == "")
    assert np.all((tables[0].t0 >= 0) & (tables[0].t1 <= 32))


def test_decay_beyond_the_schedule_decays_every_epoch(tmp_path: Path):
    """A suite-wide ``epochs`` below the paper's decay_epochs: every epoch decays, one model for both configs."""
    view = ToyView(*toy_videos(8, 16, 8, seed=3))
    short, beyond = replace(TINY, epochs=1, decay_epochs=1), replace(TINY, epochs=1, decay_epochs=5)
    tables = [bmn_proposals(fit_bmn(view, cfg, context()), view) for cfg in (short, beyond)]
    np.testing.assert_array_equal(tables[0].score, tables[1].score)
    lines = []
    for cfg in (short, beyond):
        fit_bmn(view, cfg, context(tmp_path, lines.append))
    assert sum("loaded" in line for line in lines) == 1


def test_cache_trains_once_per_training_set(tmp_path: Path):
    videos, features = toy_videos(8, 16, 8, seed=3)
    cfg = replace(TINY, epochs=2, decay_epochs=0)
    lines = []
    log = lines.append
    threads = [threading.Thread(target=fit_bmn, args=(ToyView(videos, features), cfg, context(tmp_path, log)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(line.startswith("bmn: epoch 1 ") for line in lines) == 1  # trained once, the other job waited and loaded
    assert sum("loaded" in line for line in lines) == 1

    first = bmn_proposals(fit_bmn(ToyView(videos, features), cfg, context(tmp_path, log)), ToyView(videos, features))
    again = bmn_proposals(fit_bmn(ToyView(videos, features), cfg, context(tmp_path, log)), ToyView(videos, features))
    np.testing.assert_array_equal(first.score, again.score)
    assert len(list(tmp_path.glob("bmn/*/proposals-*.npz"))) == 1

    other = features.copy()
    other[0, 0, 0] += 1  # different training data (or classes, or seed) -> another model
    fit_bmn(ToyView(videos, other), cfg, context(tmp_path, log))
    fit_bmn(ToyView(videos, features, classes=("b",)), cfg, context(tmp_path, log))
    fit_bmn(ToyView(videos, features), cfg, context(tmp_path, log, seed=1))
    assert len(list(tmp_path.glob("bmn/*/model.pt"))) == 4


def test_plateau_rule_holds_out_training_videos_and_records_the_run(tmp_path: Path):
    """Default rule: 10% of the training videos held out, never trained on; the run's record reaches
    the job's ledger whether the model was trained here or loaded from the cache."""
    n = 20
    view = ToyView(*toy_videos(n, 16, 8, seed=4))
    cfg = replace(TINY, epochs=60, convergence=Convergence())
    fitted, held = holdout_split(n, cfg.convergence, seed=0)
    assert len(held) == 2 and not set(fitted) & set(held) and len(fitted) + len(held) == n
    records = []
    for _ in range(2):  # built, then loaded
        ctx = context(tmp_path)
        fit_bmn(view, cfg, ctx)
        records.append(ctx.ledger.training["bmn"])
    record = records[0]
    assert records[1] == record
    assert record["rule"] == "plateau" and record["fitted_videos"] == n - len(held)
    assert record["epochs"] == round(record["steps"] / math.ceil((n - len(held)) / cfg.batch_size), 2)
    assert record["stopped"] == "plateau" and record["epochs"] < cfg.epochs
    assert record["best_step"] <= record["steps"] and len(record["curve"]) == record["epochs"]
    ctx = context()  # no cache: recorded too
    fit_bmn(view, replace(cfg, epochs=1), ctx)
    assert (ctx.ledger.training["bmn"]["steps"], ctx.ledger.training["bmn"]["stopped"]) == (3, "cap")


def test_instance_table_in_snippet_units():
    v = Video("v", "training", 50.0, None, (Instance(5.0, 25.0, "a"), Instance(40.0, 60.0, "b")))
    table = instance_table([v, Video("w", "training", 10.0, None, (Instance(0.0, 10.0, "a"),))], T=100)
    np.testing.assert_allclose(table[0], [[10, 50], [80, 100]])  # clipped to the video
    np.testing.assert_allclose(table[1, 0], [0, 100])
    assert table[1, 1, 0] < -1000  # padding



def test_binary_logistic_weighs_both_sides_equally():
    logits = torch.zeros(2, 10)
    positive = torch.zeros(2, 10, dtype=torch.bool)
    positive[0, 0] = True  # 1 positive vs 19 negatives: each side still weighs one half
    assert float(binary_logistic(logits, positive)) == pytest.approx(math.log(2))
    logits[0, 0] = 100.0  # the positive is now right: only the negatives' half is left
    assert float(binary_logistic(logits, positive)) == pytest.approx(0.5 * math.log(2), rel=1e-5)
    valid = torch.ones(2, 10, dtype=torch.bool)
    valid[1] = False  # entries outside the mask do not count
    logits[1] = -50.0
    assert float(binary_logistic(logits, positive, valid)) == pytest.approx(0.5 * math.log(2), rel=1e-5)
