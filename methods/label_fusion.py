"""External video-classifier label fusion: the protocol leak of STALE's released code, as a switch.

STALE's released inference relabels detections with the top-1 class of a video classifier trained
*with full supervision on all classes* (for ActivityNet ``stale_best_score.json``; for THUMOS14
UntrimmedNet scores). In a zero-shot split that classifier has seen the unseen classes, so the labels
leak (DESIGN.md §1, pitfall 1): ActivityNet 75/25 Avg mAP is about 24 with it and about 9 without.
Every output made with it is not zero-shot.

- :func:`fuse_table` (:func:`fuse_labels` on result dicts) is the released rule, given the classifier's output;
- :func:`read_external_scores` / :func:`write_external_scores` handle its JSON format,
  ``{"v_<id>": {"class": name, "score": x}}`` (the ``stale_best_score.json`` format);
- :func:`untrimmednet_scores` turns THUMOS14's file into that format: ``uNet_test.npy`` (G-TAD's
  ``data/``) is UntrimmedNet's float ``[1574, 101]`` video scores, row ``int(<digits ending the
  id>) - 1`` of a ``video_test_*`` id, columns the UCF101 classes in ``classInd`` order. The THUMOS
  classes are mapped to columns BY NAME (:data:`UCF101_CLASSES`), rows are normalised by their sum,
  and the top-1 is taken among the dataset's classes only;
- :func:`filter_top_classes` is the other released rule (Ti-FAD's ``postprocess_results``, after ActionFormer's
  ActivityNet inference): a detection is *kept* only if its label is among the video's top classes of the same
  kind of classifier, restricted to the test classes (every class scoring above ``prior`` = 0.15, Ti-FAD's
  ActivityNet config, at least the best one); labels and scores are unchanged. It needs every class's score
  (:func:`read_class_scores`: ActionFormer's ``cuhk_val_simp_share.json`` layout ``{"results": {video: [score per
  class]}, "class": [names]}``, or UntrimmedNet's ``.npy``). Not zero-shot either;
- :func:`train_video_classifier` + :func:`external_video_scores` make both files for a dataset that
  has none (the synthetic benchmark): a logistic regression on mean-pooled snippet features,
  trained on the training subset with the labels of ALL classes. That supervision is the leak,
  reproduced on purpose.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmark.data.annotations import read_json
from benchmark.errors import InputError
from benchmark.evaluation.segments import SegmentTable

if TYPE_CHECKING:
    import torch

NOT_ZERO_SHOT = "not zero-shot: labels fused from an external video classifier trained on all classes"
TOP_CLASS_PRIOR = 0.15  # filter_top_classes: Ti-FAD's opt.prior_prob (configs/anet_i3d.yaml)


# UCF101's classInd.txt order (1-based index = column + 1): case-insensitive alphabetical.
UCF101_CLASSES = (
    "ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam", "BandMarching",
    "BaseballPitch", "Basketball", "BasketballDunk", "BenchPress", "Biking", "Billiards", "BlowDryHair",
    "BlowingCandles", "BodyWeightSquats", "Bowling", "BoxingPunchingBag", "BoxingSpeedBag", "BreastStroke",
    "BrushingTeeth", "CleanAndJerk", "CliffDiving", "CricketBowling", "CricketShot", "CuttingInKitchen",
    "Diving", "Drumming", "Fencing", "FieldHockeyPenalty", "FloorGymnastics", "FrisbeeCatch", "FrontCrawl",
    "GolfSwing", "Haircut", "Hammering", "HammerThrow", "HandstandPushups", "HandstandWalking",
    "HeadMassage", "HighJump", "HorseRace", "HorseRiding", "HulaHoop", "IceDancing", "JavelinThrow",
    "JugglingBalls", "JumpingJack", "JumpRope", "Kayaking", "Knitting", "LongJump", "Lunges",
    "MilitaryParade", "Mixing", "MoppingFloor", "Nunchucks", "ParallelBars", "PizzaTossing", "PlayingCello",
    "PlayingDaf", "PlayingDhol", "PlayingFlute", "PlayingGuitar", "PlayingPiano", "PlayingSitar",
    "PlayingTabla", "PlayingViolin", "PoleVault", "PommelHorse", "PullUps", "Punch", "PushUps", "Rafting",
    "RockClimbingIndoor", "RopeClimbing", "Rowing", "SalsaSpin", "ShavingBeard", "Shotput", "SkateBoarding",
    "Skiing", "Skijet", "SkyDiving", "SoccerJuggling", "SoccerPenalty", "StillRings", "SumoWrestling",
    "Surfing", "Swing", "TableTennisShot", "TaiChi", "TennisSwing", "ThrowDiscus", "TrampolineJumping",
    "Typing", "UnevenBars", "VolleyballSpiking", "WalkingWithDog", "WallPushups", "WritingOnBoard", "YoYo",
)


def read_external_scores(path: str | Path, classes: Sequence[str] | None = None,
                         video_ids: Sequence[str] | None = None) -> dict[str, dict]:
    """``{video_key: {"class": str, "score": float}}`` from a ``stale_best_score.json``-format file,
    or from UntrimmedNet's ``.npy`` (which needs the dataset's ``classes`` and the ``video_ids``)."""
    path = Path(path)
    if path.suffix == ".npy":
        if not classes or video_ids is None:
            raise InputError(f"{path}: UntrimmedNet scores need the dataset's classes and video ids")
        return untrimmednet_scores(path, classes, video_ids)
    raw = read_json(path, InputError)
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected {{video: {{'class': name, 'score': x}}}}, got {type(raw).__name__}")
    for vid, entry in raw.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("class"), str)
                and isinstance(entry.get("score"), (int, float))):
            raise InputError(f"{path}: video {vid}: expected {{'class': name, 'score': x}}, got {entry!r}")
    return raw


def untrimmednet_scores(path: str | Path, classes: Sequence[str], video_ids: Sequence[str]) -> dict[str, dict]:
    """Top-1 of ``classes`` (mapped to UCF101 columns by name) per video, from the row-normalised
    UntrimmedNet scores (rows sum to 2): ``{video_id: {"class": name, "score": probability}}``."""
    probs = untrimmednet_probs(path, classes, video_ids)
    top = probs.argmax(axis=1)
    return {vid: {"class": classes[k], "score": float(probs[n, k])} for n, (vid, k) in enumerate(zip(video_ids, top))}


def untrimmednet_probs(path: str | Path, classes: Sequence[str], video_ids: Sequence[str]) -> np.ndarray:
    """[videos, classes] UntrimmedNet scores of ``classes`` (UCF101 columns by name), rows normalised by their sum."""
    try:
        scores = np.load(path, allow_pickle=False)
    except (ValueError, EOFError):  # object arrays and pickles are refused here, never unpickled
        raise InputError(f"{path}: not a plain numeric .npy array (pickled or object data is not loaded)") from None
    if not (isinstance(scores, np.ndarray) and scores.ndim == 2 and scores.dtype.kind == "f"
            and scores.shape[1] == len(UCF101_CLASSES)):
        raise InputError(f"{path}: expected a float array [videos, {len(UCF101_CLASSES)} UCF101 classes], "
                         f"got {getattr(scores, 'dtype', type(scores).__name__)} {getattr(scores, 'shape', '')}")
    column = {name: k for k, name in enumerate(UCF101_CLASSES)}
    for name in classes:
        if name not in column:
            raise InputError(f"{path}: class {name!r} is not a UCF101 class")
    rows = []
    for vid in video_ids:
        digits = re.search(r"\d+$", vid)
        if digits is None or not 1 <= int(digits.group()) <= len(scores):
            raise InputError(f"{path}: video {vid!r} has no row (row = number ending the id - 1, {len(scores)} rows)")
        rows.append(int(digits.group()) - 1)
    picked = scores[rows]
    probs = picked[:, [column[name] for name in classes]] / picked.sum(axis=1, keepdims=True)
    if not np.isfinite(probs).all():
        raise InputError(f"{path}: non-finite scores (or a row summing to 0) for the requested videos")
    return probs


def read_class_scores(path: str | Path, classes: Sequence[str], video_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{video_id: {class: score}}`` of every class of ``classes``, for the videos the file covers: from
    ActionFormer's ``cuhk_val_simp_share.json`` layout ``{"results": {"v_<id>" or id: [score per class]},
    "class": [names]}``, or UntrimmedNet's ``.npy`` (every video of ``video_ids`` must have a row)."""
    path = Path(path)
    if path.suffix == ".npy":
        probs = untrimmednet_probs(path, classes, video_ids)
        return {vid: dict(zip(classes, map(float, row))) for vid, row in zip(video_ids, probs)}
    raw = read_json(path, InputError)
    names, results = (raw.get("class"), raw.get("results")) if isinstance(raw, dict) else (None, None)
    if not (isinstance(names, list) and isinstance(results, dict)):
        raise InputError(f"{path}: expected {{'results': {{video: [score per class]}}, 'class': [names]}}")
    missing = sorted(set(classes) - set(names))
    if missing:
        raise InputError(f"{path}: {len(missing)} classes have no score column, e.g. {missing[0]!r}")
    column = [names.index(c) for c in classes]
    out = {}
    for vid in video_ids:
        row = lookup(results, vid)
        if row is None:
            continue
        if not (isinstance(row, list) and len(row) == len(names) and all(isinstance(x, (int, float)) for x in row)):
            raise InputError(f"{path}: video {vid}: expected {len(names)} scores, got {str(row)[:80]}")
        out[vid] = {c: float(row[k]) for c, k in zip(classes, column)}
    return out


def write_external_scores(path: str | Path, scores: dict[str, dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(scores, indent=0, sort_keys=True))
    os.replace(tmp, path)
    return path


def lookup(scores: dict[str, dict], video_id: str) -> dict | None:
    """The entry of a video: the file's keys are ``v_``-prefixed ActivityNet ids, ours may not be."""
    return scores.get(f"v_{video_id}", scores.get(video_id))


def fuse_table(pred: SegmentTable, scores: dict[str, dict]) -> SegmentTable:
    """The released rule: a detection keeps its own label only if its score exceeds the classifier's
    confidence for the video; otherwise it takes the classifier's top-1 class. Detection scores are
    products of probabilities and almost never exceed it, so in practice every detection is
    relabelled. Scores and segments are unchanged; videos the file does not cover keep their labels.
    """
    videos, codes = pred.factors.get("video") or np.unique(pred.video, return_inverse=True)
    entries = [lookup(scores, vid) for vid in videos.tolist()]
    covered = np.array([e is not None for e in entries], dtype=bool)
    confidence = np.array([e["score"] if covered[k] else 0.0 for k, e in enumerate(entries)], dtype=np.float64)
    top = np.array([e["class"] if covered[k] else "" for k, e in enumerate(entries)], dtype=str)
    relabel = covered[codes] & ~(pred.score > confidence[codes])
    labels, label_codes = pred.factors.get("label") or np.unique(pred.label, return_inverse=True)
    names = np.unique(np.concatenate([labels, top]))  # the labels after fusion, factorised (evaluation looks them up)
    fused = np.where(relabel, np.searchsorted(names, top)[codes], np.searchsorted(names, labels)[label_codes])
    return replace(pred, label=names[fused], factors={**pred.factors, "label": (names, fused)})


def filter_top_classes(pred: SegmentTable, class_scores: dict[str, dict[str, float]],
                       prior: float = TOP_CLASS_PRIOR) -> SegmentTable:
    """Ti-FAD's released rule (module doc): per video, the classes whose classifier score (among
    ``class_scores``' classes: the test classes) exceeds ``prior``, at least the best one; detections with
    another label are dropped, the rest unchanged. Videos the scores do not cover keep every detection."""
    if not len(pred):
        return pred
    videos, codes = pred.factors.get("video") or np.unique(pred.video, return_inverse=True)
    keep = np.ones(len(pred), dtype=bool)
    for k, vid in enumerate(videos.tolist()):
        scores = class_scores.get(vid)
        if not scores:
            continue
        names = sorted(scores)
        best = max(names, key=scores.get)  # ties: the first name
        top = {c for c in names if scores[c] > prior} | {best}
        rows = np.flatnonzero(codes == k)
        keep[rows] = np.isin(pred.label[rows], sorted(top))
    return pred.select(keep)


def fuse_labels(detections: dict[str, list[dict]], scores: dict[str, dict]) -> dict[str, list[dict]]:
    """:func:`fuse_table` on detections in the ActivityNet result format ``{video: [{"segment", "label", "score"}]}``."""
    labels = iter(fuse_table(SegmentTable.from_detections(detections), scores).label.tolist())
    return {vid: [{**d, "label": next(labels)} for d in dets] for vid, dets in detections.items()}


def dominant_class(video) -> str:
    """The class covering the most of a video (summed instance length), its video-level label."""
    length: dict[str, float] = {}
    for inst in video.instances:
        length[inst.label] = length.get(inst.label, 0.0) + max(inst.end - inst.start, 0.0)
    return max(sorted(length), key=length.get)


def train_video_classifier(features: np.ndarray, labels: np.ndarray, num_classes: int, epochs: int = 100,
                           lr: float = 0.05, weight_decay: float = 1e-4, batch_size: int = 256,
                           seed: int = 0) -> torch.nn.Linear:
    """Multinomial logistic regression on mean-pooled snippet features ``[N, T, D] -> [N, D]``."""
    import torch  # here, not at the top: scoring prediction files (fuse_table) runs without torch
    from torch.nn import functional as F

    from methods.modules.training import minibatches, seed_everything

    generator = seed_everything(seed)
    pooled = torch.as_tensor(features, dtype=torch.float32).mean(dim=1)
    model = torch.nn.Linear(pooled.shape[1], num_classes)
    model.register_buffer("mean", pooled.mean(0))  # standardisation, applied again by classify_videos
    model.register_buffer("std", pooled.std(0) + 1e-6)
    x = (pooled - model.mean) / model.std
    y = torch.as_tensor(labels, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        for idx in minibatches(len(x), batch_size, generator):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def classify_videos(model: torch.nn.Linear, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 class index, its softmax probability) per video."""
    prob, index = video_probs(model, features).max(-1)
    return index.numpy(), prob.numpy()


def video_probs(model: torch.nn.Linear, features: np.ndarray) -> torch.Tensor:
    """[N, classes] softmax probabilities of every video."""
    import torch

    with torch.no_grad():
        x = (torch.as_tensor(features, dtype=torch.float32).mean(dim=1) - model.mean) / model.std
        return model(x).softmax(-1)


def external_video_scores(dataset, path: str | Path | None, class_path: str | Path | None = None, seed: int = 0,
                          epochs: int = 100) -> Path | None:
    """Train the all-class video classifier on ``dataset``'s training subset and write, for every test-subset
    video, its top-1 class to ``path`` (stale_best_score.json format) and every class's probability to
    ``class_path`` (cuhk_val_simp_share.json layout); either may be None. Returns ``path``. THE LEAK: the
    classifier is supervised with every class, including those a zero-shot split holds out."""
    from benchmark.data.features import load_features

    classes = dataset.annotations.classes
    index = {c: k for k, c in enumerate(classes)}
    train = [v for v in dataset.annotations.subset(dataset.train_subset) if v.instances]
    test = dataset.annotations.subset(dataset.test_subset)
    x_train = load_features(dataset.features, [v.id for v in train], dataset.T, dataset.cache_dir)
    labels = np.array([index[dominant_class(v)] for v in train])
    model = train_video_classifier(x_train, labels, len(classes), epochs=epochs, seed=seed)
    x_test = load_features(dataset.features, [v.id for v in test], dataset.T, dataset.cache_dir)
    if path is not None:
        top, prob = classify_videos(model, x_test)
        write_external_scores(path, {f"v_{v.id}": {"class": classes[k], "score": float(p)} for v, k, p in zip(test, top, prob)})
    if class_path is not None:
        probs = video_probs(model, x_test).tolist()
        write_external_scores(class_path, {"class": list(classes), "results": {f"v_{v.id}": [round(p, 6) for p in row]
                                                                            for v, row in zip(test, probs)}})
    return None if path is None else Path(path)
