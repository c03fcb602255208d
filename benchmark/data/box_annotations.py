"""Spatio-temporal (box-level) annotations: every real format read into one :class:`BoxAnnotations`.

Formats (auto-detected by :func:`load_box_annotations`; STAD.md §2.2):
- ``act_pkl``: the ACT ``*-GT.pkl`` layout (JHMDB-GT.pkl, UCF101v2-GT.pkl, MultiSports): ``labels``,
  ``gttubes`` {video: {label index: [array(n, 5) rows ``frame x1 y1 x2 y2``]}}, ``nframes``,
  ``resolution`` {video: (h, w)}, ``train_videos`` / ``test_videos`` (one list per split). Frames are
  1-based. ``person`` = the tube's index within its video (label indices ascending, then file order).
- ``ucf_pyannot``: the corrected UCF101-24 ``pyannot_with_class_names.pkl`` ({db, trainvideos,
  classes}; a bare ``pyannot.pkl`` needs ``labels=``). Converted to the ACT convention, see
  :func:`_read_ucf`.
- ``stclip_json``: the AlphAction / HIT / ST-CLIP COCO-like JSON (``images`` with ``movie`` and
  ``timestamp``, ``annotations`` with ``bbox`` x1y1x2y2 and 1-based ``action_ids``).
- ``ava_csv``: the AVA v2.2 CSV (:func:`read_ava_csv`), with its label map (:func:`read_ava_label_map`).

Conventions of the result: one row per (box, label); boxes x1, y1, x2, y2 as the file gives them
(pixels, or normalised for AVA); ``frame`` the file's frame number (1-based) or AVA's keyframe second;
video ids as the file writes them (``class/video`` in the pickles, the bare ``movie`` in ST-CLIP's JSON).
Person detections (:func:`load_person_boxes`) are candidates, not ground truth: a separate reader.
Pickles are read with :func:`benchmark.data.safe_pickle.load_pickle` (no code runs from them).
Bad input raises :class:`AnnotationError`, one line naming the file and the video / row / line.
"""
from __future__ import annotations

import csv
import io
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from benchmark.data.annotations import AnnotationError, read_json
from benchmark.data.safe_pickle import load_pickle
from benchmark.errors import read_text
from benchmark.evaluation.boxes import BoxTable

BOX_FORMATS = ("act_pkl", "ucf_pyannot", "stclip_json", "ava_csv")
UCF_RESOLUTION = (240, 320)  # (height, width) of every UCF101-24 video
PERSON = "person"


@dataclass(frozen=True)
class BoxAnnotations:
    """A box-level dataset, whatever file it came from.

    ``gt`` holds one row per (GT box, label), ``person`` = the tube / person id within its video.
    ``keyframes`` are the annotated (video, frame) keys, including annotated frames without any box
    (AVA's 2-column rows; for the ACT layout every frame 1..nframes of a video is annotated)."""

    source: str  # the file read
    format: str  # act_pkl | stclip_json | ucf_pyannot | ava_csv | synthetic...
    labels: tuple[str, ...]  # class names in the file's index order
    gt: BoxTable
    nframes: dict[str, int] = field(default_factory=dict)  # video -> frames (ACT layout, UCF)
    resolution: dict[str, tuple[int, int]] = field(default_factory=dict)  # video -> (height, width)
    splits: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()  # official (train videos, test videos) per split
    keyframes: BoxTable | None = None  # AVA: one row per annotated key (box and label unused); None: every frame
    label_types: dict[str, str] = field(default_factory=dict)  # AVA: name -> PERSON_MOVEMENT | OBJECT_MANIPULATION | PERSON_INTERACTION
    notes: dict[str, int] = field(default_factory=dict)  # documented oddities of the file kept as they are: what -> count

    @property
    def videos(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.nframes) | set(self.gt.video.tolist())))

    @cached_property
    def video_classes(self) -> dict[str, frozenset[str]]:
        """video -> the classes of its GT rows (videos without GT are absent)."""
        videos, video = np.unique(self.gt.video, return_inverse=True)
        labels, label = np.unique(self.gt.label, return_inverse=True)
        out: dict[str, set[str]] = {}
        for pair in np.unique(video.astype(np.int64) * len(labels) + label):
            out.setdefault(str(videos[pair // len(labels)]), set()).add(str(labels[pair % len(labels)]))
        return {video: frozenset(classes) for video, classes in out.items()}


# ---------------------------------------------------------------------------------------------- entry point

def load_box_annotations(path: str | Path, format: str | None = None, labels=None,
                         test_list: str | Path | None = None) -> BoxAnnotations:
    """Read any supported box-level annotation file; ``format`` overrides auto-detection.

    ``labels``: the class names where the file has only indices — ST-CLIP JSON and a bare
    ``pyannot.pkl`` (a sequence of names, or a one-name-a-line file; default ``all_label.txt`` beside
    the JSON), or AVA's label map (a ``.pbtxt`` path, an :class:`AvaLabelMap` or {id: name}; default
    none: labels are the action ids as written). ``test_list``: UCF101-24's test videos (default
    ``testlist01.txt`` beside the pickle)."""
    path = Path(path)
    if format is not None and format not in BOX_FORMATS:
        raise AnnotationError(f"{path}: unknown box annotation format {format!r}; known: {', '.join(BOX_FORMATS)}")
    kind = format or _kind_by_suffix(path)
    if kind == "ava_csv":
        return read_ava_csv(path, labels)
    if kind in ("json", "stclip_json"):
        raw = read_json(path)
        if kind == "json" and _json_format(raw, path) is None:
            raise AnnotationError(f"{path}: not a box-level JSON (expected ST-CLIP 'images' and 'annotations')")
        return _read_stclip(_stclip_object(raw, path), path, labels)
    raw = load_pickle(path, AnnotationError)
    kind = _pickle_format(raw, path) if kind == "pickle" else kind
    return _read_act(raw, path) if kind == "act_pkl" else _read_ucf(raw, path, labels, test_list)


def detect_box_format(path: str | Path) -> str | None:
    """The box format of a file, or None for a JSON file that is not box-level (a temporal format).

    ``.csv`` is AVA, ``.json`` JSON, anything else a pickle; JSON and pickles are told apart by their
    keys. An unrecognised pickle is an error here, since no temporal reader could read it either."""
    path = Path(path)
    kind = _kind_by_suffix(path)
    if kind == "json":
        return _json_format(read_json(path), path)
    return kind if kind == "ava_csv" else _pickle_format(load_pickle(path, AnnotationError), path)


def _kind_by_suffix(path: Path) -> str:
    return {".csv": "ava_csv", ".json": "json"}.get(path.suffix.lower(), "pickle")


def _json_format(raw, path: Path) -> str | None:
    if isinstance(raw, list):
        raise AnnotationError(f"{path}: a list of boxes with scores is a person-detection file, not ground truth; "
                              f"read it with load_person_boxes")
    return "stclip_json" if isinstance(raw, dict) and "images" in raw and "annotations" in raw else None


def _pickle_format(raw, path: Path) -> str:
    if isinstance(raw, dict) and "gttubes" in raw:
        return "act_pkl"
    if isinstance(raw, dict) and ("db" in raw or _looks_like_pyannot_db(raw)):
        return "ucf_pyannot"
    raise AnnotationError(f"{path}: not a recognised box-level pickle (expected ACT 'gttubes' or UCF101-24 'db')")


def _looks_like_pyannot_db(raw: dict) -> bool:
    first = list(raw.values())[:5]
    return bool(first) and all(isinstance(v, dict) and "numf" in v and "annotations" in v for v in first)


def _stclip_object(raw, path: Path) -> dict:
    if not isinstance(raw, dict) or not isinstance(raw.get("images"), list) or not isinstance(raw.get("annotations"), list):
        raise AnnotationError(f"{path}: expected a JSON object with 'images' and 'annotations' lists (ST-CLIP layout)")
    return raw


# ---------------------------------------------------------------------------------------------- shared pieces

def _table(videos: Sequence[str], video_codes, frames, boxes, labels: Sequence[str], label_codes,
           person=None, score=None) -> BoxTable:
    """A BoxTable from integer codes into ``videos`` / ``labels`` (kept as factors for fast grouping)."""
    video_names = np.asarray(list(videos), dtype=str)
    label_names = np.asarray(list(labels), dtype=str)
    video_codes, label_codes = np.asarray(video_codes, dtype=np.int64), np.asarray(label_codes, dtype=np.int64)
    return BoxTable(video_names[video_codes], np.asarray(frames, dtype=np.int64),
                    np.asarray(boxes, dtype=np.float64).reshape(-1, 4), label_names[label_codes],
                    None if score is None else np.asarray(score, dtype=np.float64),
                    None if person is None else np.asarray(person, dtype=np.int64),
                    {"video": (video_names, video_codes), "label": (label_names, label_codes)})


def _keys_table(videos: Sequence[str], video_codes, frames) -> BoxTable:
    """Annotated (video, frame) keys as a BoxTable (zero boxes, empty labels), sorted and distinct."""
    video_names = np.asarray(list(videos), dtype=str)
    pairs = np.unique(np.stack([np.asarray(video_codes, np.int64), np.asarray(frames, np.int64)], 1).reshape(-1, 2), axis=0)
    order = np.lexsort((pairs[:, 1], video_names[pairs[:, 0]])) if len(pairs) else np.zeros(0, np.int64)
    pairs = pairs[order]
    return BoxTable(video_names[pairs[:, 0]], pairs[:, 1], np.zeros((len(pairs), 4)), np.full(len(pairs), ""))


def _check_rows(path: Path, frames: np.ndarray, boxes: np.ndarray, where: Callable[[int], str],
                nframes: np.ndarray | None = None, frame_min: int = 1) -> None:
    """One-line errors for the first bad row: non-finite values, a frame outside 1..nframes (or below
    ``frame_min``), a box with x2 < x1 or y2 < y1. ``where(i)`` names row i."""
    checks = [
        (~np.isfinite(boxes).all(1) | ~np.isfinite(frames), lambda i: f"coordinates or frame not finite: {frames[i]}, {boxes[i].tolist()}"),
        (np.isfinite(frames) & (frames != np.round(frames)), lambda i: f"frame {frames[i]} is not a whole number"),
        (frames < frame_min, lambda i: f"frame {frames[i]:g} is before the first frame ({frame_min})"),
        (boxes[:, 2] < boxes[:, 0], lambda i: f"box {boxes[i].tolist()} has x2 < x1"),
        (boxes[:, 3] < boxes[:, 1], lambda i: f"box {boxes[i].tolist()} has y2 < y1"),
    ]
    if nframes is not None:
        checks.append((frames > nframes, lambda i: f"frame {frames[i]:g} is beyond the video's {nframes[i]} frames"))
    for bad, message in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise AnnotationError(f"{path}: {where(i)}: {message(i)}")


def _whole(value, path: Path, what: str) -> int:
    """A non-negative whole number: an int (Python or numpy), an integral float, or digits (CSV text)."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if not isinstance(value, (bool, str)):
        try:
            x = float(value)
        except (TypeError, ValueError):
            x = float("nan")
        if x.is_integer() and x >= 0:
            return int(x)
    raise AnnotationError(f"{path}: {what} is not a non-negative whole number: {value!r}")


def _label_index(value, path: Path, what: str, n_labels: int, first: int = 0) -> int:
    """An index into ``n_labels`` labels counted from ``first`` (0, or 1 for AVA / ST-CLIP ids), made 0-based."""
    whole = isinstance(value, (int, np.integer)) or isinstance(value, (float, np.floating)) and float(value).is_integer()
    if isinstance(value, bool) or not whole:
        raise AnnotationError(f"{path}: {what} is not a whole number: {value!r}")
    if not first <= value < n_labels + first:
        raise AnnotationError(f"{path}: {what} {value!r} is out of range ({n_labels} labels, from {first})")
    return int(value) - first


def _video_lists(value, path: Path, key: str) -> list[tuple[str, ...]]:
    """``train_videos`` / ``test_videos``: one list per split (a flat list of names is one split)."""
    if not isinstance(value, (list, tuple)):
        raise AnnotationError(f"{path}: '{key}' must be a list of video lists, got {type(value).__name__}")
    if value and all(isinstance(v, str) for v in value):
        value = [value]
    if not all(isinstance(s, (list, tuple)) and all(isinstance(v, str) for v in s) for s in value):
        raise AnnotationError(f"{path}: '{key}' must hold lists of video names")
    return [tuple(s) for s in value]


def _finish(ann: BoxAnnotations, notes: Counter) -> BoxAnnotations:
    if notes:
        warnings.warn(f"{ann.source}: " + "; ".join(f"{n} × {why}" for why, n in sorted(notes.items())), stacklevel=3)
    return ann


def _concatenate_tubes(parts: list[np.ndarray], meta: list[tuple[int, int, int]], width: int):
    """Stack per-tube arrays once: rows [N, width] and per-row (tube, video code, label code, person)."""
    lengths = np.array([len(p) for p in parts], dtype=np.int64)
    rows = np.concatenate(parts) if parts else np.zeros((0, width))
    tube = np.repeat(np.arange(len(parts)), lengths)
    meta_rows = np.asarray(meta, dtype=np.int64).reshape(-1, 3)[tube]
    starts = np.cumsum(lengths) - lengths
    return rows, tube, meta_rows[:, 0], meta_rows[:, 1], meta_rows[:, 2], starts


def _four_numbers(bbox) -> bool:
    return isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in bbox)


def _float_array(value, path: Path, what: str, columns: int) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError(f"{path}: {what}: not a numeric array") from None
    if a.ndim != 2 or a.shape[1] != columns:
        raise AnnotationError(f"{path}: {what}: expected an array of shape (n, {columns}), got {a.shape}")
    return a


# ---------------------------------------------------------------------------------------------- ACT *-GT.pkl

def _read_act(raw, path: Path) -> BoxAnnotations:
    if not isinstance(raw, dict) or not {"labels", "gttubes", "nframes"} <= set(raw):
        raise AnnotationError(f"{path}: an ACT ground-truth pickle needs 'labels', 'gttubes' and 'nframes'")
    labels = tuple(str(name) for name in raw["labels"])
    nframes = {str(v): _whole(n, path, f"video {v}: nframes") for v, n in raw["nframes"].items()}
    videos = [str(v) for v in raw["gttubes"]]
    parts, meta = [], []
    for vi, (video, by_label) in enumerate(raw["gttubes"].items()):
        if video not in nframes:
            raise AnnotationError(f"{path}: video {video}: has tubes but no 'nframes' entry")
        if not isinstance(by_label, dict):
            raise AnnotationError(f"{path}: video {video}: tubes must be a dict label index -> list of arrays")
        person = 0
        for li, label in sorted((_label_index(k, path, f"video {video}: label index", len(labels)), k) for k in by_label):
            for tube in by_label[label]:
                parts.append(_float_array(tube, path, f"video {video}: tube {person} ({labels[li]})", 5))
                meta.append((vi, li, person))
                person += 1
    rows, tube, vcode, lcode, person, starts = _concatenate_tubes(parts, meta, 5)
    n_of_video = np.array([nframes[v] for v in videos], dtype=np.int64)
    _check_rows(path, rows[:, 0], rows[:, 1:], nframes=n_of_video[vcode] if len(rows) else np.zeros(0, np.int64),
                where=lambda i: f"video {videos[vcode[i]]}: tube {person[i]} ({labels[lcode[i]]}) row {i - starts[tube[i]]}")
    gt = _table(videos, vcode, rows[:, 0].astype(np.int64), rows[:, 1:], labels, lcode, person)
    resolution = {str(v): (_whole(hw[0], path, f"video {v}: height"), _whole(hw[1], path, f"video {v}: width"))
                  for v, hw in raw.get("resolution", {}).items()}
    train = _video_lists(raw.get("train_videos", []), path, "train_videos")
    test = _video_lists(raw.get("test_videos", []), path, "test_videos")
    if len(train) != len(test):
        raise AnnotationError(f"{path}: {len(train)} train_videos lists but {len(test)} test_videos lists")
    notes = Counter()
    unknown = {v for split in train + test for v in split} - set(nframes)
    if unknown:
        notes["split videos without annotations (kept in the splits)"] = len(unknown)
    ann = BoxAnnotations(str(path), "act_pkl", labels, gt, nframes, resolution, tuple(zip(train, test)), notes=dict(notes))
    return _finish(ann, notes)


# ---------------------------------------------------------------------------------------------- UCF101-24 pyannot

def _read_ucf(raw, path: Path, labels=None, test_list: str | Path | None = None) -> BoxAnnotations:
    """The corrected UCF101-24 annotations, converted to the ACT convention of the other readers.

    The file has, per tube, ``sf`` (first frame, 0-based), ``ef`` (exclusive end) and ``boxes`` [ef - sf, 4]
    as x, y, w, h. Row i becomes frame ``sf + i + 1`` (1-based, as ACT's UCF101v2-GT.pkl) and box
    ``x, y, x + w, y + h``. Whether the ACT conversion used ``x + w - 1`` and the same frame offset
    cannot be verified offline (UCF101v2-GT.pkl is not in any public repository; STAD.md §2.2);
    this choice keeps boxes within the 320 × 240 frame on the real file. ``person`` = the tube's index
    in the video's ``annotations``. Training videos: ``trainvideos`` as listed (6 of its 2,290 have no
    entry in ``db``; they are kept and noted). Test videos: ``test_list`` (default ``testlist01.txt``
    beside the pickle), else every ``db`` video not in ``trainvideos``. Resolution: (240, 320) for all."""
    if isinstance(raw, dict) and "db" in raw:
        db, classes, train = raw["db"], raw.get("classes", labels), raw.get("trainvideos", [])
    else:
        db, classes, train = raw, labels, []
    if classes is None:
        raise AnnotationError(f"{path}: a bare pyannot.pkl has label indices only; give the class names (labels=...)")
    classes = tuple(str(c) for c in (_label_file(classes, path) if isinstance(classes, (str, Path)) else classes))
    if not isinstance(db, dict):
        raise AnnotationError(f"{path}: 'db' must be a dict video -> entry")
    videos = [str(v) for v in db]
    nframes, parts, meta = {}, [], []
    for vi, (video, entry) in enumerate(db.items()):
        if not isinstance(entry, dict) or "numf" not in entry or not isinstance(entry.get("annotations"), list):
            raise AnnotationError(f"{path}: video {video}: entry must have 'numf' and an 'annotations' list")
        nframes[video] = _whole(entry["numf"], path, f"video {video}: numf")
        for person, tube in enumerate(entry["annotations"]):
            what = f"video {video}: tube {person}"
            try:
                sf, ef, boxes, label = tube["sf"], tube["ef"], tube["boxes"], tube["label"]
            except (KeyError, TypeError):
                raise AnnotationError(f"{path}: {what}: tube needs 'label', 'sf', 'ef' and 'boxes'") from None
            li = _label_index(label, path, f"{what}: label index", len(classes))
            sf, ef = _whole(sf, path, f"{what}: sf"), _whole(ef, path, f"{what}: ef")
            xywh = _float_array(boxes, path, what, 4)  # float first: x + w overflows the file's uint8
            if len(xywh) != ef - sf:
                raise AnnotationError(f"{path}: {what}: {len(xywh)} boxes for frames sf={sf}..ef={ef} (expected ef - sf)")
            parts.append(np.column_stack([sf + 1 + np.arange(len(xywh)), xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]))
            meta.append((vi, li, person))
    rows, tube_of, vcode, lcode, person, starts = _concatenate_tubes(parts, meta, 5)
    n_of_video = np.array([nframes[v] for v in videos], dtype=np.int64)
    _check_rows(path, rows[:, 0], rows[:, 1:], nframes=n_of_video[vcode] if len(rows) else np.zeros(0, np.int64),
                where=lambda i: f"video {videos[vcode[i]]}: tube {person[i]} box {i - starts[tube_of[i]]}")
    gt = _table(videos, vcode, rows[:, 0].astype(np.int64), rows[:, 1:], classes, lcode, person)
    train = tuple(str(v) for v in train)
    test_path = Path(test_list) if test_list else path.with_name("testlist01.txt")
    if test_list or test_path.is_file():
        test = tuple(line.strip() for line in read_text(test_path, AnnotationError).splitlines() if line.strip())
    else:
        test = tuple(v for v in videos if v not in set(train))
    notes = Counter()
    missing = set(train) | set(test)
    missing -= set(nframes)
    if missing:
        notes["split videos without annotations in 'db' (kept in the splits)"] = len(missing)
    splits = ((train, test),) if train or test else ()
    ann = BoxAnnotations(str(path), "ucf_pyannot", classes, gt, nframes, {v: UCF_RESOLUTION for v in videos}, splits,
                         notes=dict(notes))
    return _finish(ann, notes)


# ---------------------------------------------------------------------------------------------- ST-CLIP JSON

def _label_file(path, near: Path) -> tuple[str, ...]:
    names = tuple(line.strip() for line in read_text(path, AnnotationError).splitlines() if line.strip())
    if not names:
        raise AnnotationError(f"{path}: empty label list (needed for {near.name})")
    return names


def _image_index(raw: dict, path: Path) -> dict[int, tuple[str, int, int | None, int | None]]:
    """ST-CLIP ``images``: id -> (movie, frame, height, width). ``timestamp`` is the frame number as text
    ('00014'), 1-based like the ACT pickle's frames (the test JSON equals JHMDB-GT.pkl's rows)."""
    index = {}
    for k, image in enumerate(raw["images"]):
        try:
            image_id, movie, timestamp = image["id"], image["movie"], image["timestamp"]
        except (KeyError, TypeError):
            raise AnnotationError(f"{path}: images[{k}] needs 'id', 'movie' and 'timestamp'") from None
        if not (isinstance(timestamp, str) and timestamp.isdigit()) and not isinstance(timestamp, int):
            raise AnnotationError(f"{path}: image {image_id}: timestamp {timestamp!r} is not a frame number")
        frame = int(timestamp)
        if image_id in index:
            raise AnnotationError(f"{path}: image id {image_id} appears twice in 'images'")
        size = [image.get("height"), image.get("width")]
        index[image_id] = (str(movie), frame, *[None if s is None else _whole(s, path, f"image {image_id}: size") for s in size])
    return index


def _read_stclip(raw: dict, path: Path, labels=None) -> BoxAnnotations:
    """ST-CLIP / AlphAction JSON. Labels: ``labels`` (names, or a one-a-line file), else ``all_label.txt``
    beside the JSON; ``action_ids`` index them from 1. Videos are the ``movie`` names as written (no class
    folder), ``person`` is ``person_id`` as written (-1 if absent). ``keyframes`` are the listed images,
    with or without boxes. No splits, no nframes: the file lists one subset's annotated frames."""
    if labels is None:
        labels = path.with_name("all_label.txt")
        if not labels.is_file():
            raise AnnotationError(f"{path}: ST-CLIP JSON needs its label list: all_label.txt beside it, or labels=...")
    labels = _label_file(labels, path) if isinstance(labels, (str, Path)) else tuple(str(x) for x in labels)
    images = _image_index(raw, path)
    video_codes = {}
    image_rows = [(video_codes.setdefault(movie, len(video_codes)), frame) for movie, frame, _, _ in images.values()]
    vcode, frames, boxes, lcode, person = [], [], [], [], []
    for k, a in enumerate(raw["annotations"]):
        if not isinstance(a, dict) or not {"image_id", "bbox", "action_ids"} <= set(a):
            raise AnnotationError(f"{path}: annotations[{k}] needs 'image_id', 'bbox' and 'action_ids'")
        if a["image_id"] not in images:
            raise AnnotationError(f"{path}: annotations[{k}]: image id {a['image_id']!r} is not in 'images'")
        (movie, frame, _, _), bbox, person_id = images[a["image_id"]], a["bbox"], a.get("person_id", -1)
        if not _four_numbers(bbox) or not isinstance(a["action_ids"], list):
            raise AnnotationError(f"{path}: annotations[{k}]: 'bbox' must be 4 numbers and 'action_ids' a list")
        if not isinstance(person_id, int) or isinstance(person_id, bool):
            raise AnnotationError(f"{path}: annotations[{k}]: person_id {person_id!r} is not an integer")
        for action in a["action_ids"]:
            vcode.append(video_codes[movie])
            frames.append(frame)
            boxes.append(bbox)
            lcode.append(_label_index(action, path, f"annotations[{k}]: action id", len(labels), first=1))
            person.append(person_id)
    boxes = _float_array(boxes, path, "bbox", 4) if boxes else np.zeros((0, 4))
    videos = list(video_codes)
    _check_rows(path, np.asarray(frames, np.float64), boxes,
                where=lambda i: f"video {videos[vcode[i]]} frame {frames[i]}")
    gt = _table(videos, vcode, frames, boxes, labels, lcode, person)
    resolution = {movie: (h, w) for movie, _, h, w in images.values() if h is not None and w is not None}
    keyframes = _keys_table(videos, [c for c, _ in image_rows], [f for _, f in image_rows])
    return BoxAnnotations(str(path), "stclip_json", labels, gt, resolution=resolution, keyframes=keyframes)


def load_person_boxes(path: str | Path, images=None) -> BoxTable:
    """Person detections: AVA's CSV layout (a ``.csv``: :func:`read_ava_person_boxes`, ``images`` unused), or a JSON list of ``{image_id, category_id, bbox x1y1x2y2, score}`` (score a string
    in ST-CLIP's file, a number accepted too) -> BoxTable with scores, label ``person``, no person ids.

    ``images`` resolves image ids to (video, frame): the ST-CLIP GT JSON of the same frames (a path), or
    a mapping {image_id: (video, frame)}. Not the testlist: the ids are not derivable from it, and it
    lacks 13 of the 9,139 J-HMDB test frames. Every category is kept (the file has only category 0)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return read_ava_person_boxes(path)
    if images is None:
        raise AnnotationError(f"{path}: person boxes in ST-CLIP's JSON need the GT JSON whose image ids they name")
    if isinstance(images, (str, Path)):
        gt_path = Path(images)
        images = _image_index(_stclip_object(read_json(gt_path), gt_path), gt_path)
        index = {i: (movie, frame) for i, (movie, frame, _, _) in images.items()}
    else:
        index = dict(images)
    raw = read_json(path)
    if not isinstance(raw, list):
        raise AnnotationError(f"{path}: expected a JSON list of person boxes, got {type(raw).__name__}")
    video_codes, vcode, frames, boxes, scores = {}, [], [], [], []
    for k, d in enumerate(raw):
        if not isinstance(d, dict) or not {"image_id", "bbox", "score"} <= set(d):
            raise AnnotationError(f"{path}: box {k} needs 'image_id', 'bbox' and 'score'")
        if d["image_id"] not in index:
            raise AnnotationError(f"{path}: box {k}: image id {d['image_id']!r} is not among the images")
        (video, frame), bbox = index[d["image_id"]], d["bbox"]
        try:
            score = float(d["score"])
        except (TypeError, ValueError):
            raise AnnotationError(f"{path}: box {k}: score {d['score']!r} is not a number") from None
        if not _four_numbers(bbox):
            raise AnnotationError(f"{path}: box {k}: 'bbox' must be 4 numbers, got {bbox!r}")
        vcode.append(video_codes.setdefault(video, len(video_codes)))
        frames.append(frame)
        boxes.append(bbox)
        scores.append(score)
    boxes = _float_array(boxes, path, "bbox", 4) if boxes else np.zeros((0, 4))
    _check_rows(path, np.asarray(frames, np.float64), boxes, where=lambda i: f"box {i} (image {raw[i]['image_id']})")
    if not np.isfinite(scores).all():
        raise AnnotationError(f"{path}: box {int(np.flatnonzero(~np.isfinite(scores))[0])}: score is not finite")
    return _table(list(video_codes), vcode, frames, boxes, [PERSON], np.zeros(len(vcode), np.int64), score=scores)


# ---------------------------------------------------------------------------------------------- AVA

class AvaLabelMap(NamedTuple):
    names: dict[int, str]  # action id -> name, in id order
    label_types: dict[str, str]  # name -> PERSON_MOVEMENT | OBJECT_MANIPULATION | PERSON_INTERACTION (80-class map)


_ITEM = re.compile(r'item\s*\{((?:[^{}"]|"(?:[^"\\]|\\.)*")*)\}')
_FIELD = re.compile(r'(\w+)\s*:\s*("(?:[^"\\]|\\.)*"|[^\s"]+)')


def read_ava_label_map(path: str | Path) -> AvaLabelMap:
    """An AVA label map: ``item { name: "..." id: N [label_type: ...] }`` blocks (the 60-class
    ``..._for_activitynet_2019.pbtxt`` and the 80-class map with label types). ``#`` comments allowed."""
    path = Path(path)
    text = re.sub(r"#[^\n]*", "", read_text(path, AnnotationError, "label map"))
    leftover = _ITEM.sub("", text).strip()
    if leftover:
        raise AnnotationError(f"{path}: malformed label map near {leftover[:40]!r} (expected item {{ name: \"...\" id: N }})")
    names, types = {}, {}
    for k, block in enumerate(_ITEM.findall(text)):
        fields = {key: re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith('"') else value
                  for key, value in _FIELD.findall(block)}
        if "name" not in fields or "id" not in fields:
            raise AnnotationError(f"{path}: item {k + 1} needs a name and an id")
        try:
            action = int(fields["id"])
        except ValueError:
            raise AnnotationError(f"{path}: item {fields['name']!r}: id {fields['id']!r} is not an integer") from None
        if action in names:
            raise AnnotationError(f"{path}: id {action} appears twice ({names[action]!r}, {fields['name']!r})")
        names[action] = fields["name"]
        if "label_type" in fields:
            types[fields["name"]] = fields["label_type"]
    if not names:
        raise AnnotationError(f"{path}: no 'item' in the label map")
    return AvaLabelMap(dict(sorted(names.items())), types)


def _ava_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(read_text(path, AnnotationError, "CSV file"), newline="")))


def read_ava_exclusions(path: str | Path) -> set[tuple[str, int]]:
    """AVA's excluded timestamps (``video,ts`` rows): the (video, second) keys the evaluator ignores."""
    path = Path(path)
    out = set()
    for line, row in enumerate(_ava_rows(path), 1):
        if not row:
            continue
        if len(row) != 2:
            raise AnnotationError(f"{path}: line {line}: expected 'video,timestamp', got {len(row)} columns")
        out.add((row[0], _whole(row[1], path, f"line {line}: timestamp")))
    return out


def read_ava_csv(path: str | Path, label_map=None) -> BoxAnnotations:
    """The AVA v2.2 ground-truth CSV, no header: ``video_id, timestamp, x1, y1, x2, y2, action_id, person_id``,
    boxes normalised to [0, 1], one row per (box, label). A 7-column row has no person id (-1). A
    2-column row (``video_id, timestamp``) marks an annotated keyframe without boxes. ``frame`` is the
    timestamp in seconds; ``keyframes`` holds every annotated key.

    ``label_map``: a ``.pbtxt`` path, an :class:`AvaLabelMap` or {id: name}. With one, labels are its
    names in id order and rows of other action ids are dropped (and noted), as the official evaluator
    does with the 60-class map; without one, labels are the action ids as strings, in numeric order."""
    path = Path(path)
    if isinstance(label_map, (str, Path)):
        label_map = read_ava_label_map(label_map)
    types = label_map.label_types if isinstance(label_map, AvaLabelMap) else {}
    names = dict(label_map.names if isinstance(label_map, AvaLabelMap) else label_map or {})
    video_codes, key_rows, values, meta = {}, [], [], []
    for line, row in enumerate(_ava_rows(path), 1):
        if not row:
            continue
        if len(row) not in (2, 7, 8):
            raise AnnotationError(f"{path}: line {line}: expected 2, 7 or 8 columns, got {len(row)}")
        code = video_codes.setdefault(row[0], len(video_codes))
        second = _whole(row[1], path, f"line {line}: timestamp")
        key_rows.append((code, second))
        if len(row) == 2:
            continue
        try:
            values.append([float(x) for x in row[2:6]])
        except ValueError:
            raise AnnotationError(f"{path}: line {line}: box {row[2:6]} is not 4 numbers") from None
        action = _whole(row[6], path, f"line {line}: action id")
        try:
            person = int(row[7]) if len(row) == 8 else -1
        except ValueError:
            raise AnnotationError(f"{path}: line {line}: person id {row[7]!r} is not an integer") from None
        meta.append((code, second, action, person, line))
    meta = np.asarray(meta, dtype=np.int64).reshape(-1, 5)
    boxes = np.asarray(values, dtype=np.float64).reshape(-1, 4)
    _check_rows(path, meta[:, 1].astype(np.float64), boxes, where=lambda i: f"line {meta[i, 4]}", frame_min=0)
    outside = (boxes < 0) | (boxes > 1)
    if outside.any():
        i = int(np.flatnonzero(outside.any(1))[0])
        raise AnnotationError(f"{path}: line {meta[i, 4]}: box {boxes[i].tolist()} is not normalised to [0, 1]")
    actions = meta[:, 2]
    notes = Counter()
    if names:
        kept = np.isin(actions, list(names))
        if (~kept).any():
            notes["rows with an action id outside the label map (dropped)"] = int((~kept).sum())
        meta, boxes, actions = meta[kept], boxes[kept], actions[kept]
        ids = np.array(sorted(names), dtype=np.int64)
    else:
        if (actions < 1).any():
            raise AnnotationError(f"{path}: line {meta[np.argmax(actions < 1), 4]}: action id 0 (ids start at 1)")
        ids = np.unique(actions)
    labels = [names.get(int(i), str(int(i))) for i in ids]
    videos = list(video_codes)
    gt = _table(videos, meta[:, 0], meta[:, 1], boxes, labels, np.searchsorted(ids, actions), meta[:, 3])
    keys = np.asarray(key_rows, dtype=np.int64).reshape(-1, 2)
    ann = BoxAnnotations(str(path), "ava_csv", tuple(labels), gt, keyframes=_keys_table(videos, keys[:, 0], keys[:, 1]),
                         label_types={n: t for n, t in types.items() if n in labels}, notes=dict(notes))
    return _finish(ann, notes)


def read_ava_person_boxes(path: str | Path) -> BoxTable:
    """Person detections in the LFB / SlowFast layout (``ava_val_predicted_boxes.csv``):
    ``video_id, timestamp, x1, y1, x2, y2, [action id, empty], score``, normalised boxes -> BoxTable with
    scores, label ``person``. A row with an action id is still one person box (the file repeats nothing)."""
    path = Path(path)
    video_codes, vcode, frames, boxes, scores = {}, [], [], [], []
    for line, row in enumerate(_ava_rows(path), 1):
        if not row:
            continue
        if len(row) != 8:
            raise AnnotationError(f"{path}: line {line}: expected 8 columns (video, timestamp, x1, y1, x2, y2, "
                                  f"action, score), got {len(row)}")
        try:
            box, score = [float(x) for x in row[2:6]], float(row[7])
        except ValueError:
            raise AnnotationError(f"{path}: line {line}: box {row[2:6]} and score {row[7]!r} must be numbers") from None
        vcode.append(video_codes.setdefault(row[0], len(video_codes)))
        frames.append(_whole(row[1], path, f"line {line}: timestamp"))
        boxes.append(box)
        scores.append(score)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    _check_rows(path, np.asarray(frames, np.float64), boxes, where=lambda i: f"row {i + 1}", frame_min=0)
    if not np.isfinite(scores).all():
        raise AnnotationError(f"{path}: row {int(np.flatnonzero(~np.isfinite(scores))[0]) + 1}: score is not finite")
    return _table(list(video_codes), vcode, frames, boxes, [PERSON], np.zeros(len(vcode), np.int64), score=scores)


def load_ava(train_csv: str | Path, val_csv: str | Path, label_map: str | Path) -> BoxAnnotations:
    """AVA's training and validation CSVs read with one label map (the 80-class map, or the 60 classes of the
    standard evaluation, whose other rows are dropped) as one dataset whose official split is (train movies,
    val movies), boxes normalised ((1, 1) resolution)."""
    train, val = read_ava_csv(train_csv, label_map), read_ava_csv(val_csv, label_map)
    both = (train, val)

    def joined(tables: list[BoxTable]) -> BoxTable:
        optional = lambda name: (None if any(getattr(t, name) is None for t in tables)
                                 else np.concatenate([getattr(t, name) for t in tables]))
        return BoxTable(np.concatenate([t.video for t in tables]).astype(str), np.concatenate([t.frame for t in tables]),
                        np.concatenate([t.box for t in tables]), np.concatenate([t.label for t in tables]).astype(str),
                        optional("score"), optional("person"))

    videos = [tuple(sorted(set(a.keyframes.video.tolist()))) for a in both]
    if set(videos[0]) & set(videos[1]):
        raise AnnotationError(f"{val_csv}: {len(set(videos[0]) & set(videos[1]))} movies are also in {train_csv}")
    return BoxAnnotations(f"{train_csv} + {val_csv}", "ava_csv", train.labels, joined([train.gt, val.gt]),
                          resolution={v: (1, 1) for v in videos[0] + videos[1]}, splits=(tuple(videos),),
                          keyframes=joined([train.keyframes, val.keyframes]), label_types=train.label_types,
                          notes={k: train.notes.get(k, 0) + val.notes.get(k, 0) for k in {**train.notes, **val.notes}})


# ---------------------------------------------------------------------------------------------- summary

def box_dataset_info(ann: BoxAnnotations) -> dict:
    """Per subset (``all``, and ``split<k>/train`` / ``split<k>/test`` for each official split): videos,
    annotated frames (where the format says: nframes, or keyframes), frames with boxes, boxes (distinct
    (frame, person) pairs; rows where person ids are unknown), tubes (distinct (video, person)), classes."""
    gt = ann.gt
    video_names, video_codes = gt.factors.get("video") or np.unique(gt.video, return_inverse=True)
    video_codes = np.asarray(video_codes, dtype=np.int64)
    label_codes = np.asarray((gt.factors.get("label") or np.unique(gt.label, return_inverse=True))[1], dtype=np.int64)
    person = gt.person if gt.person is not None and len(gt) and (gt.person >= 0).all() else None
    subsets = {"all": tuple(sorted(set(ann.nframes) | set(video_names.tolist())))}
    for k, (train, test) in enumerate(ann.splits, 1):
        subsets[f"split{k}/train"], subsets[f"split{k}/test"] = train, test
    frame_key = video_codes * (int(gt.frame.max(initial=0)) + 1) + gt.frame  # (video, frame) as one integer
    person_key = None if person is None else frame_key * (int(person.max(initial=0)) + 1) + person
    info = {}
    for name, videos in subsets.items():
        rows = np.isin(video_names, list(videos))[video_codes]
        if ann.keyframes is not None:
            annotated = int(np.isin(ann.keyframes.video, list(videos)).sum())
        else:
            annotated = sum(ann.nframes.get(v, 0) for v in videos) if ann.nframes else None
        info[name] = {
            "videos": len(set(videos)),
            "annotated_frames": annotated,
            "frames_with_boxes": _distinct(frame_key[rows]),
            "boxes": int(rows.sum()) if person is None else _distinct(person_key[rows]),
            "tubes": None if person is None else _distinct(video_codes[rows] * (int(person.max()) + 1) + person[rows]),
            "classes": _distinct(label_codes[rows]),
        }
    return {"file": ann.source, "format": ann.format, "classes": len(ann.labels), "subsets": info, "warnings": dict(ann.notes)}


def _distinct(values: np.ndarray) -> int:
    """How many distinct integers (a sort: numpy 2's hashing ``np.unique`` is ~10x slower here)."""
    ordered = np.sort(values)
    return int(len(ordered) > 0) + int(np.count_nonzero(ordered[1:] != ordered[:-1]))
