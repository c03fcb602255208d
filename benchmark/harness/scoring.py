"""A job's data and the scoring of its detections, without torch: shared by the runner (our jobs) and
by ``score`` (prediction files of methods we do not run, benchmark.harness.external), so that both are
evaluated by the same code on the same split.

- :func:`data_facts` / :func:`open_dataset`: where a suite's data are, the dataset (features optional);
- :func:`class_split` / :func:`job_test_view`: a job spec's class split and test view;
- :func:`score_detections`: what a job records of its detections (mAP, the GT-labels oracle, the
  label-fusion shortcut, per-class AP, the evaluator's counts, DETAD's summaries).
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from benchmark.data.annotations import load_annotations
from benchmark.data.features import ScannedFeatures, open_feature_store
from benchmark.data.splits import REPO_SPLITS, SplitError, generate_splits, import_split_lists, load_splits, setting_ratio
from benchmark.data.zero_shot import Dataset, test_view, zero_shot_test_view
from benchmark.errors import InputError
from benchmark.evaluation.detection import evaluate_detection, parse_tiou, tiou_key
from benchmark.evaluation.diagnostics import false_positive_profile, oracle_labels, sensitivity
from benchmark.evaluation.segments import SegmentTable
from benchmark.harness.store import NO_DETECTIONS
from methods.label_fusion import NOT_ZERO_SHOT, filter_top_classes, fuse_table, read_class_scores, read_external_scores

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"

# Protocol facts per dataset (DESIGN.md §1-2). Subsets: the first name the annotations have (G-TAD's
# thumos_gt.json calls THUMOS14's Validation videos "train"); real files: the names looked for under --data-root.
DATASETS = {
    "activitynet": {"name": "ActivityNet", "T": 100, "train": ["training"], "test": ["validation"],
                    "files": {"annotations": "activity_net.v1-3.min.json", "external_scores": "stale_best_score.json",
                              "class_scores": "cuhk_val_simp_share.json"}},
    "thumos14": {"name": "THUMOS14", "T": 256, "train": ["Validation", "train"], "test": ["Test", "test"],
                 "files": {"annotations": "thumos14.json", "external_scores": "uNet_test.npy",
                           "class_scores": "uNet_test.npy"}},
}



def data_facts(suite, features: bool = True) -> dict:
    """Where the suite's data are (the embedded synthetic benchmark is generated here, once) and the
    protocol facts of its dataset. ``features=False``: real data need no features (scoring prediction
    files; :func:`open_dataset` then opens none), unless the durations come from them."""
    data = suite.data
    if suite.dataset not in DATASETS:
        raise InputError(f"{suite.path}: dataset {suite.dataset!r} is not one of {', '.join(DATASETS)}")
    facts = {k: v for k, v in DATASETS[suite.dataset].items() if k != "files"}
    if data["source"] == "synthetic":
        from benchmark.data.synthetic import ensure_synthetic, load_manifest  # the generator imports open_clip

        root = ensure_synthetic(CACHE / "synthetic", **data["synthetic"])
        manifest = load_manifest(root)
        facts |= {"source": "synthetic", "name": "synthetic", "annotations": str(root / "annotations.json"),
                  "features": str(root / "features"), "text_encoder": manifest["text_encoder"],
                  "external_scores": str(root / "external_video_scores.json"),
                  "class_scores": str(root / "external_class_scores.json")}
    else:
        facts |= _real_paths(data["real"], DATASETS[suite.dataset]["files"], features) | {"source": "real"}
    facts["feature_cache"] = str(CACHE / "features")
    if facts["source"] == "real" and features and Path(facts["features"]).exists():
        from benchmark.data.extract import describe_extraction

        facts["extraction"] = describe_extraction(facts["features"])
    facts |= _assumed_durations(facts, data.get("real", {}).get("feature_fps") if data["source"] == "real" else None)
    return facts


def _real_paths(real: dict, files: dict, features_needed: bool = True) -> dict:
    root = Path(real["root"]) if real.get("root") else None
    annotations = Path(real.get("annotations") or root / files["annotations"])
    if features_needed and not (real.get("features") or root):
        raise InputError("real data: no features (--features, or --data-root with a features/ folder)")
    features = Path(real.get("features") or (root / "features" if root else "."))
    scores = real.get("external_scores") or (root / files["external_scores"] if root else None)
    class_scores = real.get("class_scores") or (root / files["class_scores"] if root else None)
    named = [("external scores", Path(real["external_scores"]))] if real.get("external_scores") else []
    for what, path in [("annotations", annotations)] + [("features", features)] * features_needed + named:
        if not path.exists():
            raise InputError(f"real data: {what} not found at {path} (see README, 'Running on real data')")
    return {"annotations": str(annotations), "features": str(features),
            "external_scores": str(scores) if scores else None, "class_scores": str(class_scores) if class_scores else None,
            "text_encoder": real.get("text_encoder", {"model": "ViT-B-16", "pretrained": "openai"})}


def _assumed_durations(facts: dict, feature_fps: float | None) -> dict:
    """Durations for annotation files that give none (G-TAD's thumos_gt.json): T_raw / ``feature_fps``,
    the features' rows per second (``data.real.feature_fps``), read once here; the records say so."""
    annotations = read_annotations(facts["annotations"])
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


def read_annotations(path: str):
    """The annotation file, parsed once per process (a run checks durations, then opens the dataset)."""
    p = Path(path)
    return _parsed_annotations(str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else load_annotations(p)


@lru_cache(maxsize=4)
def _parsed_annotations(path: str, _mtime: int, _size: int):
    return load_annotations(path)


def open_dataset(facts: dict, features: bool = True) -> Dataset:
    """The dataset of :func:`data_facts`; without its features when ``features`` is False."""
    annotations = read_annotations(facts["annotations"])
    if facts.get("durations"):
        videos = {vid: replace(v, duration=facts["durations"].get(vid, v.duration)) for vid, v in annotations.videos.items()}
        annotations = replace(annotations, videos=videos)
    subsets = {s.lower(): s for s in annotations.subsets()}
    train, test = (next((subsets[n.lower()] for n in facts[side] if n.lower() in subsets), facts[side][0])
                   for side in ("train", "test"))
    scan = ScannedFeatures(facts["feature_scan"]) if facts.get("feature_scan") else None
    return Dataset(facts["name"], annotations, open_feature_store(facts["features"]) if features else None, facts["T"],
                   train, test, cache_dir=Path(facts["feature_cache"]),
                   synthetic=facts["source"] == "synthetic", scan=scan)



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


def job_test_view(dataset: Dataset, spec: dict):
    """(split, test view) of a job spec: what its detections, or a prediction file for it, are scored on."""
    protocol = spec["protocol"]
    split, last_only = class_split(dataset, spec), bool(protocol.get("last_annotation_only"))
    if split is None:
        return None, test_view(dataset, dataset.annotations.classes, last_only=last_only)
    return split, zero_shot_test_view(dataset, split, bool(protocol.get("score_all_test_videos")), last_only,
                                      protocol.get("test_subsets", "test"))



def job_notes(data: dict, test) -> list[str]:
    """The protocol warnings of a job's test view, and how its data were read (assumed durations, the
    features' extraction record)."""
    return list(test.notes) + [data[k] for k in ("assumed", "extraction") if data.get(k)]


def split_facts(split, test) -> dict | None:
    return None if split is None else {"seen": len(split.seen), "unseen": len(split.unseen), "source": split.source,
                                       "leaks": list(test.notes)}  # the double-label pairs the split separates


def score_detections(test, pred: SegmentTable, protocol: dict, external: dict | None, diagnostics: bool = True,
                     class_scores: dict | None = None) -> dict:
    """What a job records of its detections ``pred`` on its test view, the same for our methods (run_job)
    and for prediction files (benchmark.harness.external): the mAP per threshold (after the protocol's label
    fusion, when it is on), the GT-labels oracle, the label-fusion shortcuts apart when the classifier's scores
    exist ("fused/": relabelled by its top-1; "top_class_filtered/": kept if among its top classes, given
    ``class_scores``; both NOT zero-shot), per-class AP, the evaluator's counts and DETAD's summaries (the
    figures' input; ``diagnostics=False`` skips them).
    ``predictions`` is the fused table when the protocol fused labels, else None."""
    notes = [] if len(pred) else [NO_DETECTIONS]
    fused_protocol = protocol.get("external_classifier", "none") != "none"
    if fused_protocol:
        if external is None:
            raise InputError("protocol external_classifier is on but no external classifier scores exist")
        pred = fuse_table(pred, external)
        notes.append(NOT_ZERO_SHOT)
    tiou = parse_tiou(protocol.get("tiou", "0.5:0.95:10"))
    result = evaluate_detection(test.gt, pred, tiou)
    metrics = map_metrics(result)
    metrics |= map_metrics(evaluate_detection(test.gt, oracle_labels(pred, test.gt), tiou), "gt_labels/")
    if external is not None and not fused_protocol:
        metrics |= map_metrics(evaluate_detection(test.gt, fuse_table(pred, external), tiou), "fused/")
    if class_scores is not None and not fused_protocol:
        metrics |= map_metrics(evaluate_detection(test.gt, filter_top_classes(pred, class_scores), tiou),
                               "top_class_filtered/")
    return {"metrics": metrics, "per_class": {name: float(ap.mean()) for name, ap in result.per_class.items()},
            "eval_meta": result.meta, "diagnostics": detad_summary(test, pred, tiou) if diagnostics else None, "notes": notes, "tiou": tiou,
            "predictions": pred if fused_protocol else None}


def external_scores_for(data: dict, dataset: Dataset, test) -> dict | None:
    path = data.get("external_scores")
    if not (path and Path(path).exists()):
        return None
    return read_external_scores(path, dataset.annotations.classes, [v.id for v in test.videos])


def class_scores_for(data: dict, test) -> dict | None:
    """The external classifier's score of every test class per test video (:func:`read_class_scores`), if the
    file exists."""
    path = data.get("class_scores")
    if not (path and Path(path).exists()):
        return None
    return read_class_scores(path, test.classes, [v.id for v in test.videos])


def map_metrics(result, prefix: str = "") -> dict[str, float]:
    metrics = {f"{prefix}mAP@{tiou_key(t)}": float(m) for t, m in zip(result.tiou, result.map)}
    metrics[f"{prefix}mAP_avg"] = result.average
    # the "average" some public code reports: over {0.5, 0.75, 0.95} only (DESIGN.md §1, pitfall 6)
    three = [metrics.get(f"{prefix}mAP@{t}") for t in ("0.5", "0.75", "0.95")]
    if None not in three:
        metrics[f"{prefix}mAP_avg3"] = float(np.mean(three))
    return metrics


def detad_summary(test, pred: SegmentTable, tiou) -> dict:
    """DETAD's false-positive profile and sensitivity of this job's detections, kept in the record so
    that the report can pool them over splits."""
    profile = false_positive_profile(test.gt, pred, tiou)
    sens = sensitivity(test.gt, pred, tiou, {v.id: v.duration for v in test.videos})
    return {"tiou": [float(t) for t in tiou], "fp_fractions": profile.fractions.to_dict(),
            "fp_gain": profile.gain, "map_n": [float(m) for m in profile.map_n], "n_norm": profile.n_norm,
            "sensitivity": sens.table.to_dict("records"), "sensitivity_map_n": sens.average_map_n}
