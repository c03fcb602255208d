"""Compute next to accuracy: phases measured, optimizer steps counted, shared artifacts charged once
to every job that uses them, whether it built them or found them cached."""
from dataclasses import replace

import pytest
import torch

from benchmark.harness.compute import Cost, Ledger, measure
from benchmark.harness.registry import MethodContext
from methods.bmn import bmn_proposals, fit_bmn
from methods.modules.convergence import Convergence
from test_bmn import TINY, ToyView, toy_videos


def test_steps_of_any_optimizer_are_counted_and_cpu_time_measured():
    w = torch.nn.Parameter(torch.zeros(3))
    sgd, adam = torch.optim.SGD([w], lr=0.1), torch.optim.Adam([w], lr=0.1)
    with measure() as cost:
        for opt in (sgd, sgd, adam):
            (w - 1).pow(2).sum().backward()
            opt.step()
            opt.zero_grad()
        sum(i * i for i in range(200_000))  # some CPU work
    assert cost.steps == 3
    assert cost.cpu_s > 0 and cost.wall_s > 0
    with measure() as idle:
        pass
    assert idle.steps == 0


def test_shared_artifact_is_charged_in_full_whether_built_or_loaded(tmp_path):
    view = ToyView(*toy_videos(8, 16, 8, seed=3))
    cfg = replace(TINY, epochs=2, decay_epochs=0, convergence=Convergence(rule="epochs"))  # a fixed step count
    totals = []
    for _ in range(2):  # the first job builds the BMN, the second loads it from the cache
        ledger = Ledger()
        context = MethodContext(cache_dir=tmp_path, ledger=ledger)
        with ledger.phase("train"):
            bmn = fit_bmn(view, cfg, context)
        with ledger.phase("predict"):
            bmn_proposals(bmn, view, ledger)
        totals.append(ledger.record())
    built, loaded = totals
    assert built["shared"]["bmn"]["built_here"] and not loaded["shared"]["bmn"]["built_here"]
    steps = built["phases"]["train"]["steps"]
    assert steps == 2 * 1  # 2 epochs of one batch (8 videos, batch 16)
    assert loaded["phases"]["train"]["steps"] == 0  # loading takes no step ...
    assert loaded["total"]["train"]["steps"] == built["total"]["train"]["steps"] == steps  # ... but is charged them
    assert loaded["total"]["train"]["cpu_s"] >= built["shared"]["bmn"]["cpu_s"]
    assert loaded["training"]["bmn"] == built["training"]["bmn"]  # how it was trained, recorded in both jobs
    assert built["training"]["bmn"]["steps"] == steps and built["training"]["bmn"]["stopped"] == "epochs"
    assert loaded["shared"]["bmn_proposals"]["phase"] == "predict"
    assert loaded["total"]["predict"]["cpu_s"] >= built["shared"]["bmn_proposals"]["cpu_s"]


def test_an_artifact_is_charged_once_in_the_phase_that_first_used_it():
    ledger = Ledger()
    with ledger.phase("predict"):
        ledger.charge("x", Cost(1.0, 2.0, 3), built_here=False)
    ledger.charge("x", Cost(1.0, 2.0, 3), built_here=False)  # used again by an analysis: no second charge
    assert ledger.total("predict").steps == ledger.phases["predict"].steps + 3
    assert ledger.total("predict").cpu_s == pytest.approx(ledger.phases["predict"].cpu_s + 2.0)
