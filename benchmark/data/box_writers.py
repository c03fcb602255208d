"""Write box-level annotations in the real formats that :mod:`benchmark.data.box_annotations` reads.

Used by the synthetic STAD generator, so that its data goes through the same readers as real files.
Each writer takes what the reader returns and writes what the reader reads back unchanged, up to row
order and the precision a format stores (noted per writer):
- :func:`write_act_pkl`: ACT ``*-GT.pkl`` (plain dicts, lists and float32 arrays; protocol 2 by default);
- :func:`write_ucf_pyannot`: UCF101-24 ``pyannot_with_class_names.pkl`` (+ ``testlist01.txt``);
- :func:`write_stclip_json` (+ ``all_label.txt``) and :func:`write_person_boxes`: ST-CLIP's JSON files;
- :func:`write_ava_csv`, :func:`write_ava_exclusions`, :func:`write_ava_label_map`: AVA v2.2.
"""
from __future__ import annotations

import csv
import json
import pickle
import struct
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from benchmark.data.box_annotations import BoxAnnotations
from benchmark.evaluation.boxes import BoxTable


def _codes(values: np.ndarray, names, what: str) -> np.ndarray:
    """Indices of ``values`` in ``names`` (every value must be one of them)."""
    names = np.asarray(list(names), dtype=str)
    if len(values) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(names, kind="stable")
    found = order[np.clip(np.searchsorted(names[order], values), 0, len(names) - 1)] if len(names) else None
    if found is None or (names[found] != values).any():
        missing = sorted(set(values.tolist()) - set(names.tolist()))
        raise ValueError(f"{what} {missing[:3]} not in the label list")
    return found.astype(np.int64)


def _tubes(gt: BoxTable, labels) -> list[tuple[str, int, np.ndarray]]:
    """(video, label index, row indices in frame order) per (video, person, label); within a video in
    label-index then person order."""
    if gt.person is None:
        raise ValueError("tube formats need person (tube) ids in the GT table")
    label = _codes(gt.label, labels, "labels")
    names, video = gt.factors.get("video") or np.unique(gt.video, return_inverse=True)  # integer codes sort fast
    order = np.lexsort((gt.frame, gt.person, label, video))
    video, label, person = video[order], label[order], gt.person[order]
    starts = np.flatnonzero(np.r_[True, (video[1:] != video[:-1]) | (label[1:] != label[:-1]) | (person[1:] != person[:-1])])
    ends = np.r_[starts[1:], len(order)]
    return [(str(names[video[s]]), int(label[s]), order[s:e]) for s, e in zip(starts, ends)]


class _Python2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
    """Writes ASCII ``str`` and ``bytes`` as Python 2 wrote its ``str``: STRING (protocol 0) or
    (SHORT_)BINSTRING opcodes, numpy's array buffers included. Python 3 reads them back only with an
    ``encoding`` (``latin1``), as it must read JHMDB-GT.pkl."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj):
        if isinstance(obj, str) and not obj.isascii():
            return self.save_str(obj)  # Python 2 would have a `unicode` here
        data = obj.encode("ascii") if isinstance(obj, str) else obj
        if self.proto == 0:
            self.write(pickle.STRING + repr(data)[1:].encode("ascii") + b"\n")
        elif len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = dispatch[bytes] = save_python2_str


def _dump_pickle(obj, path: Path, protocol: int, python2: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        (_Python2Pickler if python2 else pickle.Pickler)(f, protocol=protocol).dump(obj)
    return path


# ---------------------------------------------------------------------------------------------- pickles

def write_act_pkl(ann: BoxAnnotations, path: str | Path, protocol: int = 2, python2: bool = False) -> Path:
    """ACT layout: ``gttubes`` {video: {label index: [float32 array(n, 5) frame x1 y1 x2 y2]}}, one tube per
    (video, person, label) in label-index then person order (the reader numbers them the same way),
    ``nframes`` and ``resolution`` for every video, ``train_videos`` / ``test_videos`` one list per split.
    Float32 as in JHMDB-GT.pkl: coordinates round to float32 (exact for whole and half pixels).
    ``python2=True`` writes text and array buffers as Python 2 did (with ``protocol=0``: the layout of
    JHMDB-GT.pkl), so that readers must decode them as latin-1."""
    gt = ann.gt
    gttubes: dict[str, dict[int, list[np.ndarray]]] = {v: {} for v in ann.videos}
    for video, label, rows in _tubes(gt, ann.labels):
        tube = np.column_stack([gt.frame[rows], gt.box[rows]]).astype(np.float32)
        gttubes[video].setdefault(label, []).append(tube)
    raw = {
        "labels": list(ann.labels),
        "gttubes": gttubes,
        "nframes": {v: int(n) for v, n in ann.nframes.items()},
        "train_videos": [list(train) for train, _ in ann.splits],
        "test_videos": [list(test) for _, test in ann.splits],
        "resolution": {v: (int(h), int(w)) for v, (h, w) in ann.resolution.items()},
    }
    return _dump_pickle(raw, Path(path), protocol, python2)


def write_ucf_pyannot(ann: BoxAnnotations, path: str | Path, test_list: bool = True, protocol: int = 2) -> Path:
    """UCF101-24 layout, the inverse of the reader's conversion: a tube's 1-based frames f..g become
    ``sf = f - 1``, ``ef = g`` (exclusive), boxes ``x, y, x2 - x, y2 - y``; whole-pixel boxes are stored
    as the smallest unsigned integer type (as the real file), others as float64. A tube must cover
    consecutive frames. The video's ``label`` is its first tube's. ``trainvideos`` = the first split's
    training videos; with ``test_list`` its test videos go to ``testlist01.txt`` beside the pickle."""
    path = Path(path)
    gt = ann.gt
    db = {v: {"numf": int(ann.nframes[v]), "annotations": []} for v in ann.videos}
    for video, label, rows in _tubes(gt, ann.labels):
        frames, boxes = gt.frame[rows], gt.box[rows]
        if (np.diff(frames) != 1).any():
            raise ValueError(f"video {video}: a UCF101-24 tube must cover consecutive frames")
        xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
        if (xywh == np.round(xywh)).all() and (xywh >= 0).all():
            xywh = xywh.astype(np.uint8 if xywh.max(initial=0) < 256 else np.uint16)
        entry = db[video]
        entry.setdefault("label", label)
        entry["annotations"].append({"label": label, "sf": int(frames[0]) - 1, "ef": int(frames[-1]), "boxes": xywh})
    for entry in db.values():
        entry.setdefault("label", -1)
    train, test = ann.splits[0] if ann.splits else ((), ())
    raw = {"db": db, "trainvideos": list(train), "classes": list(ann.labels)}
    if test_list:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_name("testlist01.txt").write_text("".join(f"{v}\n" for v in test))
    return _dump_pickle(raw, path, protocol)


# ---------------------------------------------------------------------------------------------- ST-CLIP JSON

def stclip_image_ids(keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Image ids as ST-CLIP numbers them: ``(video number) * 10000 + frame``, videos numbered from 1 in
    sorted order. Needs frames below 10000 (J-HMDB / UCF clips are far shorter)."""
    keys = sorted(set((str(v), int(f)) for v, f in keys))
    number = {v: k for k, v in enumerate(dict.fromkeys(v for v, _ in keys), 1)}
    if any(not 0 <= f < 10000 for _, f in keys):
        raise ValueError("ST-CLIP image ids need frame numbers below 10000")
    return {(v, f): number[v] * 10000 + f for v, f in keys}


def _number(x: float):
    return int(x) if float(x).is_integer() else float(x)


def write_stclip_json(ann: BoxAnnotations, path: str | Path, label_file: str | Path | None = None) -> Path:
    """ST-CLIP GT JSON: one image per annotated key (``ann.keyframes``, else every frame with a box), one
    annotation per (frame, person) with its 1-based ``action_ids``; ``person_id`` = the GT person id as
    stored (the reader keeps it as written). Width and height from ``ann.resolution``. The class names go
    to ``label_file`` (default ``all_label.txt`` beside the JSON), where the reader looks for them."""
    path = Path(path)
    gt = ann.gt
    keys = (zip(ann.keyframes.video.tolist(), ann.keyframes.frame.tolist()) if ann.keyframes is not None
            else zip(gt.video.tolist(), gt.frame.tolist()))
    ids = stclip_image_ids(list(keys) + list(zip(gt.video.tolist(), gt.frame.tolist())))
    images = []
    for (video, frame), image_id in ids.items():
        h, w = ann.resolution.get(video, (None, None))
        images.append({"id": image_id, "img_path": f"{video}/{frame:05d}.png", "height": h, "width": w,
                       "movie": video, "timestamp": f"{frame:05d}"})
    label = _codes(gt.label, ann.labels, "labels") + 1
    person = gt.person if gt.person is not None else np.full(len(gt), -1)
    people, per_image = {}, {}
    for i in np.lexsort((label, person, gt.frame, gt.video)):
        box = [_number(x) for x in gt.box[i]]
        key = (str(gt.video[i]), int(gt.frame[i]), int(person[i]), tuple(box))  # a multi-label person: one entry
        if key not in people:
            image_id = ids[key[:2]]
            per_image[image_id] = per_image.get(image_id, 0) + 1
            people[key] = {"id": image_id * 1000 + per_image[image_id], "image_id": image_id, "category_id": 1,
                           "action_ids": [], "person_id": key[2], "bbox": box,
                           "area": _number((box[2] - box[0]) * (box[3] - box[1])), "keypoints": [], "iscrowd": 0}
        people[key]["action_ids"].append(int(label[i]))
    raw = {"categories": [{"supercategory": "person", "id": 1, "name": "person"}],
           "annotations": list(people.values()), "images": images}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw))
    Path(label_file or path.with_name("all_label.txt")).write_text("".join(f"{name}\n" for name in ann.labels))
    return path


def write_person_boxes(boxes: BoxTable, path: str | Path, images: Mapping[tuple[str, int], int]) -> Path:
    """Person detections as ST-CLIP writes them: ``{image_id, category_id 0, bbox, score}`` with the score
    as a string (``repr`` of the float: exact), images in id order, boxes by descending score within an
    image. ``images``: (video, frame) -> image id, e.g. :func:`stclip_image_ids` of the GT JSON's keys."""
    if boxes.score is None:
        raise ValueError("person boxes need scores")
    image = np.array([images[(v, f)] for v, f in zip(boxes.video.tolist(), boxes.frame.tolist())], dtype=np.int64)
    order = np.lexsort((-boxes.score, image))
    out = [{"image_id": int(image[i]), "category_id": 0, "bbox": [_number(x) for x in boxes.box[i]],
            "score": repr(float(boxes.score[i]))} for i in order]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return path


# ---------------------------------------------------------------------------------------------- AVA

def write_ava_csv(ann: BoxAnnotations, path: str | Path, label_map: Mapping[int, str] | None = None,
                  decimals: int = 3) -> Path:
    """AVA v2.2 GT CSV, no header: ``video,%04d timestamp,x1,y1,x2,y2,action_id,person_id`` sorted by video,
    timestamp, person, action; coordinates with ``decimals`` decimals (AVA: 3, so the reader gets them
    back rounded). Keyframes of ``ann.keyframes`` without boxes become 2-column rows. Action ids come
    from ``label_map`` (id -> name, e.g. :func:`read_ava_label_map`'s ``names``), by default the labels
    themselves if they are ids (a CSV read without a map), else 1, 2, ... in ``ann.labels`` order."""
    if label_map is None:
        numeric = all(name.isdigit() for name in ann.labels)  # read without a label map: the labels are the ids
        label_map = {int(name) if numeric else k: name for k, name in enumerate(ann.labels, 1)}
    label_map = dict(label_map)
    ids = np.array(list(label_map), dtype=np.int64)
    gt = ann.gt
    action = ids[_codes(gt.label, list(label_map.values()), "labels")]
    person = gt.person if gt.person is not None else np.full(len(gt), -1)
    rows = [(str(gt.video[i]), int(gt.frame[i]), int(person[i]), int(action[i]),
             [*(f"{x:.{decimals}f}" for x in gt.box[i]), str(int(action[i])), str(int(person[i]))])
            for i in range(len(gt))]
    with_boxes = {(v, f) for v, f, *_ in rows}
    if ann.keyframes is not None:
        rows += [(v, f, -1, -1, []) for v, f in set(zip(ann.keyframes.video.tolist(), ann.keyframes.frame.tolist()))
                 if (v, f) not in with_boxes]
    rows.sort(key=lambda r: r[:4])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerows([video, f"{second:04d}", *rest] for video, second, _, _, rest in rows)
    return path


def write_ava_exclusions(keys: Iterable[tuple[str, int]], path: str | Path) -> Path:
    """AVA's excluded timestamps: ``video,%04d`` rows, sorted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{v},{int(t):04d}\n" for v, t in sorted(set(keys))))
    return path


def write_ava_label_map(label_map: Mapping[int, str], path: str | Path,
                        label_types: Mapping[str, str] | None = None) -> Path:
    """An AVA pbtxt label map: ``item { name: "..." id: N }`` blocks in id order, with ``label_type``
    where ``label_types`` names one (the 80-class map has them, the 60-class map does not)."""
    label_types = label_types or {}
    blocks = []
    for action, name in sorted(label_map.items()):
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        kind = f"  label_type: {label_types[name]}\n" if name in label_types else ""
        blocks.append(f'item {{\n  name: "{escaped}"\n  id: {int(action)}\n{kind}}}\n')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(blocks))
    return path
