"""Throughput of B-II (``b2_denseclip``) on a default-profile-sized random dataset, one CPU thread.

    python -m benchmark.perf.bench_b2 [--train 750] [--test 250] [--classes 75] [--threads 1]

Prints the time of one fit + predict (the unit the suite budget counts: about 3-4 s per job on one
core for the default synthetic profile) and the training / inference throughput in videos per
second, as CPU time of this process (robust to other jobs sharing the machine) and wall time, with
the load average. The features are random with a planted class signal; the text encoder is the
tiny CLIP.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.data.annotations import Instance, Video
from benchmark.data.targets import snippet_targets
from benchmark.data.zero_shot import TestView, TrainView
from benchmark.evaluation.segments import SegmentTable
from benchmark.harness.registry import MethodContext, get_method
from benchmark.text.tiny import make_tiny_clip


def random_views(n_train: int, n_test: int, seen: int, unseen: int, T: int = 100, D: int = 64, seed: int = 0,
                 signature: np.ndarray | None = None, strength: float = 2.0, noise: float = 1.0):
    """A TrainView and a TestView of random features: one instance a video, over whose snippets
    ``strength · signature[k]`` of its class k is added to Gaussian noise (random signatures unless
    given, e.g. the classes' text embeddings), so that there is something to learn."""
    rng = np.random.default_rng(seed)
    names = [f"class {i}" for i in range(seen + unseen)]
    if signature is None:
        signature = rng.standard_normal((seen + unseen, D))
    signature = np.asarray(signature, dtype=np.float32)

    def view(n: int, classes: list[int], subset: str):
        videos, features = [], noise * rng.standard_normal((n, T, D)).astype(np.float32)
        for i in range(n):
            k = classes[i % len(classes)]
            lo = int(rng.integers(0, T // 2))
            hi = int(rng.integers(lo + 5, T + 1))
            duration = float(rng.uniform(30, 200))
            features[i, lo:hi] += strength * signature[k]
            videos.append(Video(f"{subset}{i:05d}", subset, duration, None,
                                (Instance(lo * duration / T, hi * duration / T, names[k]),)))
        return videos, features

    seen_names = tuple(names[:seen])
    train_videos, train_x = view(n_train, list(range(seen)), "training")
    test_videos, test_x = view(n_test, list(range(seen, seen + unseen)), "validation")
    targets = snippet_targets(train_videos, {c: k for k, c in enumerate(seen_names)}, T)
    gt = SegmentTable.from_rows(((v.id, i.start, i.end, i.label) for v in test_videos for i in v.instances), with_score=False)
    return (TrainView(train_videos, train_x, targets, seen_names, T),
            TestView(test_videos, test_x, tuple(names[seen:]), gt, T))


def size_arguments(description: str) -> argparse.ArgumentParser:
    """The default-profile-sized random dataset's flags, shared by the method benchmark scripts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--train", type=int, default=750)
    parser.add_argument("--test", type=int, default=250)
    parser.add_argument("--classes", type=int, default=75, help="seen classes (unseen = a third of it)")
    parser.add_argument("--threads", type=int, default=1)
    return parser


def main() -> None:
    parser = size_arguments(__doc__.splitlines()[0])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = random_views(args.train, args.test, args.classes, max(1, args.classes // 3))
    with tempfile.TemporaryDirectory() as tmp:
        text = make_tiny_clip(Path(tmp) / "clip")
        method = get_method("b2_denseclip")
        model = method(method.Config(), MethodContext(text_encoder=text, log=lambda _: None))
        c0, w0 = time.process_time(), time.perf_counter()
        model.fit(train)
        c1 = time.process_time()
        detections = model.predict(test)
        c2, w2 = time.process_time(), time.perf_counter()
    epochs = model.config.epochs
    print(f"b2_denseclip, {len(train.videos)} training / {len(test.videos)} test videos, {args.threads} thread(s), "
          f"CPU time: fit {c1 - c0:.2f} s ({epochs} epochs, {epochs * len(train.videos) / (c1 - c0):.0f} videos/s), "
          f"predict {c2 - c1:.2f} s ({len(test.videos) / (c2 - c1):.0f} videos/s), fit+predict {c2 - c0:.2f} s; "
          f"wall {w2 - w0:.2f} s at load average {os.getloadavg()[0]:.1f}; "
          f"{sum(map(len, detections.values()))} detections")


if __name__ == "__main__":
    main()
