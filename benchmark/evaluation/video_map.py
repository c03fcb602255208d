"""Video-mAP of spatio-temporal action detection: tube IoU and video AP in the ACT and MultiSports conventions.

A tube is one actor's boxes over frames, with one label (and a score for a detection): :class:`Tube`.
Its frames are strictly increasing; one box per frame. Two presets (docs STAD.md §2.4):

- ``act`` (ACT / MOC ``videoAP``, ``iou3dt``): tube IoU = temporal IoU with +1 frames,
  (min end - max start + 1) / (max end - min start + 1), times the mean per-frame spatial IoU with +1
  pixel areas over the overlapping frames. Per class and video the detected tubes first go through
  ``nms3dt`` at 0.3 (a tube is dropped if its tube IoU with a kept, higher-scoring tube exceeds 0.3).
  Delete matching (a detection takes the remaining GT tube of highest IoU; if >= threshold, a true
  positive and the GT is deleted), trapezoid AP from (recall 0, precision 1), mean over *every* class
  given; a class with detections but no GT is an error (ACT divides 0/0).
- ``multisports`` (``evaluate_multisports.py:videoAP``, ``iou3dt_voc``): temporal IoU without +1
  ((min end - max start) / (max end - min start): a one-frame overlap gives 0), spatial IoU with
  continuous areas; no NMS; VOC matching (argmax over all GT tubes; a true positive iff >= threshold and
  not matched yet); VOC all-point AP; mean over the classes with GT.

"Overlapping frames" are the frames of [max start, min end] that both tubes hold (for tubes without
gaps, as ACT requires, all of them); with none, the IoU is 0, as it is when the temporal intersection
is empty (or, for ``multisports``, zero). Ties: detections are ranked by descending score, ties in
input order; the first GT tube in input order wins tied IoUs; NMS keeps the first of tied scores.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from benchmark.errors import InputError
from benchmark.evaluation.boxes import BoxTable
from benchmark.evaluation.detection import average_precision
from benchmark.evaluation.frame_map import paired_box_iou, trapezoid_ap

VIDEO_PRESETS = {"act": {"plus_one": True, "nms": 0.3}, "multisports": {"plus_one": False, "nms": None}}


@dataclass(frozen=True)
class Tube:
    """One actor's boxes over the frames of a video, with one label."""

    video: str
    label: str
    frames: np.ndarray  # [n] int64, strictly increasing
    boxes: np.ndarray  # [n, 4] float64 x1, y1, x2, y2
    score: float = float("nan")  # detections only

    def __post_init__(self):
        if len(self.frames) == 0 or self.boxes.shape != (len(self.frames), 4):
            raise ValueError(f"tube of {self.video}: {len(self.frames)} frames and boxes of shape {self.boxes.shape}")
        if np.any(np.diff(self.frames) <= 0):
            raise ValueError(f"tube of {self.video}: frames must be strictly increasing")


@dataclass(frozen=True)
class VideoMapResult:
    preset: str
    iou: float
    map: float
    per_class: dict[str, float]
    meta: dict = field(default_factory=dict)


def tube_iou(a: Tube, b: Tube, preset: str = "act") -> float:
    """Spatio-temporal IoU of two tubes in the ``act`` (+1 frames, +1 pixels) or ``multisports`` convention."""
    one = 1 if _spec(preset)["plus_one"] else 0
    t_min, t_max = max(a.frames[0], b.frames[0]), min(a.frames[-1], b.frames[-1])
    inter = t_max - t_min + one
    union = max(a.frames[-1], b.frames[-1]) - min(a.frames[0], b.frames[0]) + one
    if inter <= 0:
        return 0.0
    common, in_a, in_b = np.intersect1d(a.frames, b.frames, assume_unique=True, return_indices=True)
    if len(common) == 0:
        return 0.0
    spatial = paired_box_iou(a.boxes[in_a], b.boxes[in_b], "pixel" if one else "continuous")
    return float(spatial.mean() * inter / union)


def gt_tubes(gt: BoxTable) -> list[Tube]:
    """GT tubes from box rows with person ids: one tube per (video, person, label), frames sorted."""
    if gt.person is None:
        raise ValueError("GT tubes need the person (tube) id of every row")
    order = np.lexsort((gt.frame, gt.label, gt.person, gt.video))
    keys = list(zip(gt.video[order].tolist(), gt.person[order].tolist(), gt.label[order].tolist()))
    starts = [i for i in range(len(keys)) if i == 0 or keys[i] != keys[i - 1]] + [len(keys)]
    tubes = []
    for s, e in zip(starts[:-1], starts[1:]):
        rows = order[s:e]
        video, person, label = keys[s]
        if np.any(np.diff(gt.frame[rows]) == 0):
            raise InputError(f"video {video}, person {person}, label {label}: two boxes on one frame")
        tubes.append(Tube(video, label, gt.frame[rows].copy(), gt.box[rows].copy()))
    return tubes


def nms3dt(tubes: list[Tube], overlap: float, preset: str = "act") -> list[Tube]:
    """ACT's tube NMS: by descending score (ties: input order), drop a tube whose IoU with a kept one > overlap."""
    kept = []
    for tube in sorted(tubes, key=lambda t: -t.score):
        if all(tube_iou(tube, k, preset) <= overlap for k in kept):
            kept.append(tube)
    return kept


def video_map(gt: list[Tube], detections: list[Tube], preset: str = "multisports", iou: float = 0.5,
              classes=None) -> VideoMapResult:
    """Video-mAP of detected tubes against GT tubes at one tube-IoU threshold (module doc)."""
    spec = _spec(preset)
    names = sorted({t.label for t in gt}) if classes is None else list(classes)
    per_class, meta = {}, {"detections": len(detections), "gt_tubes": len(gt)}
    removed = 0
    for name in names:
        gt_of = {}
        for tube in gt:
            if tube.label == name:
                gt_of.setdefault(tube.video, []).append([tube, False])
        n_gt = sum(len(v) for v in gt_of.values())
        dets = [d for d in detections if d.label == name]
        if spec["nms"] is not None:
            by_video = {}
            for d in dets:
                by_video.setdefault(d.video, []).append(d)
            kept = [k for video_dets in by_video.values() for k in nms3dt(video_dets, spec["nms"], preset)]
            removed += len(dets) - len(kept)
            dets = kept
        if n_gt == 0:
            if preset == "act" and dets:
                raise InputError(f"class {name!r} has detected tubes but no GT tube (ACT's videoAP divides by zero here)")
            if preset != "act":
                continue
        ranked = sorted(dets, key=lambda d: -d.score)  # stable: ties keep input order
        tp = np.array([_match(d, gt_of, preset, iou) for d in ranked], dtype=bool)
        if preset == "act":
            per_class[name] = trapezoid_ap(tp, n_gt) if len(tp) else 0.0
        else:
            per_class[name] = float(average_precision(tp[None, :], n_gt)[0])
    if not per_class:
        raise InputError("no GT tubes of the evaluated classes")
    meta.update(detections_removed_by_nms=removed, classes_averaged=len(per_class))
    return VideoMapResult(preset, float(iou), float(np.mean(list(per_class.values()))), per_class, meta)


def _match(det: Tube, gt_of: dict, preset: str, threshold: float) -> bool:
    """Whether one detection is a true positive against ``gt_of`` (video -> [[GT tube, matched]] of its class),
    which it updates: ``act`` deletes the matched tube, ``multisports`` marks it (it still takes part in
    later argmaxes: the VOC rule)."""
    candidates = gt_of.get(det.video, [])
    if not candidates:
        return False
    ious = [tube_iou(g, det, preset) for g, _ in candidates]
    best = int(np.argmax(ious))  # the first of tied IoUs
    if ious[best] < threshold or candidates[best][1]:
        return False
    if preset == "act":
        del candidates[best]
    else:
        candidates[best][1] = True
    return True


def _spec(preset: str) -> dict:
    if preset not in VIDEO_PRESETS:
        raise InputError(f"unknown video-mAP preset {preset!r}; known: {', '.join(VIDEO_PRESETS)}")
    return VIDEO_PRESETS[preset]
