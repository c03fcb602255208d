"""Zero-shot views of a box-level dataset: what a spatio-temporal method may train on and is tested on.

Training (:func:`box_train_view`): GT boxes of seen classes only, on the split's training videos.
Unseen classes leave in one of two ways (``unseen``):
- ``drop_videos``: a video holding any unseen-class box is left out (ST-CLIP's J-HMDB / UCF lists,
  ZS-AVA's "training videos that all lack the unseen classes"), and so is a video without any GT box
  (UCF101-24 lists 6 training videos that its annotations lack);
- ``drop_labels``: every video stays, its unseen-class rows are removed (their persons stay in the
  frames, unlabelled: the temporal track's protocol default).

Test (:func:`box_test_view`): the candidate person boxes a method scores, the label space it scores
them in, and the GT of the evaluated classes:
- ``boxes``: a detector's boxes filtered by a named rule (:func:`filter_person_boxes`), or ``None`` for
  the ground-truth person boxes (the papers' ``avg*`` oracle rows);
- ``label_space``: ``unseen`` (ZS-JHMDB / ZS-UCF: softmax over the test classes), ``seen`` (a cross-dataset
  benchmark's base test set) or ``all``;
- ``evaluated``: the classes whose AP is averaged, ``unseen``, ``seen`` or ``all``;
- ``videos``: ``unseen_only`` (ST-CLIP J-HMDB / UCF: the test videos of unseen classes) or ``all``
  (the other videos' frames are negatives).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from benchmark.data.box_annotations import PERSON, BoxAnnotations
from benchmark.data.box_features import BoxFeatureStore
from benchmark.data.splits import ClassSplit
from benchmark.errors import InputError
from benchmark.evaluation.boxes import BoxTable


@dataclass(frozen=True)
class BoxTrainView:
    gt: BoxTable  # seen-class GT rows of the training videos
    classes: tuple[str, ...]  # the seen classes
    videos: tuple[str, ...]
    dropped: dict  # what the protocol removed: {"videos": n, "rows": n}
    features: BoxFeatureStore | None = None  # per-frame global and grid features (benchmark.data.box_features)
    resolution: dict = field(default_factory=dict)  # video -> (height, width) of its box coordinates
    captions: str | None = None  # a region-caption corpus (.npz: region [N, D], caption [N], source [N]), if the data have one


@dataclass(frozen=True)
class BoxTestView:
    boxes: BoxTable  # candidate person boxes (label "person", score = detector score, 1 for GT boxes)
    gt: BoxTable  # GT rows of the evaluated classes on the test videos
    classes: tuple[str, ...]  # the label space a method scores
    evaluated: tuple[str, ...]  # the classes the metric averages
    videos: tuple[str, ...]
    keys: np.ndarray  # the annotated (video, frame) keys of the test videos (structured array)
    box_source: str  # "gt" or "detector:<rule>"
    features: BoxFeatureStore | None = None
    resolution: dict = field(default_factory=dict)


def box_train_view(ann: BoxAnnotations, split: ClassSplit, videos, unseen: str = "drop_videos",
                   features: BoxFeatureStore | None = None) -> BoxTrainView:
    if unseen not in ("drop_videos", "drop_labels"):
        raise InputError(f"unseen={unseen!r}: use drop_videos or drop_labels")
    videos = set(videos)
    seen = set(split.seen)
    if unseen == "drop_videos":
        classes_of = ann.video_classes
        kept = {v for v in videos if v in classes_of and classes_of[v] <= seen}  # no GT: no known class, nothing to learn
    else:
        kept = videos
    in_videos = np.isin(ann.gt.video, list(kept))
    rows = in_videos & np.isin(ann.gt.label, list(seen))
    return BoxTrainView(ann.gt.select(rows), tuple(split.seen), tuple(sorted(kept)),
                        {"videos": len(videos) - len(kept), "rows": int(in_videos.sum() - rows.sum())},
                        features, _resolutions(ann, kept))


def box_test_view(ann: BoxAnnotations, split: ClassSplit, videos, boxes: BoxTable | None = None, rule: str = "all",
                  label_space: str = "unseen", evaluated: str = "unseen", test_videos: str = "unseen_only",
                  features: BoxFeatureStore | None = None) -> BoxTestView:
    choices = {"label_space": (label_space, ("unseen", "seen", "all")), "evaluated": (evaluated, ("unseen", "seen", "all")),
               "test_videos": (test_videos, ("unseen_only", "all"))}
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise InputError(f"{name}={value!r}: use one of {', '.join(allowed)}")
    groups = {"unseen": split.unseen, "seen": split.seen, "all": tuple(sorted(split.seen + split.unseen))}
    videos = set(videos)
    if test_videos == "unseen_only":
        classes_of = ann.video_classes
        videos = {v for v in videos if classes_of.get(v, set()) & set(split.unseen)}
    videos = sorted(videos)
    gt = ann.gt.select(np.isin(ann.gt.video, videos) & np.isin(ann.gt.label, list(groups[evaluated])))
    if boxes is None:
        candidates, source = gt_person_boxes(ann.gt.select(np.isin(ann.gt.video, videos))), "gt"
    else:
        candidates, source = filter_person_boxes(boxes.select(np.isin(boxes.video, videos)), rule), f"detector:{rule}"
    return BoxTestView(candidates, gt, tuple(groups[label_space]), tuple(groups[evaluated]), tuple(videos),
                       annotated_keys(ann, videos), source, features, _resolutions(ann, videos))


def _resolutions(ann: BoxAnnotations, videos) -> dict:
    """video -> (height, width) of its box coordinates: the file's resolution, or (1, 1) for normalised boxes (AVA)."""
    return {v: tuple(ann.resolution.get(v, (1, 1))) for v in videos}


def annotated_keys(ann: BoxAnnotations, videos) -> np.ndarray:
    """The (video, frame) keys a metric counts: AVA's annotated keyframes (with or without boxes), or
    every frame 1..nframes of each video (the ACT layout annotates every frame)."""
    videos = list(videos)
    if ann.keyframes is not None:
        return ann.keyframes.select(np.isin(ann.keyframes.video, videos)).keys()
    counts = np.array([ann.nframes[v] for v in videos], dtype=np.int64)
    width = max((len(v) for v in videos), default=1)
    keys = np.empty(int(counts.sum()), dtype=[("video", f"<U{width}"), ("frame", np.int64)])
    keys["video"] = np.repeat(np.array(videos, dtype=f"<U{width}"), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    keys["frame"] = np.arange(len(keys)) - starts + 1
    return keys


def gt_person_boxes(gt: BoxTable) -> BoxTable:
    """One box per GT person and frame (a multi-label person is one candidate), score 1: the oracle boxes."""
    person = gt.person if gt.person is not None else np.full(len(gt), -1)
    key = np.empty(len(gt), dtype=[("video", gt.video.dtype), ("frame", np.int64), ("person", np.int64)])
    key["video"], key["frame"], key["person"] = gt.video, gt.frame, person
    _, first = np.unique(key, return_index=True)
    first = np.sort(first)
    if (person[first] < 0).any():  # no person ids: distinct boxes per frame instead
        rows = np.empty(len(gt), dtype=[("video", gt.video.dtype), ("frame", np.int64), ("box", np.float64, 4)])
        rows["video"], rows["frame"], rows["box"] = gt.video, gt.frame, gt.box
        _, first = np.unique(rows, return_index=True)
        first = np.sort(first)
    return BoxTable(gt.video[first], gt.frame[first], gt.box[first], np.full(len(first), PERSON),
                    np.ones(len(first)), person[first])


_RULE = re.compile(r"^(all|top(\d+)|s_minus_t:([0-9.]+)|score>([0-9.]+))$")


def filter_person_boxes(boxes: BoxTable, rule: str) -> BoxTable:
    """A detector's person boxes kept by a named rule, per frame:
    - ``all``;
    - ``top<k>``: the k highest-scoring boxes (ST-CLIP's released J-HMDB code: ``top3``);
    - ``s_minus_t:<T>``: the best box, score S, and every box scoring above S - T (ST-CLIP's paper:
      T = 0.001 for J-HMDB, 0.7 for UCF101-24 and AVA);
    - ``score><x>``: boxes scoring above x (OV-STAD: 0.3 on J-HMDB, 0.8 on AVA).
    Ties in score keep the file's order."""
    match = _RULE.match(rule)
    if not match:
        raise InputError(f"person-box rule {rule!r}: use all, top<k>, s_minus_t:<T> or score><x>")
    if boxes.score is None:
        raise InputError(f"person-box rule {rule!r} needs detector scores")
    if rule == "all" or not len(boxes):
        return boxes
    if match.group(4) is not None:
        return boxes.select(boxes.score > float(match.group(4)))
    key = np.empty(len(boxes), dtype=[("video", boxes.video.dtype), ("frame", np.int64)])
    key["video"], key["frame"] = boxes.video, boxes.frame
    _, group = np.unique(key, return_inverse=True)
    order = np.lexsort((np.arange(len(boxes)), -boxes.score, group))  # by frame, then score, then file order
    starts = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    if match.group(2) is not None:
        keep = order[np.arange(len(order)) - first < int(match.group(2))]
    else:
        best = boxes.score[order][first]
        keep = order[(boxes.score[order] > best - float(match.group(3))) | (np.arange(len(order)) == first)]
    mask = np.zeros(len(boxes), dtype=bool)
    mask[keep] = True
    return boxes.select(mask)
