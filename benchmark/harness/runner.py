"""What one job does: data view -> method fit/predict -> evaluation and analyses.

``prepare_data`` runs once per suite run, before any job: it generates (once, cached) the embedded
synthetic benchmark, or validates real data, and returns the facts every job needs (paths, the
text encoder). ``run_job`` runs in the job's own process (see ``benchmark.harness.scheduler``).

Every job records, besides the headline mAP, the analyses its detections and its method allow
(``score_detections``, which scores prediction files too, and ``method_analyses``):
- ``gt_localisation``: ground-truth segments classified by the method (oracle localisation);
- ``gt_labels``: the method's own segments relabelled with the ground truth (oracle classification);
- ``noise@L``: ground-truth segments jittered to tIoU L, classified by the method (localisation
  noise curve);
- ``AR@N`` / ``AUC``: the method's class-agnostic proposals on the test videos;
- ``best_epoch_on_test/`` (protocol ``best_epoch_on_test``, methods that report their epochs): the model of
  every epoch scored on the test split and the best one kept: SELECTED ON TEST (:class:`EpochsOnTest`).
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch  # imported here on purpose: the scheduler seeds torch when the runner has loaded it

from benchmark.data.box_features import BoxFeatureStore
from benchmark.data.features import ScannedFeatures, scan_features
from benchmark.data.zero_shot import Dataset, closed_set_views, scored_videos, training_videos, zero_shot_views
from benchmark.errors import InputError
from benchmark.evaluation.detection import evaluate_detection, parse_tiou
from benchmark.evaluation.diagnostics import NOISE_LEVELS, jitter_to_tiou
from benchmark.evaluation.proposals import evaluate_proposals
from benchmark.evaluation.segments import SegmentTable
from benchmark.harness import stad
from benchmark.harness.compute import Ledger
from benchmark.harness.registry import MethodContext, apply_hparams, config_dict, get_method, make_config
from benchmark.harness.scoring import (CACHE, class_scores_for, class_split, data_facts, external_scores_for, job_notes, map_metrics, open_dataset,
                                       score_detections, split_facts)
from benchmark.harness.suite import plan
from benchmark.text.clip import TextEncoderConfig, class_embeddings
from methods.label_fusion import external_video_scores

# ---------------------------------------------------------------------------------------------
# Once per run
# ---------------------------------------------------------------------------------------------

def prepare_data(suite, profile: str, args) -> dict:
    """The data half of a run's checks, before any job (``--dry-run`` too); returns the facts every
    job gets as ``spec["runtime"]["data"]``. Each failed check is one :class:`InputError` line:

    - the annotations parse; every split resolves against them (published lists: names, disjoint);
    - every video a planned job reads has features;
    - the text tower loads and encodes the class names;
    - the features are usable: one pass over the files (:func:`scan_features`: finite, [T_raw >= 1,
      D], one D) names every bad file and leaves the checked features in the run's cache, where the
      jobs take their rows from; every planned method can use features of that D with that tower
      (``Method.check_features``).
    """
    if suite.task == "stad":
        return prepare_stad(suite)
    facts = data_facts(suite)
    dataset = open_dataset(facts)
    jobs = plan(suite)
    videos = needed_videos(dataset, jobs)
    missing = sorted(v for v in videos if v not in dataset.features)
    if missing:
        raise InputError(f"{facts['features']}: {len(missing)} videos of the suite's splits have no features, "
                         f"e.g. {', '.join(missing[:5])}")
    text = class_embeddings(TextEncoderConfig(**facts["text_encoder"]), dataset.annotations.classes, CACHE / "text")
    scan = scan_features(dataset.features, videos, dataset.T, facts["feature_cache"])
    facts["feature_scan"] = str(scan)
    feature_dim, problems = ScannedFeatures(scan).shape[-1], {}
    for spec in {job.spec_hash: job.spec for job in jobs}.values():
        name = spec["method"]
        config = apply_hparams(name, make_config(name, spec["config"], spec.get("variant", "default")),
                               spec.get("hparams", {}), spec["dataset"])
        try:
            get_method(name).check_features(config, feature_dim, text.shape[1])
        except InputError as e:
            problems.setdefault(str(e), None)
        if spec["protocol"].get("best_epoch_on_test") and not get_method(name).reports_epochs:
            problems.setdefault(f"{name}: protocol best_epoch_on_test needs a method that reports its epochs "
                                f"(Method.reports_epochs)", None)
    if problems:
        raise InputError(" | ".join(problems))
    ensure_external_scores(dataset, facts)
    return facts


def prepare_stad(suite) -> dict:
    """The box-level task's checks before any job: the data open, every split resolves, every video a job
    reads has features (one line naming the missing files), the text tower encodes the class names."""
    facts = stad.data_facts(suite)
    needed: dict[str, set[str]] = {}
    for spec in {job.spec_hash: job.spec for job in plan(suite)}.values():
        for folder, videos in stad.needed_videos(spec, facts).items():
            needed.setdefault(folder, set()).update(videos)
    for folder, videos in needed.items():
        missing = BoxFeatureStore(folder).missing(videos)
        if missing:
            raise InputError(f"{folder}: {len(missing)} videos of the suite's splits have no feature file, e.g. "
                             f"{BoxFeatureStore(folder).path(missing[0])}")
    labels = [label for side in stad.sides(facts) for label in stad.open_data(side)[0].labels]
    class_embeddings(TextEncoderConfig(**facts["text_encoder"]), labels, CACHE / "text")
    return facts


def needed_videos(dataset: Dataset, jobs) -> list[str]:
    """Every video a job of ``jobs`` reads, train and test side (each split resolved once)."""
    videos, seen = set(), set()
    for job in jobs:
        spec, protocol = job.spec, job.spec["protocol"]
        key = json.dumps([spec["setting"], spec["split"], protocol], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        split = class_split(dataset, spec)
        train, test = ((dataset.annotations.classes,) * 2 if split is None else (split.seen, split.unseen))
        last_only = bool(protocol.get("last_annotation_only"))
        videos |= {v.id for v in training_videos(dataset, train, protocol.get("unseen_in_training", "remove"), last_only,
                                                 protocol.get("double_labels", "keep"))}
        videos |= {v.id for v in scored_videos(dataset, test, bool(protocol.get("score_all_test_videos")), last_only,
                                               protocol.get("test_subsets", "test"))}
    return sorted(videos)


def ensure_external_scores(dataset: Dataset, facts: dict) -> None:
    """The external classifier's scores for the label-fusion shortcuts (its top-1 for the relabelling, every
    class's for the top-class filter): the real files when given, or (synthetic data) a supervised all-class
    video classifier trained here — the leak, on purpose."""
    if facts["source"] != "synthetic":
        return
    missing = [facts.get(key) if facts.get(key) and not Path(facts[key]).exists() else None
               for key in ("external_scores", "class_scores")]
    if any(missing):
        external_video_scores(dataset, *missing)


# ---------------------------------------------------------------------------------------------
# One job
# ---------------------------------------------------------------------------------------------

def build_method(spec: dict, job_dir: Path):
    """(the job's method, its effective config, the ledger its costs go to): variant and profile
    hyper-parameters applied, the run's text encoder and cache in its context. Shared by both tasks."""
    name, variant = spec["method"], spec.get("variant", "default")
    config = apply_hparams(name, make_config(name, spec["config"], variant), spec.get("hparams", {}), spec["dataset"])
    ledger = Ledger()
    context = MethodContext(
        device=spec["runtime"].get("device", "cpu"), seed=spec["seed"],
        text_encoder=TextEncoderConfig(**spec["runtime"]["data"]["text_encoder"]), cache_dir=CACHE / "methods",
        job_dir=job_dir, log=lambda line: print(line, flush=True), ledger=ledger,
    )
    return get_method(name)(config, context), config, ledger


def run_job(spec: dict, job_dir: Path) -> dict:
    if spec.get("task") == "stad":
        return stad.run_job(spec, job_dir)
    data = spec["runtime"]["data"]
    protocol = spec["protocol"]
    dataset = open_dataset(data)
    split = class_split(dataset, spec)
    last_only = bool(protocol.get("last_annotation_only"))
    if split is None:
        train, test = closed_set_views(dataset, last_only=last_only)
    else:
        train, test = zero_shot_views(dataset, split, protocol.get("unseen_in_training", "remove"), last_only,
                                      bool(protocol.get("score_all_test_videos")), protocol.get("double_labels", "keep"),
                                      protocol.get("test_subsets", "test"))
    method, config, ledger = build_method(spec, job_dir)
    probe = EpochsOnTest(method, test, parse_tiou(protocol.get("tiou", "0.5:0.95:10"))) \
        if protocol.get("best_epoch_on_test") else None
    with ledger.phase("train"):
        method.fit(train)
    with ledger.phase("predict"):
        detections = method.predict(test)
    timings = {phase: cost.wall_s for phase, cost in ledger.phases.items()}

    start = time.perf_counter()
    scored = score_detections(test, SegmentTable.from_detections(detections), protocol,
                              external_scores_for(data, dataset, test), class_scores=class_scores_for(data, test))
    metrics = scored["metrics"] | method_analyses(method, test, scored["tiou"], seed=spec["seed"])
    timings["eval"] = time.perf_counter() - start
    if probe is not None:
        metrics |= probe.best()
    return {
        "metrics": metrics,
        "per_class": scored["per_class"],
        # as evaluated: with the protocol's label fusion applied, when it is on
        "predictions": detections if scored["predictions"] is None else scored["predictions"].to_detections(),
        "timings": timings,
        "extra": {"notes": job_notes(data, test) + scored["notes"], "synthetic": dataset.synthetic,
                  "split": split_facts(split, test), "train_videos": len(train.videos),
                  "test_videos": len(test.videos), "eval_meta": scored["eval_meta"],
                  "config": config_dict(config),  # the effective config: variant and profile hparams applied
                  "compute": ledger.record(),  # wall/CPU seconds and optimizer steps, shared artifacts charged
                  "diagnostics": scored["diagnostics"]} | ({} if probe is None else probe.record()),
    }


class EpochsOnTest:
    """Pitfall 3 as Ti-FAD's released training loop has it: the model of every epoch scored on the test split
    (the unseen classes), the best epoch reported. Handed to the method as ``context.epoch_end`` (it only observes:
    training and the job's own, clean metrics are the same with it). ``best()``: the metrics of the epoch with the
    best average mAP under ``best_epoch_on_test/`` (SELECTED ON TEST, never a clean number) and that epoch's number."""

    PREFIX = "best_epoch_on_test/"

    def __init__(self, method, test, tiou):
        if not method.reports_epochs:
            raise InputError(f"{method.name}: protocol best_epoch_on_test needs a method that reports its epochs "
                             f"(Method.reports_epochs)")
        self.method, self.test, self.tiou, self.curve, self.seconds = method, test, tiou, [], 0.0
        method.context = replace(method.context, epoch_end=self)

    def __call__(self, epoch: int) -> None:
        start = time.perf_counter()
        detections = SegmentTable.from_detections(self.method.predict(self.test))
        self.curve.append((epoch, map_metrics(evaluate_detection(self.test.gt, detections, self.tiou), self.PREFIX)))
        self.seconds += time.perf_counter() - start

    def best(self) -> dict[str, float]:
        if not self.curve:
            return {}
        epoch, metrics = max(self.curve, key=lambda c: c[1][f"{self.PREFIX}mAP_avg"])  # the first of equals
        return metrics | {f"{self.PREFIX}epoch": float(epoch)}

    def record(self) -> dict:
        """The job record's extra: every epoch's test mAP and what scoring them cost (inside the training time)."""
        return {"test_curve": [[e, m[f"{self.PREFIX}mAP_avg"]] for e, m in self.curve],
                "test_curve_seconds": round(self.seconds, 2)}


def method_analyses(method, test, tiou, seed: int) -> dict[str, float]:
    """The analyses a method's hooks allow: its classifier on GT segments (oracle localisation) and on
    jittered ones (the localisation-noise curve), its own oracles, and proposal recall."""
    gt = test.gt
    metrics: dict[str, float] = {}
    hooks = method.capabilities()
    if "classify_segments" in hooks:
        rng = np.random.default_rng(seed)
        durations = {v.id: v.duration for v in test.videos}
        for level in NOISE_LEVELS:
            segments = gt if level == 1.0 else jitter_to_tiou(gt, level, rng, durations)
            classified = method.classify_segments(test, segments.segments_by_video())
            prefix = "gt_localisation/" if level == 1.0 else f"noise@{level:g}/"
            metrics |= map_metrics(evaluate_detection(gt, SegmentTable.from_detections(classified), tiou), prefix)
    if "oracle_detections" in hooks:
        for name, oracle in method.oracle_detections(test).items():
            metrics |= map_metrics(evaluate_detection(gt, SegmentTable.from_detections(oracle), tiou), f"{name}/")
    if "proposals" in hooks:
        proposals = evaluate_proposals(gt, SegmentTable.from_detections(method.proposals(test)), tiou)
        # AUC as a fraction like every other metric (the official script prints it x100)
        metrics |= {f"AR@{n}": float(ar) for n, ar in proposals.ar_at.items()} | {"AUC": float(proposals.auc) / 100}
    return metrics
