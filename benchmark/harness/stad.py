"""The spatio-temporal (box-level) task, ``task: stad`` in a suite: its data, class splits, views and jobs.

The counterpart of :mod:`benchmark.harness.scoring` and :func:`benchmark.harness.runner.run_job` for
boxes; the store, scheduler, reports, statistics and claims are shared. A job: the class split ->
seen-class training boxes and the test view (candidate person boxes) -> ``fit`` / ``predict`` (class
scores per box) -> the protocol's post-processing (× detector score, soft voting) -> frame-mAP under
every preset of the dataset's family, and the same classifier on the ground-truth person boxes (the
papers' ``avg*`` oracle rows, ``gt_boxes/``), without training again.

Datasets (:data:`STAD_DATASETS`): ``jhmdb`` and ``ucf101_24`` (ST-CLIP's ZS-JHMDB / ZS-UCF), ``ava`` (80 classes,
ZS-AVA) and ``ava60`` (the 60 evaluated classes, OV-AVA), each on its official split 1 (AVA: train / val
movies); and the cross-dataset ``ucf_jhmdb`` (OV-STAD: train on every UCF101-24 class, test JHMDB-21's classes,
setting ``cross``), whose jobs have two test sets, each scored over its own dataset's classes.

Protocol switches (``protocol:`` of a suite; the clean setting is the default, each published shortcut
a named value; STAD.md §3.2):
- ``test_boxes``: ``detector`` (the person-box file, kept by ``box_rule``) | ``gt`` (oracle boxes);
- ``box_rule``: a rule of :func:`benchmark.data.box_views.filter_person_boxes` (``top3``: ST-CLIP's code;
  ``s_minus_t:0.001``: its paper on J-HMDB; ``score>0.3``: OV-STAD);
- ``detector_score``: ``multiply`` (ST-CLIP's code: class score × detector score) | ``ignore``;
- ``label_space``: ``unseen`` | ``all``; ``evaluated``: ``unseen`` | ``seen`` | ``all`` (fixed on a cross-dataset
  benchmark);
- ``test_videos``: ``unseen_only`` (ST-CLIP: test videos of unseen classes) | ``all``;
- ``unseen_in_training``: ``drop_videos`` | ``drop_labels``;
- ``soft_voting``: false | true (the single-action prior: every box of a video takes the video's mean
  class distribution, ST-CLIP's "with the assumption" rows; it reads other frames and persons);
- ``evaluator``: the preset of the headline metric (``multisports``); the other presets of the family
  are recorded too, under ``<preset>/``.

Metrics: ``frame_mAP@0.5`` (the headline preset), ``<preset>/frame_mAP@0.5`` for the others, the same under
``gt_boxes/`` for the oracle boxes; per-class AP of the headline. A cross-dataset job scores its base test set
as ``base/frame_mAP@0.5`` (``gt_boxes/base/...``, ``rule:top3/base/...``); with ``evaluated: all`` the seen and
unseen classes' means are ``seen/`` and ``unseen/`` (:func:`class_groups`; OV-AVA's base and novel). The shortcuts that only post-process or
re-predict (soft voting, the detector score, the box rule, all test videos) are also recorded for every job as analyses of
the same trained model (:func:`shortcut_analyses`), so an audit row reads them without training again; a job with
``"analyses": false`` (an ablation table's, :func:`benchmark.harness.suite.cells`) records neither these nor ``gt_boxes/``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from benchmark.data.box_annotations import load_ava, load_box_annotations, load_person_boxes
from benchmark.data.box_features import BoxFeatureStore
from benchmark.data.box_views import box_test_view, box_train_view
from benchmark.data.splits import ClassSplit, cross_dataset_split, generate_splits, import_stclip_lists
from benchmark.errors import InputError
from benchmark.evaluation.boxes import BoxTable
from benchmark.evaluation.frame_map import frame_map

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"

# Per dataset: the name splits use, the official split whose videos the zero-shot splits take (ST-CLIP:
# split 1), the unseen classes of a generated "stclip"-shaped split, the evaluator family, and the files
# looked for under --data-root.
STAD_DATASETS = {
    "jhmdb": {"name": "JHMDB-21", "official_split": 1, "unseen": 6, "presets": ("multisports", "act", "odm"),
              "synthetic": "jhmdb",
              "files": {"annotations": "JHMDB-GT.pkl", "person_boxes": "jhmdb_faster_RCNN_person.json",
                        "images": "jhmdb_test_gt_min.json"}},
    "ucf101_24": {"name": "UCF101-24", "official_split": 1, "unseen": 6, "presets": ("multisports", "act", "odm"),
                  "synthetic": "ucf",
                  "files": {"annotations": "pyannot_with_class_names.pkl", "person_boxes": "ucf24_person_boxes.json",
                            "images": "ucf24_test_gt_min.json"}},
}
# AVA (keyframes at 1 Hz, multi-label, boxes normalised): the official split is (train movies, val movies).
# ``ava``: the 80-class label map (ST-CLIP's ZS-AVA: 3 splits of 18 / 12 / 6 unseen classes, many outside the
# standard 60); ``ava60``: the standard 60 evaluated classes (OV-STAD's OV-AVA: 45 base / 15 novel).
# ``rules``: the other box rules a job audits (default :data:`ANALYSED_RULES`; AVA's are AlphAction's score
# threshold, OV-STAD's 0.3 and the top 3; the J-HMDB rule S - 0.001 has no AVA counterpart).
_AVA_FILES = {"train_csv": "ava_train_v2.2.csv", "val_csv": "ava_val_v2.2.csv",
              "person_boxes": "ava_val_predicted_boxes.csv"}
STAD_DATASETS |= {
    "ava": {"name": "AVA", "official_split": 1, "unseen": (18, 12, 6), "presets": ("ava_official", "ava_alphaction"),
            "synthetic": "ava", "label_map": "label_map", "rules": ("top3", "score>0.3"),
            "files": {**_AVA_FILES, "label_map": "ava_action_list_v2.2.pbtxt"}},
    "ava60": {"name": "AVA (60 classes)", "official_split": 1, "presets": ("ava_official", "ava_alphaction"),
              "synthetic": "ava", "label_map": "label_map_60", "rules": ("top3", "score>0.3"),
              "files": {**_AVA_FILES, "label_map": "ava_action_list_v2.2_for_activitynet_2019.pbtxt"}},
}

# Cross-dataset benchmarks (OV-STAD's UCF-JHMDB): train on every class of the base dataset's official training
# split, test the novel dataset's classes on its official test split (the headline) and the base classes on the
# base dataset's test split (``base/`` metrics). The synthetic pair is the ``<synthetic>_<profile>`` profiles
# of benchmark.data.synthetic_stad (profile ``pair`` or ``pair_smoke``), one visual model, disjoint classes.
STAD_DATASETS["ucf_jhmdb"] = {"name": "UCF101-24 -> JHMDB-21", "pair": ("ucf101_24", "jhmdb"),
                              "presets": ("multisports", "act", "odm")}
PROTOCOL = {"test_boxes": "detector", "box_rule": "top3", "detector_score": "multiply", "label_space": "unseen",
            "evaluated": "unseen", "test_videos": "unseen_only", "unseen_in_training": "drop_videos",
            "soft_voting": False, "evaluator": "multisports"}
IOU = 0.5
METRIC = f"frame_mAP@{IOU:g}"


def protocol_of(spec: dict) -> dict:
    unknown = sorted(set(spec["protocol"]) - set(PROTOCOL))
    if unknown:
        raise InputError(f"protocol: unknown switch(es) {', '.join(unknown)} for task stad (known: {', '.join(PROTOCOL)})")
    return {**PROTOCOL, **spec["protocol"]}


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def data_facts(suite) -> dict:
    """Where the suite's box-level data are (the embedded benchmark is generated here, once). A cross-dataset
    benchmark has the facts of each dataset under ``base`` and ``novel``."""
    if suite.dataset not in STAD_DATASETS:
        raise InputError(f"{suite.path}: dataset {suite.dataset!r} is not a box-level dataset ({', '.join(STAD_DATASETS)})")
    info, data = STAD_DATASETS[suite.dataset], suite.data
    if "pair" not in info:
        return dataset_facts(suite.dataset, data)
    real, synthetic = data.get("real") or {}, data.get("synthetic") or {}
    sides = {}
    for role, key in zip(("base", "novel"), info["pair"]):
        side_real = real.get(role) or ({"root": str(Path(real["root"]) / key)} if real.get("root") else {})
        profile = f"{STAD_DATASETS[key]['synthetic']}_{synthetic.get('profile', 'pair')}"
        sides[role] = dataset_facts(key, {"source": data["source"], "synthetic": {**synthetic, "profile": profile},
                                   "real": side_real})
    name = f"{'synthetic ' if data['source'] == 'synthetic' else ''}{info['name']}"
    return {"source": data["source"], "task": "stad", "dataset": suite.dataset, "name": name,
            "text_encoder": sides["base"]["text_encoder"], **sides}


def sides(facts: dict) -> list[dict]:
    """The facts of each dataset a suite reads: one, or a cross-dataset pair's base and novel."""
    return [facts["base"], facts["novel"]] if "base" in facts else [facts]


def dataset_facts(dataset: str, data: dict) -> dict:
    """The facts of one dataset of :data:`STAD_DATASETS` from a suite's ``data`` block (synthetic: generated once)."""
    info = STAD_DATASETS[dataset]
    if data["source"] == "synthetic":
        from benchmark.data.synthetic_stad import ensure_synthetic_stad, load_manifest

        options = {"profile": info["synthetic"], **(data.get("synthetic") or {})}
        manifest = load_manifest(ensure_synthetic_stad(CACHE / "synthetic_stad", **options))
        files = manifest["annotations"]
        annotations = ({"train": files["train_csv"], "val": files["val_csv"], "label_map": files[info["label_map"]]}
                       if "label_map" in info else files["act_pkl"])
        return {"source": "synthetic", "task": "stad", "dataset": dataset, "name": f"synthetic {info['name']}",
                "annotations": annotations, "person_boxes": manifest["person_boxes"],
                "images": files.get("gt_json"), "features": manifest["features"],
                "text_encoder": manifest["text_encoder"], "captions": manifest.get("captions")}
    real = data.get("real") or {}
    root = Path(real["root"]) if real.get("root") else None
    facts = {"source": "real", "task": "stad", "dataset": dataset, "name": info["name"], "captions": real.get("captions"),
             "text_encoder": real.get("text_encoder", {"model": "ViT-B-16", "pretrained": "openai"})}

    def path_of(key: str) -> str | None:
        path = real.get(key) or (root / info["files"][key] if root and key in info["files"] else None)
        return str(path) if path else None

    for key in ("annotations", "person_boxes", "images"):
        facts[key] = path_of(key)
    needed = ["features"]
    if "label_map" in info:  # AVA: two CSVs and a label map
        facts["annotations"] = {"train": path_of("train_csv"), "val": path_of("val_csv"), "label_map": path_of("label_map")}
        needed += [("annotations", part) for part in facts["annotations"]]
    else:
        needed.append("annotations")
    facts["features"] = str(real.get("features") or (root / "features" if root else ""))
    for key in needed:
        path = facts[key[0]][key[1]] if isinstance(key, tuple) else facts[key]
        if not path or not Path(path).exists():
            name = key[1] if isinstance(key, tuple) else key
            raise InputError(f"real data ({info['name']}): {name} not found at {path or '(none given)'} "
                             f"(see README, spatio-temporal track)")
    return facts


@lru_cache(maxsize=2)
def _annotations(source: str | tuple):
    return load_ava(*source) if isinstance(source, tuple) else load_box_annotations(source)


@lru_cache(maxsize=2)
def _person_boxes(path: str, images: str | None):
    return load_person_boxes(path, images)


def open_data(facts: dict):
    """(annotations, detector person boxes or None, feature store)."""
    source = facts["annotations"]
    ann = _annotations((source["train"], source["val"], source["label_map"]) if isinstance(source, dict) else source)
    boxes = None
    if facts.get("person_boxes") and Path(facts["person_boxes"]).exists():
        boxes = _person_boxes(facts["person_boxes"], facts["images"])
        boxes = _as_annotation_videos(boxes, ann)
    return ann, boxes, BoxFeatureStore(facts["features"])


def _as_annotation_videos(boxes: BoxTable, ann) -> BoxTable:
    """Person-box files name videos as ST-CLIP's JSON does (the bare movie); the ACT layout keys them
    ``class/video``: map the bare names onto the annotations' ids."""
    known = set(ann.videos) | (set(ann.keyframes.video.tolist()) if ann.keyframes is not None else set())
    names = np.unique(boxes.video)
    if all(n in known for n in names):
        return boxes
    by_bare = {v.rsplit("/", 1)[-1]: v for v in known}
    unknown = [n for n in names if n not in by_bare]
    if unknown:
        raise InputError(f"person boxes: {len(unknown)} videos are not in the annotations, e.g. {unknown[0]!r}")
    mapped = np.array([by_bare[n] for n in names])
    return replace(boxes, video=mapped[np.searchsorted(names, boxes.video)], factors={})


def class_split(ann, spec: dict, facts: dict) -> ClassSplit:
    """The job's split: ``stclip`` = ST-CLIP's shape (imported lists, or generated with its counts on
    other class lists, labelled generated); ``75/25`` / ``50/50`` = generated."""
    info, setting, split = STAD_DATASETS[spec["dataset"]], spec["setting"], spec["split"]
    index = split["index"]
    if setting == "stclip" and split["lists"] == "imported":
        classes = {v.rsplit("/", 1)[-1]: next(iter(c)) for v, c in ann.video_classes.items() if len(c) == 1}
        found = [s for s in import_stclip_lists(split["lists_dir"], info["name"], ann.labels, classes) if s.index == index]
        if not found:
            raise InputError(f"{split['lists_dir']}: no label_split_{index}")
        return found[0]
    if setting == "stclip":
        counts = info["unseen"] if isinstance(info["unseen"], tuple) else (info["unseen"],) * max(index, 1)
        if not 1 <= index <= len(counts):
            raise InputError(f"{info['name']}: ST-CLIP's splits are 1..{len(counts)}, not {index}")
        unseen = counts[index - 1]  # AVA: 18, 12 and 6 unseen classes in splits 1, 2, 3
        ratio = 1 - unseen / len(ann.labels)
        made = generate_splits(info["name"], ann.labels, ratio, n=index, seed=split["seed"])[index - 1]
        return replace(made, index=index, family="stclip")
    ratio = {"75/25": 0.75, "50/50": 0.5}.get(setting)
    if ratio is None:
        raise InputError(f"setting {setting!r} is not one of stclip, 75/25, 50/50 for task stad on one dataset "
                         f"(cross is the split of a cross-dataset benchmark)")
    return generate_splits(info["name"], ann.labels, ratio, n=index + 1, seed=split["seed"])[index]


@dataclass(frozen=True)
class Evaluation:
    """One test set of a job: its metric names start with ``prefix`` ("" = the headline; ``base/`` = a
    cross-dataset benchmark's base classes: ``base/frame_mAP@0.5``, ``gt_boxes/base/frame_mAP@0.5``), its test view, the same view on ground-truth person boxes, and
    ``view(rule, **changes)``: the test view on the detector's boxes kept by another rule (``rule=None``: on
    ground-truth boxes), with ``changes`` to its test space (``test_videos``); ``detector``: whether there are
    detector boxes; ``fixed_space``: the space cannot change (a cross-dataset benchmark's)."""

    prefix: str
    test: object
    gt_view: object
    view: Callable
    detector: bool
    fixed_space: bool = False


def views(spec: dict, facts: dict):
    """(split, training view, evaluations): one :class:`Evaluation` on one dataset; on a cross-dataset
    benchmark the novel dataset's classes (the headline) and the base dataset's classes (``base/``), each
    scored over its own dataset's classes."""
    protocol = protocol_of(spec)
    if "base" not in facts:
        ann, detector, store = open_data(facts)
        split = class_split(ann, spec, facts)
        train_videos, test_videos = _official(spec["dataset"], ann)
        train = box_train_view(ann, split, train_videos, protocol["unseen_in_training"], features=store)
        space = {key: protocol[key] for key in ("label_space", "evaluated", "test_videos")}
        return split, replace(train, captions=facts.get("captions")), [
            _evaluation("", ann, detector, store, split, test_videos, protocol, space)]
    if spec["setting"] != "cross":
        raise InputError(f"{facts['name']} is a cross-dataset benchmark: its one split is setting cross, not {spec['setting']!r}")
    fixed = {key: protocol[key] for key in ("label_space", "evaluated", "test_videos") if protocol[key] != PROTOCOL[key]}
    if fixed:
        raise InputError(f"protocol: {', '.join(fixed)} cannot be set on a cross-dataset benchmark (each test "
                         f"dataset is scored over its own classes, on all its test videos)")
    (base, base_boxes, base_store), (novel, novel_boxes, novel_store) = (open_data(facts[r]) for r in ("base", "novel"))
    split = cross_dataset_split(facts["base"]["name"], base.labels, facts["novel"]["name"], novel.labels)
    base_train, base_test = _official(facts["base"]["dataset"], base)
    train = box_train_view(base, split, base_train, protocol["unseen_in_training"], features=base_store)
    return split, replace(train, captions=facts["base"].get("captions")), [
        replace(_evaluation("", novel, novel_boxes, novel_store, split, _official(facts["novel"]["dataset"], novel)[1],
                            protocol, {"label_space": "unseen", "evaluated": "unseen", "test_videos": "all"}), fixed_space=True),
        replace(_evaluation("base/", base, base_boxes, base_store, split, base_test, protocol,
                            {"label_space": "seen", "evaluated": "seen", "test_videos": "all"}), fixed_space=True)]


def _official(dataset: str, ann) -> tuple:
    """(training videos, test videos) of the dataset's official split the zero-shot splits use."""
    return ann.splits[STAD_DATASETS[dataset]["official_split"] - 1]


def _evaluation(prefix: str, ann, detector, store, split, videos, protocol: dict, space: dict) -> Evaluation:
    def view(rule: str | None, **changes):
        boxes = {} if rule is None else {"boxes": detector, "rule": rule}
        return box_test_view(ann, split, videos, features=store, **boxes, **(space | changes))

    gt_view = view(None)
    if detector is None:
        if protocol["test_boxes"] != "gt":
            raise InputError(f"{ann.source}: no person-box file (test_boxes: detector needs one)")
        return Evaluation(prefix, gt_view, gt_view, view, detector=False)
    test = gt_view if protocol["test_boxes"] == "gt" else view(protocol["box_rule"])
    return Evaluation(prefix, test, gt_view, view, detector=True)


def needed_videos(spec: dict, facts: dict) -> dict[str, set[str]]:
    """feature folder -> the videos a job reads from it."""
    _, train, evaluations = views(spec, facts)
    out = {str(train.features.root): set(train.videos)}
    for e in evaluations:
        out.setdefault(str(e.test.features.root), set()).update(e.test.videos, e.gt_view.videos)
    return out


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

def soft_vote(scores: BoxTable) -> BoxTable:
    """Every row's score becomes its class's mean score over all boxes of its video (single-action prior)."""
    videos, v = np.unique(scores.video, return_inverse=True)
    labels, c = np.unique(scores.label, return_inverse=True)
    key = v * len(labels) + c
    sums = np.bincount(key, scores.score, minlength=len(videos) * len(labels))
    counts = np.bincount(key, minlength=len(videos) * len(labels))
    return replace(scores, score=sums[key] / np.maximum(counts[key], 1))


def with_detector_scores(scores: BoxTable, candidates: BoxTable, protocol: dict) -> BoxTable:
    """Soft voting (if on), then × the detector score of each row's box (``detector_score: multiply``)."""
    if len(scores) and protocol["soft_voting"]:
        scores = soft_vote(scores)
    if protocol["detector_score"] != "multiply" or not len(scores):
        return scores
    return replace(scores, score=scores.score * _box_scores(scores, candidates))


def _box_scores(rows: BoxTable, candidates: BoxTable) -> np.ndarray:
    """The candidate (detector) score of each row's box, matched on (video, frame, box); a box listed twice
    among the candidates takes its first score."""
    import pandas as pd  # a hash join: sorting structured keys took seconds on a few 100k rows

    def index(t: BoxTable) -> pd.MultiIndex:
        return pd.MultiIndex.from_arrays([t.video, t.frame, *t.box.T])

    have = index(candidates)
    first = ~have.duplicated()
    at = have[first].get_indexer(index(rows))
    if np.any(at < 0):
        raise InputError("the method scored a box that is not one of the test view's candidate boxes")
    return candidates.score[np.flatnonzero(first)[at]]


def score_boxes(test, scores: BoxTable, presets, headline: str, prefix: str = "", metric: str = METRIC) -> tuple[dict, dict]:
    """Frame-mAP of ``scores`` on the test view under each preset: (metrics, per-class AP of the headline);
    keys ``<prefix>[<preset>/]<metric>`` (``metric``: ``base/frame_mAP@0.5`` for a base test set)."""
    metrics, per_class = {}, {}
    for preset in dict.fromkeys((headline,) + tuple(presets)):
        classes = list(test.evaluated)
        keys = test.keys if preset == "ava_official" else None  # the other presets score every frame's detections
        key = metric if preset == headline else f"{preset}/{metric}"
        try:
            result = frame_map(test.gt, scores, preset, IOU, classes=classes, keys=keys)
        except InputError:  # act: a class with detections but no GT, where ACT's own code divides by zero
            if preset == headline:
                raise
            metrics[prefix + key] = float("nan")
            continue
        metrics[prefix + key] = float(result.map)
        if preset == headline:
            per_class = {c: [float(ap)] for c, ap in result.per_class.items()}
    return metrics, per_class


# ---------------------------------------------------------------------------------------------
# One job
# ---------------------------------------------------------------------------------------------

def run_job(spec: dict, job_dir: Path) -> dict:
    from benchmark.harness.registry import config_dict
    from benchmark.harness.runner import build_method

    facts = spec["runtime"]["data"]
    protocol = protocol_of(spec)
    split, train, evaluations = views(spec, facts)
    method, config, ledger = build_method(spec, job_dir)
    with ledger.phase("train"):
        method.fit(train)
    with ledger.phase("predict"):
        scores = [method.predict(e.test) for e in evaluations]
    timings = {phase: cost.wall_s for phase, cost in ledger.phases.items()}
    start = time.perf_counter()
    presets = STAD_DATASETS[spec["dataset"]]["presets"]
    metrics, per_class, predictions = {}, {}, {}
    for e, rows in zip(evaluations, scores):
        final = with_detector_scores(rows, e.test.boxes, protocol)
        metric = e.prefix + METRIC
        found, classes = score_boxes(e.test, final, presets, protocol["evaluator"], metric=metric)
        metrics |= found | class_groups(classes, split, "", metric)
        per_class = per_class or classes  # the headline's
        predictions |= _as_results(final)
        if not spec.get("analyses", True):  # an ablation table's job: the headline metrics only
            continue
        oracle = rows if e.test is e.gt_view else method.predict(e.gt_view)
        oracle = with_detector_scores(oracle, e.gt_view.boxes, protocol)
        found, classes = score_boxes(e.gt_view, oracle, presets, protocol["evaluator"], "gt_boxes/", metric)
        metrics |= found | class_groups(classes, split, "gt_boxes/", metric)
        metrics |= shortcut_analyses(method, rows, e, protocol, STAD_DATASETS[spec["dataset"]].get("rules", ANALYSED_RULES))
    timings["eval"] = time.perf_counter() - start
    test = evaluations[0].test
    return {
        "metrics": metrics,
        "per_class": per_class,
        "predictions": predictions,
        "timings": timings,
        "extra": {"notes": _notes(facts, protocol, test), "synthetic": facts["source"] == "synthetic",
                  "split": {"seen": list(split.seen), "unseen": list(split.unseen), "source": split.source,
                            "index": split.index},
                  "train_videos": len(train.videos), "test_videos": len(test.videos),
                  "test_frames": int(len(test.keys)), "candidate_boxes": int(len(test.boxes)),
                  "config": config_dict(config), "compute": ledger.record()},
    }


def class_groups(per_class: dict, split: ClassSplit, prefix: str, metric: str) -> dict[str, float]:
    """When seen and unseen classes are both evaluated (OV-STAD's base / novel / all): the mean AP of each
    group, ``<prefix>seen/<metric>`` and ``<prefix>unseen/<metric>``, from the one evaluation of every class."""
    out = {}
    for group, names in (("seen", split.seen), ("unseen", split.unseen)):
        aps = [per_class[name][0] for name in names if name in per_class]
        if aps and len(aps) < len(per_class):
            out[f"{prefix}{group}/{metric}"] = float(np.mean(aps))
    return out


ANALYSED_RULES = ("top3", "s_minus_t:0.001", "score>0.3")  # ST-CLIP's code, its paper, OV-STAD


def shortcut_analyses(method, scores: BoxTable, evaluation: Evaluation, protocol: dict,
                      rules=ANALYSED_RULES) -> dict[str, float]:
    """The protocol's other choices on the same trained model, headline preset only, each before the
    evaluation's metric name (``rule:top3/base/frame_mAP@0.5``): soft voting flipped (``soft_voting/`` or
    ``no_soft_voting/``), all test videos where the protocol keeps those of unseen classes only
    (``test_videos_all/``, a new prediction on all of them), the detector score flipped (``detector_score_ignore/`` or
    ``detector_score_multiply/``), and the other box ``rules`` (``rule:<rule>/``, a new prediction on those
    boxes). Only what changes the training data needs its own job."""
    headline, out, test, prefix = protocol["evaluator"], {}, evaluation.test, evaluation.prefix

    def score(view, rows, changes: dict, name: str) -> None:
        out.update(score_boxes(view, with_detector_scores(rows, view.boxes, protocol | changes), (), headline, name,
                               prefix + METRIC)[0])

    def predicted(view, name: str) -> None:
        score(view, method.predict(view), {}, name)

    score(test, scores, {"soft_voting": not protocol["soft_voting"]}, "no_soft_voting/" if protocol["soft_voting"] else "soft_voting/")
    on_detector = evaluation.detector and test.box_source != "gt"
    if protocol["test_videos"] == "unseen_only" and not evaluation.fixed_space:
        predicted(evaluation.view(protocol["box_rule"] if on_detector else None, test_videos="all"), "test_videos_all/")
    if not on_detector:
        return out
    flipped = "ignore" if protocol["detector_score"] == "multiply" else "multiply"
    score(test, scores, {"detector_score": flipped}, f"detector_score_{flipped}/")
    for rule in rules:
        if rule != protocol["box_rule"]:
            predicted(evaluation.view(rule), f"rule:{rule}/")
    return out


def _as_results(scores: BoxTable) -> dict:
    """{video: [{"frame", "box", "label", "score"}]}, the prediction file of a box job."""
    out: dict[str, list] = {}
    boxes, values = np.round(scores.box, 2).tolist(), np.round(scores.score, 6).tolist()
    for video, frame, box, label, score in zip(scores.video.tolist(), scores.frame.tolist(), boxes,
                                               scores.label.tolist(), values):
        out.setdefault(video, []).append({"frame": frame, "box": box, "label": label, "score": score})
    return out


def _notes(facts: dict, protocol: dict, test) -> list[str]:
    """What a reader of the record must know: the data, the boxes, and every shortcut that is on."""
    notes = [f"{'synthetic data: the embedded box-level benchmark' if facts['source'] == 'synthetic' else 'real data'} "
             f"({facts['name']})", f"test boxes: {test.box_source}"]
    if protocol["detector_score"] == "multiply" and test.box_source != "gt":
        notes.append("class scores multiplied by the detector score (ST-CLIP's code)")
    if protocol["soft_voting"]:
        notes.append("single-action prior: soft voting of every box's scores over its video (reads other frames and persons)")
    if protocol["test_videos"] == "unseen_only":
        notes.append("test videos: those of unseen classes only (ST-CLIP's protocol)")
    return notes
