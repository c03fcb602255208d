"""Temporal action annotations: one normalised structure, one reader per real format.

Every reader returns an :class:`Annotations`: videos (id, subset, duration, fps) with *all* their
instances (start/end in seconds, class name) and the sorted class list. STALE's released loader
keeps only the last annotation of a video; we keep every one (DESIGN.md §1, pitfall 2).

Formats (auto-detected by :func:`load_annotations`):
- ``activitynet``: official ActivityNet v1.3 JSON ``{"version", "taxonomy", "database": {id: {...}}}``
- ``bmn``: BSN/BMN ``anet_anno_action.json`` (``v_``-prefixed ids, ``duration_second``) with
  ``video_info_new.csv`` beside it for the subsets
- ``actionformer``: ActionFormer THUMOS14 JSON (``database`` entries carry ``fps`` and ``label_id``)
- ``gtad``: G-TAD ``thumos_gt.json`` (``database`` only, segments as strings, no duration)

Ids are kept as the format writes them, except BMN's ``v_`` prefix, which is dropped so that the
same video has the same id in every ActivityNet format (a few real ActivityNet ids begin with
``v_`` themselves, so the prefix is never stripped blindly elsewhere).
"""
from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.errors import InputError, read_text


class AnnotationError(InputError):
    """A malformed annotation file; the message is one line naming the file (and video)."""


@dataclass(frozen=True)
class Instance:
    start: float  # seconds
    end: float  # seconds
    label: str


@dataclass(frozen=True)
class Video:
    id: str
    subset: str
    duration: float | None  # seconds; None where the file does not say (G-TAD, some ANet videos)
    fps: float | None
    instances: tuple[Instance, ...]


@dataclass(frozen=True)
class Annotations:
    videos: dict[str, Video]
    classes: tuple[str, ...]  # sorted
    source: str
    format: str
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count, for documented skips

    def subset(self, name: str) -> list[Video]:
        """Videos of one subset (case-insensitive: THUMOS writes 'Test', G-TAD 'test')."""
        if name.lower() not in {s.lower() for s in self.subsets()}:
            raise AnnotationError(f"{self.source}: no subset {name!r}; subsets are {self.subsets()}")
        return [v for v in self.videos.values() if v.subset.lower() == name.lower()]

    def subsets(self) -> list[str]:
        return sorted({v.subset for v in self.videos.values()})

    def resolve_video_id(self, vid: str) -> str | None:
        """The annotation id for an id written by another tool (with or without ``v_``), or None."""
        if vid in self.videos:
            return vid
        if vid.startswith("v_") and vid[2:] in self.videos:
            return vid[2:]
        if "v_" + vid in self.videos:
            return "v_" + vid
        return None


FORMATS = ("activitynet", "bmn", "actionformer", "gtad")


def load_annotations(path: str | Path, fmt: str | None = None, video_info: str | Path | None = None) -> Annotations:
    """Read any supported annotation file; ``fmt`` overrides auto-detection.

    ``video_info`` is the BMN ``video_info_new.csv``; by default it is looked for beside the JSON.
    """
    path = Path(path)
    raw = read_json(path)
    fmt = fmt or detect_format(raw, path)
    if fmt == "activitynet":
        return _from_database(raw["database"], path, fmt, with_fps=False)
    if fmt == "actionformer":
        return _from_database(raw["database"], path, fmt, with_fps=True)
    if fmt == "gtad":
        return _from_database(raw["database"], path, fmt, with_fps=False)
    if fmt == "bmn":
        return _from_bmn(raw, path, Path(video_info) if video_info else path.with_name("video_info_new.csv"))
    raise AnnotationError(f"{path}: unknown annotation format {fmt!r}; known: {', '.join(FORMATS)}")


def detect_format(raw: object, path: Path) -> str:
    if not isinstance(raw, dict):
        raise AnnotationError(f"{path}: expected a JSON object at top level, got {type(raw).__name__}")
    if "database" in raw:
        db = raw["database"]
        if not isinstance(db, dict) or not db:
            raise AnnotationError(f"{path}: 'database' must be a non-empty object")
        first = next(iter(db.values()))
        if "taxonomy" in raw or "version" in raw and "fps" not in first:
            return "activitynet"
        if "fps" in first or any("label_id" in a for a in first.get("annotations", [])):
            return "actionformer"
        return "gtad"
    if raw and all(isinstance(v, dict) and "duration_second" in v for v in list(raw.values())[:20]):
        return "bmn"
    raise AnnotationError(f"{path}: not a recognised annotation format (expected one of {', '.join(FORMATS)})")


def read_json(path: Path, error: type[InputError] = AnnotationError):
    """A JSON file's content; a missing, unreadable, non-UTF-8 or malformed file is one-line ``error``."""
    try:
        return json.loads(read_text(path, error, "JSON file"))
    except json.JSONDecodeError as e:
        raise error(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def _number(value, path: Path, vid: str, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise AnnotationError(f"{path}: video {vid}: {what} is not a number: {value!r}") from None
    if not math.isfinite(x):
        raise AnnotationError(f"{path}: video {vid}: {what} is not finite: {value!r}")
    return x


def _instances(annos, path: Path, vid: str, duration: float | None, skipped: Counter) -> tuple[Instance, ...]:
    """Validate and normalise one video's annotations.

    Zero-length segments exist in the real ActivityNet ground truth (12 of them), so they are kept:
    the official evaluator can match them. Negative-length segments are an error. Segments that end
    after the video's duration are counted and warned about (THUMOS14 has 30 such; the evaluator
    itself never clips predictions). They are kept unchanged, so the evaluator sees the file's ground
    truth; the snippet targets clip them when they rasterise.
    """
    if not isinstance(annos, list):
        raise AnnotationError(f"{path}: video {vid}: 'annotations' must be a list")
    out = []
    for a in annos:
        try:
            seg, label = a["segment"], a["label"]
            s, e = seg[0], seg[1]
        except (KeyError, TypeError, IndexError):
            raise AnnotationError(f"{path}: video {vid}: annotation without segment [start, end] and label: {a!r}") from None
        s, e = _number(s, path, vid, "segment start"), _number(e, path, vid, "segment end")
        if not isinstance(label, str) or not label:
            raise AnnotationError(f"{path}: video {vid}: label must be a non-empty string, got {label!r}")
        if e < s:
            raise AnnotationError(f"{path}: video {vid}: segment [{s}, {e}] of {label!r} has negative length")
        if s < 0:
            raise AnnotationError(f"{path}: video {vid}: segment [{s}, {e}] of {label!r} starts before 0")
        if duration is not None and e > duration:
            skipped["segments ending after the video's duration (kept)"] += 1
        out.append(Instance(s, e, label))
    return tuple(out)


def _duration(value, path: Path, vid: str) -> float | None:
    if value is None:
        return None
    d = _number(value, path, vid, "duration")
    if d <= 0:
        raise AnnotationError(f"{path}: video {vid}: duration must be positive, got {d}")
    return d


def _finish(videos: dict[str, Video], path: Path, fmt: str, skipped: Counter) -> Annotations:
    classes = tuple(sorted({i.label for v in videos.values() for i in v.instances}))
    if skipped:
        warnings.warn(f"{path}: " + "; ".join(f"{n} × {why}" for why, n in sorted(skipped.items())), stacklevel=3)
    return Annotations(videos, classes, str(path), fmt, dict(skipped))


def _from_database(db: dict, path: Path, fmt: str, with_fps: bool) -> Annotations:
    videos, skipped = {}, Counter()
    for vid, entry in db.items():
        if not isinstance(entry, dict) or "subset" not in entry:
            raise AnnotationError(f"{path}: video {vid}: entry must be an object with a 'subset'")
        duration = _duration(entry.get("duration"), path, vid)
        fps = _number(entry["fps"], path, vid, "fps") if with_fps and "fps" in entry else None
        instances = _instances(entry.get("annotations", []), path, vid, duration, skipped)
        videos[vid] = Video(vid, entry["subset"], duration, fps, instances)
    return _finish(videos, path, fmt, skipped)


def _from_bmn(raw: dict, path: Path, info_path: Path) -> Annotations:
    """BMN's annotation JSON has no subsets; they come from ``video_info_new.csv``."""
    if not info_path.is_file():
        raise AnnotationError(f"{path}: BMN annotations need {info_path.name} beside them (not found: {info_path})")
    try:
        info = {row["video"]: row for row in csv.DictReader(io.StringIO(read_text(info_path, AnnotationError, "CSV file"), newline=""))}
    except KeyError:
        raise AnnotationError(f"{info_path}: expected a 'video' column") from None
    videos, skipped = {}, Counter()
    for key, entry in raw.items():
        row = info.get(key)
        if row is None:
            skipped["video not in video_info (dropped)"] += 1
            continue
        vid = key[2:] if key.startswith("v_") else key
        duration = _duration(entry.get("duration_second"), path, key)
        fps = _number(row["fps"], info_path, key, "fps") if row.get("fps") else None
        instances = _instances(entry.get("annotations", []), path, key, duration, skipped)
        videos[vid] = Video(vid, row["subset"], duration, fps, instances)
    return _finish(videos, path, "bmn", skipped)
