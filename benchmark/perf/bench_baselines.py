"""Throughput of the two-stage baselines: BMN (its BM layer, training, proposals), B-I and EffPrompt.

    python -m benchmark.perf.bench_baselines [--train 750] [--test 250] [--classes 75] [--threads 1]

Measures, as CPU time of this process (robust to other jobs on the machine) with wall time and the
load average alongside:
- the BM layer (+ its N×1×1 convolution), forward and forward+backward per video, for the default
  config and the paper's (T = 100; 64-d synthetic-profile features and 512-d ActivityNet CLIP ones);
- BMN training in videos/s (default config) on 64-d and 512-d features;
- one fit + predict of B-I *including* BMN training and proposal generation (the first job of a
  split pays it; later jobs load the cached model and proposals), then one of EffPrompt on the cached BMN.
The dataset is random with a planted class signal (``bench_b2.random_views``), default-profile sized.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from benchmark.harness.registry import MethodContext, get_method
from benchmark.perf.bench_b2 import random_views, size_arguments
from benchmark.text.tiny import make_tiny_clip
from methods.bmn import BMN, PAPER_BMN, BMNConfig, instance_table, train_bmn


def cpu_seconds(fn, repeat: int = 5) -> float:
    """The fastest of ``repeat`` calls after a warm-up: the least disturbed by other processes."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def bench_bm_layer(cfg: BMNConfig, name: str, batch: int, T: int = 100) -> str:
    bm = BMN(64, T, cfg).boundary_matching
    f = torch.randn(batch, cfg.hidden_2d, T, requires_grad=True)
    both = cpu_seconds(lambda: bm(f).sum().backward())
    with torch.no_grad():
        forward = cpu_seconds(lambda: bm(f))
    return (f"BM layer, {name} (C={cfg.hidden_2d}->{cfg.hidden_3d}, N={cfg.num_samples}, D=T={T}, batch {batch}): "
            f"forward+backward {1000 * both / batch:.2f} ms/video, forward {1000 * forward / batch:.2f} ms/video")


def bench_training(train, cfg: BMNConfig) -> str:
    start = time.process_time()
    train_bmn(train.features, instance_table(train.videos, train.T), cfg, 0, torch.device("cpu"), log=lambda _: None)
    seconds = time.process_time() - start
    return (f"BMN training, {train.features.shape[-1]}-d features, {len(train.videos)} videos x {cfg.epochs} epochs: "
            f"{seconds:.2f} s CPU, {cfg.epochs * len(train.videos) / seconds:.0f} videos/s")


def bench_method(name: str, train, test, context: MethodContext) -> str:
    method = get_method(name)
    model = method(method.Config(), context)
    c0, w0 = time.process_time(), time.perf_counter()
    model.fit(train)
    c1 = time.process_time()
    detections = model.predict(test)
    c2, w2 = time.process_time(), time.perf_counter()
    return (f"{name}: fit {c1 - c0:.2f} s, predict {c2 - c1:.2f} s ({len(test.videos) / (c2 - c1):.0f} videos/s), "
            f"fit+predict {c2 - c0:.2f} s CPU ({w2 - w0:.2f} s wall); {sum(map(len, detections.values()))} detections")


def main() -> None:
    parser = size_arguments(__doc__.splitlines()[0])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{args.threads} thread(s), load average {os.getloadavg()[0]:.1f} at start")
    print(bench_bm_layer(BMNConfig(), "default", batch=16))
    print(bench_bm_layer(PAPER_BMN, "paper", batch=2))

    unseen = max(1, args.classes // 3)
    train, test = random_views(args.train, args.test, args.classes, unseen)
    train_512, _ = random_views(args.train, 1, args.classes, unseen, D=512)
    print(bench_training(train, BMNConfig()))
    print(bench_training(train_512, BMNConfig()))

    with tempfile.TemporaryDirectory() as tmp:
        context = MethodContext(text_encoder=make_tiny_clip(Path(tmp) / "clip"), cache_dir=Path(tmp) / "cache",
                                log=lambda _: None)
        print(bench_method("b1_bmn_clip", train, test, context) + "  [includes BMN training and proposals]")
        print(bench_method("effprompt", train, test, context) + "  [BMN model and proposals from the cache]")
        print(bench_method("b1_bmn_clip", train, test, context) + "  [BMN model and proposals from the cache]")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
