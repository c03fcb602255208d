"""What one job does: data view -> method fit/predict -> evaluation and analyses.

``prepare_data`` runs once per suite run, before any job: it generates (once, cached) the embedded
synthetic benchmark, or validates real data, and returns the facts every job needs (paths, the
text encoder). ``run_job`` runs in the job's own process (see ``benchmark.harness.scheduler``).

Every job records, besides the headline mAP, the analyses its method allows:
- ``gt_localisation``: ground-truth segments classified by the method (oracle localisation);
- ``gt_labels``: the method's own segments relabelled with the ground truth (oracle classification);
- ``noise@L``: ground-truth segments jittered to tIoU L, classified by the method (localisation
  noise curve);
- ``AR@N`` / ``AUC``: the method's class-agnostic proposals on the test videos.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch  # imported here on purpose: the scheduler seeds torch when the runner has loaded it

from benchmark.data.annotations import load_annotations
from benchmark.data.features import ScannedFeatures, open_feature_store, scan_features
from benchmark.data.splits import REPO_SPLITS, SplitError, generate_splits, import_split_lists, load_splits, setting_ratio
from benchmark.data.synthetic import ensure_synthetic, load_manifest
from benchmark.data.zero_shot import Dataset, closed_set_views, scored_videos, training_videos, zero_shot_views
from benchmark.errors import InputError
from benchmark.evaluation.detection import evaluate_detection, parse_tiou, tiou_key
from benchmark.evaluation.diagnostics import (NOISE_LEVELS, false_positive_profile, jitter_to_tiou, oracle_labels,
                                               sensitivity)
from benchmark.evaluation.proposals import evaluate_proposals
from benchmark.evaluation.segments import SegmentTable
from benchmark.harness.compute import Ledger
from benchmark.harness.registry import MethodContext, apply_hparams, config_dict, get_method, make_config
from benchmark.harness.store import NO_DETECTIONS
from benchmark.harness.suite import plan
from benchmark.text.clip import TextEncoderConfig, class_embeddings
from methods.label_fusion import NOT_ZERO_SHOT, external_video_scores, fuse_labels, read_external_scores

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"

# Protocol facts per dataset (DESIGN.md §1-2). Subsets: the first name the annotations have (G-TAD's
# thumos_gt.json calls THUMOS14's Validation videos "train"); real files: the names looked for under --data-root.
DATASETS = {
    "activitynet": {"name": "ActivityNet", "T": 100, "train": ["training"], "test": ["validation"],
                    "files": {"annotations": "activity_net.v1-3.min.json", "external_scores": "stale_best_score.json"}},
    "thumos14": {"name": "THUMOS14", "T": 256, "train": ["Validation", "train"], "test": ["Test", "test"],
                 "files": {"annotations": "thumos14.json", "external_scores": "uNet_test.npy"}},
}


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
    data = suite.data
    if suite.dataset not in DATASETS:
        raise InputError(f"{suite.path}: dataset {suite.dataset!r} is not one of {', '.join(DATASETS)}")
    facts = {k: v for k, v in DATASETS[suite.dataset].items() if k != "files"}
    if data["source"] == "synthetic":
        root = ensure_synthetic(CACHE / "synthetic", **data["synthetic"])
        manifest = load_manifest(root)
        facts |= {"source": "synthetic", "name": "synthetic", "annotations": str(root / "annotations.json"),
                  "features": str(root / "features"), "text_encoder": manifest["text_encoder"],
                  "external_scores": str(root / "external_video_scores.json")}
    else:
        facts |= _real_paths(data["real"], DATASETS[suite.dataset]["files"]) | {"source": "real"}
    facts["feature_cache"] = str(CACHE / "features")
    facts |= _assumed_durations(facts, data.get("real", {}).get("feature_fps") if data["source"] == "real" else None)
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
    if problems:
        raise InputError(" | ".join(problems))
    _ensure_external_scores(dataset, facts)
    return facts


def _real_paths(real: dict, files: dict) -> dict:
    root = Path(real["root"]) if real.get("root") else None
    annotations = Path(real.get("annotations") or root / files["annotations"])
    features = Path(real.get("features") or root / "features")
    scores = real.get("external_scores") or (root / files["external_scores"] if root else None)
    named = [("external scores", Path(real["external_scores"]))] if real.get("external_scores") else []
    for what, path in [("annotations", annotations), ("features", features)] + named:
        if not path.exists():
            raise InputError(f"real data: {what} not found at {path} (see README, 'Running on real data')")
    return {"annotations": str(annotations), "features": str(features),
            "external_scores": str(scores) if scores else None,
            "text_encoder": real.get("text_encoder", {"model": "ViT-B-16", "pretrained": "openai"})}


def _assumed_durations(facts: dict, feature_fps: float | None) -> dict:
    """Durations for annotation files that give none (G-TAD's thumos_gt.json): T_raw / ``feature_fps``,
    the features' rows per second (``data.real.feature_fps``), read once here; the records say so."""
    annotations = load_annotations(facts["annotations"])
    without = sorted(v.id for v in annotations.videos.values() if v.duration is None)
    if not without:
        return {}
    if not feature_fps or feature_fps <= 0:
        raise InputError(f"{facts['annotations']}: {len(without)} videos have no duration (e.g. {without[0]}); give the "
                         f"features' rows per second (--feature-fps) to take each duration as T_raw / fps")
    store = open_feature_store(facts["features"])
    missing = [vid for vid in without if vid not in store]
    if missing:
        raise InputError(f"{facts['features']}: {len(missing)} videos of {facts['annotations']} have no features (their "
                         f"durations come from the features), e.g. {', '.join(missing[:5])}")
    durations = {vid: store.read(vid).shape[0] / feature_fps for vid in without}
    return {"durations": durations,
            "assumed": f"durations assumed: T_raw / {feature_fps:g} feature rows per second ({facts['annotations']} "
                       f"gives none; {len(durations)} videos)"}


def open_dataset(facts: dict) -> Dataset:
    annotations = load_annotations(facts["annotations"])
    if facts.get("durations"):
        videos = {vid: replace(v, duration=facts["durations"].get(vid, v.duration)) for vid, v in annotations.videos.items()}
        annotations = replace(annotations, videos=videos)
    subsets = {s.lower(): s for s in annotations.subsets()}
    train, test = (next((subsets[n.lower()] for n in facts[side] if n.lower() in subsets), facts[side][0])
                   for side in ("train", "test"))
    scan = ScannedFeatures(facts["feature_scan"]) if facts.get("feature_scan") else None
    return Dataset(facts["name"], annotations, open_feature_store(facts["features"]), facts["T"],
                   train, test, cache_dir=Path(facts["feature_cache"]),
                   synthetic=facts["source"] == "synthetic", scan=scan)


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
        videos |= {v.id for v in scored_videos(dataset, test, bool(protocol.get("score_all_test_videos")), last_only)}
    return sorted(videos)


def _ensure_external_scores(dataset: Dataset, facts: dict) -> None:
    """The external classifier's scores for the label-fusion shortcut: the real file when given, or
    (synthetic data) a supervised all-class video classifier trained here — the leak, on purpose."""
    path = facts.get("external_scores")
    if path and Path(path).exists() or facts["source"] != "synthetic":
        return
    external_video_scores(dataset, path)


# ---------------------------------------------------------------------------------------------
# One job
# ---------------------------------------------------------------------------------------------

def class_split(dataset: Dataset, spec: dict):
    """The job's seen/unseen split (None for the closed-set setting)."""
    if spec["setting"] == "closed":
        return None
    ratio, split = setting_ratio(spec["setting"]), spec["split"]
    classes = dataset.annotations.classes
    if split["lists"] == "imported":
        if not split.get("lists_dir"):
            raise InputError("split lists 'imported' needs --split-lists DIR (the published lists)")
        splits = import_split_lists(split["lists_dir"], dataset.name, classes, ratio)
    else:
        try:  # the committed files, when they were made for this class list
            splits = load_splits(REPO_SPLITS, dataset.name, "generated", ratio, classes)
        except SplitError:
            splits = generate_splits(dataset.name, classes, ratio, n=split["index"] + 1, seed=split["seed"])
    if split["index"] >= len(splits):
        raise InputError(f"split index {split['index']} but only {len(splits)} splits for {dataset.name} {spec['setting']}")
    return splits[split["index"]]


def run_job(spec: dict, job_dir: Path) -> dict:
    data = spec["runtime"]["data"]
    protocol = spec["protocol"]
    dataset = open_dataset(data)
    split = class_split(dataset, spec)
    last_only = bool(protocol.get("last_annotation_only"))
    if split is None:
        train, test = closed_set_views(dataset, last_only=last_only)
    else:
        train, test = zero_shot_views(dataset, split, protocol.get("unseen_in_training", "remove"), last_only,
                                      bool(protocol.get("score_all_test_videos")), protocol.get("double_labels", "keep"))
    name, variant = spec["method"], spec.get("variant", "default")
    config = apply_hparams(name, make_config(name, spec["config"], variant), spec.get("hparams", {}), spec["dataset"])
    ledger = Ledger()
    context = MethodContext(
        device=spec["runtime"].get("device", "cpu"), seed=spec["seed"],
        text_encoder=TextEncoderConfig(**data["text_encoder"]), cache_dir=CACHE / "methods", job_dir=job_dir,
        log=lambda line: print(line, flush=True), ledger=ledger,
    )
    method = get_method(name)(config, context)

    with ledger.phase("train"):
        method.fit(train)
    with ledger.phase("predict"):
        detections = method.predict(test)
    timings = {phase: cost.wall_s for phase, cost in ledger.phases.items()}

    notes = list(test.notes) + ([data["assumed"]] if data.get("assumed") else [])
    if not any(detections.values()):
        notes.append(NO_DETECTIONS)
    external = _external_scores(data, dataset, test)
    if protocol.get("external_classifier", "none") != "none":
        if external is None:
            raise InputError("protocol external_classifier is on but no external classifier scores exist")
        detections = fuse_labels(detections, external)
        notes.append(NOT_ZERO_SHOT)

    start = time.perf_counter()
    tiou = parse_tiou(protocol.get("tiou", "0.5:0.95:10"))
    result = evaluate_detection(test.gt, SegmentTable.from_detections(detections), tiou)
    metrics = _map_metrics(result)
    metrics |= analyses(method, test, detections, tiou, seed=spec["seed"])
    if external is not None and protocol.get("external_classifier", "none") == "none":
        # the published shortcut on the same detections, recorded apart ("fused/", NOT zero-shot)
        fused = fuse_labels(detections, external)
        metrics |= _map_metrics(evaluate_detection(test.gt, SegmentTable.from_detections(fused), tiou), "fused/")
    diagnostics = detad_summary(test, detections, tiou)
    timings["eval"] = time.perf_counter() - start
    return {
        "metrics": metrics,
        "per_class": {name: float(ap.mean()) for name, ap in result.per_class.items()},
        "predictions": detections,
        "timings": timings,
        "extra": {"notes": notes, "synthetic": dataset.synthetic, "split": None if split is None else {
                      "seen": len(split.seen), "unseen": len(split.unseen), "source": split.source,
                      "leaks": list(test.notes)},  # the double-label pairs the split separates
                  "train_videos": len(train.videos), "test_videos": len(test.videos), "eval_meta": result.meta,
                  "config": config_dict(config),  # the effective config: variant and profile hparams applied
                  "compute": ledger.record(),  # wall/CPU seconds and optimizer steps, shared artifacts charged
                  "diagnostics": diagnostics},
    }


def _external_scores(data: dict, dataset: Dataset, test) -> dict | None:
    path = data.get("external_scores")
    if not (path and Path(path).exists()):
        return None
    return read_external_scores(path, dataset.annotations.classes, [v.id for v in test.videos])


def _map_metrics(result, prefix: str = "") -> dict[str, float]:
    metrics = {f"{prefix}mAP@{tiou_key(t)}": float(m) for t, m in zip(result.tiou, result.map)}
    metrics[f"{prefix}mAP_avg"] = result.average
    # the "average" some public code reports: over {0.5, 0.75, 0.95} only (DESIGN.md §1, pitfall 6)
    three = [metrics.get(f"{prefix}mAP@{t}") for t in ("0.5", "0.75", "0.95")]
    if None not in three:
        metrics[f"{prefix}mAP_avg3"] = float(np.mean(three))
    return metrics


def detad_summary(test, detections, tiou) -> dict:
    """DETAD's false-positive profile and sensitivity of this job's detections, kept in the record so
    that the report can pool them over splits."""
    pred = SegmentTable.from_detections(detections)
    profile = false_positive_profile(test.gt, pred, tiou)
    sens = sensitivity(test.gt, pred, tiou, {v.id: v.duration for v in test.videos})
    return {"tiou": [float(t) for t in tiou], "fp_fractions": profile.fractions.to_dict(),
            "fp_gain": profile.gain, "map_n": [float(m) for m in profile.map_n], "n_norm": profile.n_norm,
            "sensitivity": sens.table.to_dict("records"), "sensitivity_map_n": sens.average_map_n}


def analyses(method, test, detections, tiou, seed: int) -> dict[str, float]:
    """Oracle localisation / classification, the method's own oracles, the localisation-noise curve and
    proposal recall."""
    gt = test.gt
    metrics = _map_metrics(evaluate_detection(gt, oracle_labels(SegmentTable.from_detections(detections), gt), tiou),
                           "gt_labels/")
    hooks = method.capabilities()
    if "classify_segments" in hooks:
        rng = np.random.default_rng(seed)
        durations = {v.id: v.duration for v in test.videos}
        for level in NOISE_LEVELS:
            segments = gt if level == 1.0 else jitter_to_tiou(gt, level, rng, durations)
            classified = method.classify_segments(test, segments.segments_by_video())
            prefix = "gt_localisation/" if level == 1.0 else f"noise@{level:g}/"
            metrics |= _map_metrics(evaluate_detection(gt, SegmentTable.from_detections(classified), tiou), prefix)
    if "oracle_detections" in hooks:
        for name, oracle in method.oracle_detections(test).items():
            metrics |= _map_metrics(evaluate_detection(gt, SegmentTable.from_detections(oracle), tiou), f"{name}/")
    if "proposals" in hooks:
        proposals = evaluate_proposals(gt, SegmentTable.from_detections(method.proposals(test)), tiou)
        # AUC as a fraction like every other metric (the official script prints it x100)
        metrics |= {f"AR@{n}": float(ar) for n, ar in proposals.ar_at.items()} | {"AUC": float(proposals.auc) / 100}
    return metrics
