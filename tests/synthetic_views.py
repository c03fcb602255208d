"""Test helpers for methods on the generated synthetic benchmark: its zero-shot views, and the checks
every method's detections must pass."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmark.data.annotations import load_annotations
from benchmark.data.features import open_feature_store
from benchmark.data.splits import generate_splits
from benchmark.data.zero_shot import Dataset, zero_shot_views
from benchmark.text.clip import TextEncoderConfig


def synthetic_views(root: Path, ratio: float = 0.75, split: int = 0, cache_dir: Path | None = None) -> SimpleNamespace:
    """The benchmark ``ensure_synthetic`` wrote at ``root``: its dataset, class split ``split`` of the
    seed-0 generated splits, the zero-shot train/test views and the text-encoder config."""
    annotations = load_annotations(root / "annotations.json")
    dataset = Dataset("synthetic", annotations, open_feature_store(root / "features"), 100, "training", "validation",
                      cache_dir=cache_dir, synthetic=True)
    chosen = generate_splits("synthetic", annotations.classes, ratio, n=split + 1, seed=0)[split]
    train, test = zero_shot_views(dataset, chosen)
    text = TextEncoderConfig(**json.loads((root / "synthetic.json").read_text())["text_encoder"])
    return SimpleNamespace(dataset=dataset, split=chosen, train=train, test=test, text=text)


def check_detections(detections: dict, view, max_per_video: int = 100) -> None:
    """One entry per video of ``view``; at most ``max_per_video`` detections, inside the video, with
    a class of the view and a finite score."""
    durations = {v.id: v.duration for v in view.videos}
    assert set(detections) == set(durations)
    for vid, dets in detections.items():
        assert len(dets) <= max_per_video
        for d in dets:
            s, e = d["segment"]
            assert 0 <= s <= e <= durations[vid] + 1e-9
            assert d["label"] in view.classes and np.isfinite(d["score"])
