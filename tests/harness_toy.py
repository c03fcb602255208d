"""A trivial method, job runner and suite for the harness tests (not a real method: lives here, not in methods/).

``Toy`` either trains a tiny linear torch model on seeded random data (``torch: true``; the
determinism test needs numbers that come out of a real training loop) or draws its "metric" from
a seeded RNG (the default: no torch import, so scheduling tests stay fast). ``behaviour`` makes a
job misbehave on purpose: raise, exit hard, or hang.
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmark.harness.registry import Method, MethodContext, get_method, make_config, register_method


@register_method("toy")
class Toy(Method):
    @dataclass(frozen=True)
    class Config:
        behaviour: str = "ok"  # ok | raise | exit | hang
        torch: bool = False
        hidden: int = 8
        lr: float = 0.1
        steps: int = 20
        sleep_s: float = 0.0

    def fit(self, train_view) -> None:
        cfg = self.config
        if cfg.behaviour == "raise":
            raise RuntimeError("toy failure on purpose")
        if cfg.behaviour == "exit":
            os._exit(3)
        if cfg.behaviour == "hang":
            time.sleep(3600)
        time.sleep(cfg.sleep_s)
        if not cfg.torch:
            self.rng = random.Random(self.context.seed * 1000 + train_view)
            return
        import torch

        x, y = _tensors(train_view)
        self.model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], cfg.hidden), torch.nn.ReLU(),
                                         torch.nn.Linear(cfg.hidden, 2))
        for _ in range(cfg.steps):  # plain SGD: p <- p - lr * grad
            self.model.zero_grad()
            torch.nn.functional.cross_entropy(self.model(x), y).backward()
            with torch.no_grad():
                for p in self.model.parameters():
                    p -= cfg.lr * p.grad

    def predict(self, test_view):
        if not self.config.torch:
            scores = [self.rng.random() for _ in range(8)]
        else:
            import torch

            with torch.no_grad():
                scores = self.model(_tensors(test_view)[0]).softmax(-1)[:, 1].tolist()
        return {f"v{i}": [{"segment": [0.0, 1.0], "label": "toy", "score": s}] for i, s in enumerate(scores)}

    def proposals(self, test_view):
        return {}


def _tensors(seed: int, n: int = 64):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + 0.5 * torch.randn(n, generator=g) > 0).long()
    return x, y


def run_job(spec: dict, job_dir: Path) -> dict:
    """The test runner: a view is just a seed derived from the split index."""
    t0 = time.time()
    config = make_config(spec["method"], spec["config"])
    model = get_method(spec["method"])(config, MethodContext(device=spec["runtime"]["device"], seed=spec["seed"],
                                                            job_dir=job_dir))
    split = spec["split"]["index"]
    model.fit(1000 + split)
    predictions = model.predict(2000 + split)
    scores = [v[0]["score"] for v in predictions.values()]
    score = sum(scores) / len(scores)
    print("toy job done", split)
    return {
        "metrics": {"mAP@0.5": score, "mAP_avg": score / 2},
        "per_class": {"toy": {"0.5": score}},
        "predictions": predictions,
        "extra": {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(),
                  "threads": os.environ.get("OMP_NUM_THREADS"), "t_start": t0, "t_end": time.time()},
        "timings": {"train": 0.0, "predict": 0.0, "eval": 0.0},
    }


def prepare_data(suite, profile, args) -> dict:
    return {"prepared": profile}


RUNNER = "harness_toy:run_job"
PREPARE = "harness_toy:prepare_data"


def write_suite(path: Path, variants: dict | None = None, rows: list | None = None, indices=(0, 1, 2),
                settings=("75/25",), timeout_s: float = 30, **extra) -> Path:
    """A one-table toy suite; ``rows`` default to one row per variant."""
    variants = variants or {}
    rows = rows or [{"label": "Toy", "method": "toy"}] + [
        {"label": name, "method": "toy", "variant": name} for name in variants]
    doc = {
        "name": "toy",
        "description": "harness test suite",
        "dataset": "toyset",
        "data": {"source": "synthetic", "synthetic": {"profile": "smoke", "seed": 0}},
        "splits": {"settings": list(settings), "indices": list(indices)},
        "run": {"timeout_s": timeout_s},
        "report": {"metric_scale": 100, "digits": 2},
        "methods": {"toy": {"variants": variants}},
        "tables": {"t1": {"title": "Toy table", "metrics": ["mAP@0.5", "mAP_avg"], "rows": rows}},
        "profiles": {"default": {}, "smoke": {"splits": {"indices": [0]}}},
        **extra,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
