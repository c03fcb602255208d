"""STALE's localisation on the development benchmark: ``python -m benchmark.perf.stale_dev``.

The development benchmark is the synthetic ``default`` profile with seed 1 (the suites use seed 0);
defaults are chosen here, never on a suite's seed or on unseen classes. For each config, setting
(``--setting``, 75/25 by default) and class split it trains STALE on the training view minus a
held-out 15% of its videos (seen classes only; ``--jobs`` runs in parallel) and prints, per split and
as means:

- instance separation on the held-out seen-class videos: the mean mask a snippet predicts on its own
  instance vs on the video's other instances, and the mean IoU of the mask thresholded at 0.5 with
  its instance's ground truth (rows of action snippets);
- test (unseen classes) average mAP over tIoU 0.5:0.95 with every inference in ``--inference``, with
  ground-truth action masks in place of M, and the GT-localisation readout;
- optimizer steps, epochs, why training stopped, and training CPU seconds;
- with ``--sweep key=v1|v2``: the test mAP of each inference setting on the same trained models.

Configs are named overrides of StaleConfig (``--config "name=key:json;key:json"``); ``before`` is the
implementation the audit measured, as far as the current code can express it (mixture head, L_m
balanced over all entries, every run of every mask, a fixed 4-epoch budget (~120 steps); the old OneCycle schedule
is gone: warm-up then a constant learning rate).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmark.data.annotations import load_annotations
from benchmark.data.features import open_feature_store
from benchmark.data.splits import generate_splits, setting_ratio
from benchmark.data.synthetic import ensure_synthetic, load_manifest
from benchmark.data.targets import snippet_targets
from benchmark.data.zero_shot import Dataset, TrainView, zero_shot_views
from benchmark.evaluation.detection import evaluate_detection
from benchmark.evaluation.segments import SegmentTable
from benchmark.harness.registry import MethodContext, make_config
from benchmark.text.clip import TextEncoderConfig

DEV_ROOT = Path(__file__).resolve().parents[2] / ".cache" / "test_development"
CONFIGS = {
    "before": {"mask_head": "mixture", "mask_hidden": 4, "mask_balance": "global", "inference": "all_runs",
               "convergence": {"rule": "epochs", "warmup_steps": 40}, "epochs": 4},
    "old head, converged": {"mask_head": "mixture", "mask_hidden": 4, "mask_balance": "global"},
    "after": {},
}


def development_views(split: int, ratio: float = 0.75):
    root = ensure_synthetic(DEV_ROOT, "default", seed=1)
    annotations = load_annotations(root / "annotations.json")
    dataset = Dataset("synthetic", annotations, open_feature_store(root / "features"), 100, "training", "validation",
                      synthetic=True)
    chosen = generate_splits("synthetic", annotations.classes, ratio, n=split + 1, seed=0)[split]
    train, test = zero_shot_views(dataset, chosen)
    return train, test, TextEncoderConfig(**load_manifest(root)["text_encoder"])


def hold_out(train: TrainView, fraction: float, seed: int = 0) -> tuple[TrainView, TrainView]:
    """(fitted, held-out) training views: a seeded fraction of the videos, seen classes only."""
    order = np.random.default_rng(seed).permutation(len(train.videos))
    held = np.sort(order[:round(fraction * len(order))])
    fitted = np.sort(order[round(fraction * len(order)):])

    def view(index):
        videos = [train.videos[i] for i in index]
        targets = snippet_targets(videos, {c: k for k, c in enumerate(train.classes)}, train.T)
        return TrainView(videos, train.features[index], targets, train.classes, train.T)

    return view(fitted), view(held)


@torch.no_grad()
def separation(method, view: TrainView) -> dict:
    """Own- vs other-instance mask means and thresholded-mask IoU over the action snippets of ``view``."""
    model = method.model.eval()
    masks = torch.sigmoid(model(torch.as_tensor(view.features), model.text()).mask_logits).numpy()
    target = view.targets.masks.astype(bool)
    own, other, iou = [], [], []
    for n in range(len(view.videos)):
        fg = view.targets.fg[n] > 0.5
        for t in np.flatnonzero(fg):
            mine = target[n, t]
            others = fg & ~mine
            own.append(masks[n, t][mine].mean())
            if others.any():
                other.append(masks[n, t][others].mean())
            pred = masks[n, t] > 0.5
            iou.append((pred & mine).sum() / max((pred | mine).sum(), 1))
    return {"own": float(np.mean(own)), "other": float(np.mean(other)), "iou": float(np.mean(iou))}


def run(config_name: str, overrides: dict, split: int, inferences: list[str], sweep: dict | None = None,
        setting: str = "75/25", threads: int = 1) -> dict:
    from methods.stale import Stale

    torch.set_num_threads(threads)
    train, test, text = development_views(split, setting_ratio(setting))
    fitted, held = hold_out(train, 0.15)
    config = make_config("stale", overrides)
    context = MethodContext(seed=0, text_encoder=text, log=lambda line: None)
    method = Stale(config, context)
    cpu = time.process_time()
    method.fit(fitted)
    result = {"config": config_name, "split": split, "train_cpu_s": round(time.process_time() - cpu, 1),
              "setting": setting}
    result |= {k: context.ledger.training["stale"][k] for k in ("steps", "epochs", "stopped")}
    result |= separation(method, held)

    def avg_map(detections) -> float:
        return 100 * evaluate_detection(test.gt, SegmentTable.from_detections(detections)).average

    for inference in inferences:
        method.config = replace(config, inference=inference)
        result[f"mAP {inference}"] = avg_map(method.predict(test))
    for key, values in (sweep or {}).items():  # inference settings on the same trained model
        for value in values:
            method.config = replace(config, **{key: tuple(value) if isinstance(value, list) else value})
            result[f"mAP {key}={value}"] = avg_map(method.predict(test))
    method.config = config
    result["mAP GT action masks"] = avg_map(method.oracle_detections(test)["gt_action_masks"])
    result["mAP GT localisation"] = avg_map(method.classify_segments(test, test.gt.segments_by_video()))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="name or name=key:json;key:json (default: before, old head converged, after)")
    parser.add_argument("--splits", default="0,1,2,3")
    parser.add_argument("--setting", action="append", choices=["75/25", "50/50"], help="default: 75/25")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    parser.add_argument("--inference", default="all_runs,seed_run")
    parser.add_argument("--sweep", action="append", default=[],
                        help="an inference setting tried on each trained model: key=json|json|... (e.g. top_snippets=5|10|20)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    configs = {}
    for item in args.config or list(CONFIGS):
        name, _, spec = item.partition("=")
        configs[name] = dict(CONFIGS.get(name, {}))
        for pair in filter(None, spec.split(";")):
            key, _, value = pair.partition(":")
            configs[name][key] = json.loads(value)
    sweep = {key: [json.loads(v) for v in values.split("|")]
             for key, _, values in (item.partition("=") for item in args.sweep)}
    from joblib import Parallel, delayed
    import pandas as pd

    runs = [(name, overrides, split, setting) for setting in args.setting or ["75/25"]
            for name, overrides in configs.items() for split in map(int, args.splits.split(","))]
    rows = []
    for row in Parallel(n_jobs=args.jobs, return_as="generator")(
            delayed(run)(name, overrides, split, args.inference.split(","), sweep, setting, args.threads)
            for name, overrides, split, setting in runs):
        rows.append(row)
        print(json.dumps(row, default=float), flush=True)
    table = (pd.DataFrame(rows).drop(columns=["split", "stopped"])
             .groupby(["setting", "config"], sort=False).mean())
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
