"""The shared convergence rule (methods/modules/convergence.py): plateau, lr decay, cap, best weights
restored, the fixed schedule of the paper recipes, and held-out videos that are seen-class training
videos only."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.data.synthetic import ensure_synthetic
from benchmark.harness.registry import MethodContext, get_method, make_config
from methods import stale
from methods.modules import convergence
from methods.modules.convergence import Convergence
from synthetic_views import synthetic_views


def scripted(losses, rule, epochs=10, n=8, batch_size=4, decay_epochs=0):
    """Train a one-weight model whose held-out loss follows ``losses`` (one value per evaluation);
    every step adds 1 to the weight, so the weight says how many steps the restored model had."""
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    lrs, values = [], iter(losses or [])

    def step(idx):
        lrs.append(optimizer.param_groups[0]["lr"])
        with torch.no_grad():
            model.weight += 1
        return {"loss": 0.0}

    heldout = (lambda: next(values)) if losses is not None else None
    record = convergence.train(rule, epochs, n, batch_size, step, heldout, model, optimizer,
                               torch.Generator().manual_seed(0), log=lambda line: None, decay_epochs=decay_epochs)
    return record, lrs, float(model.weight.detach())


def test_plateau_decays_the_lr_then_stops_and_restores_the_best_weights():
    # one evaluation an epoch (2 steps); patience 2: evals 4-5 do not improve -> lr / 10; 7-8 neither -> stop
    losses = [5.0, 4.0, 3.0, 3.0, 3.1, 2.5, 2.6, 2.5]
    record, lrs, weight = scripted(losses, Convergence(patience=2, lr_decays=1, min_delta=0.01, rewind=False))
    assert record["stopped"] == "plateau" and record["steps"] == 16 and record["epochs"] == 8.0
    assert record["best_step"] == 12 and record["heldout_loss"] == 2.5 and record["lr_decays"] == 1
    assert [c[0] for c in record["curve"]] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert lrs == [1.0] * 10 + [0.1] * 6  # the decay after the 5th evaluation
    assert weight == 12.0  # the weights of the best evaluation, not the last


def test_a_decay_rewinds_to_the_best_weights_and_optimizer_state():
    """A held-out loss that jumps (a diverging run) decays the lr *from the best model*: the steps
    after it are undone, not continued at a lower rate."""
    losses = [5.0, 4.0, 3.0, 9.0, 2.5, 2.6]  # eval 4 (step 8) is worse: rewind to step 6, lr / 10
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.5)
    values, momenta = iter(losses), {}

    def step(idx):
        model.weight.grad = -torch.ones_like(model.weight)
        optimizer.step()
        momenta[len(momenta) + 1] = optimizer.state_dict()["state"][0]["momentum_buffer"].clone()
        return {"loss": 0.0}

    weights_at = {}
    def heldout():
        weights_at[len(momenta)] = float(model.weight.detach())
        return next(values)

    record = convergence.train(Convergence(patience=1, lr_decays=1), 10, 8, 4, step, heldout, model, optimizer,
                               torch.Generator().manual_seed(0), log=lambda line: None)
    assert record["stopped"] == "plateau" and record["best_step"] == 10 and record["lr_decays"] == 1
    # step 9 started from step 6's weights and momentum, at lr 0.1 (SGD: buffer = 0.5 buffer + grad, w -= lr buffer)
    np.testing.assert_allclose(momenta[9], 0.5 * momenta[6] - 1)
    expected = weights_at[6] - 0.1 * float(momenta[9]) - 0.1 * float(momenta[10])
    assert weights_at[10] == pytest.approx(expected) and weights_at[10] != pytest.approx(weights_at[8])
    assert float(model.weight.detach()) == pytest.approx(weights_at[10])  # the best weights restored at the end


def test_a_loss_that_keeps_improving_runs_to_the_cap():
    record, lrs, weight = scripted([10.0 - i for i in range(10)], Convergence(), epochs=5)
    assert (record["stopped"], record["steps"], record["epochs"], weight) == ("cap", 10, 5.0, 10.0)
    assert set(lrs) == {1.0}


def test_min_delta_is_relative_and_warmup_is_linear():
    record, lrs, _ = scripted([1.0, 0.999, 0.998, 0.997], Convergence(patience=1, lr_decays=0, min_delta=0.01,
                                                                      warmup_steps=4))
    # steps 2 and 4 are in the warm-up; step 6 is the first model kept; 0.1% better at step 8 does not count
    assert record["stopped"] == "plateau" and record["steps"] == 8 and record["best_step"] == 6
    assert lrs == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_evaluations_during_the_warm_up_neither_keep_a_model_nor_count_as_a_plateau():
    """The held-out loss of a barely trained model can be below that of the first steps at the full
    learning rate; that must not stop training (suite, 50/50: 4 of 10 STALE jobs stopped at 72-138 steps
    with the weights of step 24, before this rule)."""
    losses = [3.5, 7.0, 5.7, 5.0, 4.0, 4.1, 4.2]  # evaluations at steps 2, 4, ...; warm-up: 4 steps
    record, lrs, weight = scripted(losses, Convergence(patience=1, lr_decays=1, warmup_steps=4))
    assert record["stopped"] == "plateau" and record["steps"] == 14 and record["best_step"] == 10
    assert weight == 10.0 and record["heldout_loss"] == 4.0


def test_a_cap_inside_the_warm_up_keeps_the_last_weights_and_records_no_best():
    record, _, weight = scripted([3.0, 2.0], Convergence(warmup_steps=10), epochs=2)
    assert (record["stopped"], record["steps"], weight) == ("cap", 4, 4.0)
    assert record["best_step"] is None and record["heldout_loss"] is None  # JSON-safe, not inf


def test_fixed_schedule_runs_every_epoch_and_decays_the_last_ones():
    record, lrs, _ = scripted(None, Convergence(rule="epochs"), epochs=3, decay_epochs=1)
    assert (record["stopped"], record["steps"], record["epochs"]) == ("epochs", 6, 3.0) and "curve" not in record
    assert lrs == [1.0] * 4 + [0.1] * 2


def test_holdout_split_is_seeded_disjoint_and_never_empty():
    rule = Convergence(holdout=0.1)
    fitted, held = convergence.holdout_split(95, rule, seed=3)
    assert len(held) == 10 and not set(fitted) & set(held) and sorted([*fitted, *held]) == list(range(95))
    again = convergence.holdout_split(95, rule, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((fitted, held), again))
    assert not np.array_equal(held, convergence.holdout_split(95, rule, seed=4)[1])
    assert len(convergence.holdout_split(5, rule, seed=0)[1]) == 1  # at least one video
    assert len(convergence.holdout_split(95, Convergence(rule="epochs"), seed=0)[1]) == 0


def test_held_out_videos_are_seen_class_training_videos(tmp_path, monkeypatch):
    """STALE's held-out loss reads rows of the training view's features only: videos whose remaining
    instances are all of seen classes, none of them a test video."""
    views = synthetic_views(ensure_synthetic(tmp_path / "synthetic", "smoke", seed=0))
    train, test = views.train, views.test
    seen = []
    real = stale.heldout_losses
    monkeypatch.setattr(stale, "heldout_losses", lambda cfg, model, x, *rest: seen.append(x.numpy()) or real(cfg, model, x, *rest))
    method = get_method("stale")(make_config("stale", {"epochs": 2}), MethodContext(seed=0, text_encoder=views.text,
                                                                                    log=lambda line: None))
    method.fit(train)
    assert len(seen) == 2  # once an epoch
    _, held = convergence.holdout_split(len(train.videos), method.config.convergence, 0)
    np.testing.assert_array_equal(seen[0], train.features[held])
    held_videos = [train.videos[i] for i in held]
    assert all(i.label in set(views.split.seen) for v in held_videos for i in v.instances)
    assert not {v.id for v in held_videos} & {v.id for v in test.videos}
    assert method.context.ledger.training["stale"]["fitted_videos"] == len(train.videos) - len(held)


@pytest.mark.parametrize("bad, message", [({"rule": "best"}, "rule must be one of"), ({"holdout": 0.0}, "holdout"),
                                          ({"patience": 0}, "patience must be >= 1")])
def test_bad_rules_fail_in_one_line(bad, message):
    from benchmark.harness.registry import ConfigError

    with pytest.raises(ConfigError, match=message):
        Convergence(**bad)
