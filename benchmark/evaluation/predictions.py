"""Prediction files: read into a :class:`SegmentTable`, checked, and written back.

Two formats, told apart by the suffix:

- ``.json`` (or anything else): the ActivityNet submission ``{"results": {video: [{"segment": [s, e],
  "label": name, "score": x}]}}``; other keys are ignored.
- ``.csv``: a header naming the columns ``video-id, t-start, t-end, label, score`` in any order (the
  layout other ZS-TAD code bases write); other columns are ignored.

Video ids are resolved against the annotations when given (with or without ``v_``); ids they do not
know are kept as written. A bad file is one :class:`PredictionError` line naming the file and the
video (JSON) or line (CSV): malformed content, a missing field or column, a non-numeric or
non-finite number, a reversed segment (end < start, which the official code would quietly score), an
empty label, and, with ``classes``, a label that is not a class name. A file without a single
prediction is valid (every class then has AP 0) and says so in a warning.

Speed (``python -m benchmark.perf.bench_evaluation``): JSON is decoded by msgspec straight into typed
structs, which checks every type in C; the columns are then gathered once and checked as arrays. A
file the fast decoder refuses is read again by the plain reader below, whose only job is to name the
first bad entry (and which accepts what Python's json does: NaN, Infinity).
"""
from __future__ import annotations

import csv
import io
import json
import math
import warnings
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from pathlib import Path

import msgspec
import numpy as np

from benchmark.data.annotations import Annotations, read_json
from benchmark.errors import InputError, read_text
from benchmark.evaluation.segments import SegmentTable

CSV_COLUMNS = ("video-id", "t-start", "t-end", "label", "score")
FORMATS = ("json", "csv")


class PredictionError(InputError):
    """A malformed prediction file; the message is one line naming the file (and video or line)."""


def prediction_format(path: str | Path) -> str:
    return "csv" if Path(path).suffix.lower() == ".csv" else "json"


def load_predictions(path: str | Path, annotations: Annotations | None = None, require_label: bool = True,
                     classes=None) -> SegmentTable:
    """Read and check a prediction file (module doc). Proposal files have no labels: with
    ``require_label=False`` a missing label is an empty string. ``classes``: the names a label may
    take (e.g. the dataset's classes); None accepts any."""
    return read_prediction_columns(path, annotations, require_label, classes).table()


@dataclass(frozen=True)
class PredictionColumns:
    """A checked prediction file as columns, video and label factorised: ``videos[video_code]`` is each
    row's video (resolved), ``labels[label_code]`` its label. ``table(rows)`` builds the SegmentTable of
    some rows without materialising the strings of the others."""

    videos: np.ndarray
    video_code: np.ndarray
    t0: np.ndarray
    t1: np.ndarray
    labels: np.ndarray
    label_code: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.score)

    def table(self, rows: np.ndarray | None = None) -> SegmentTable:
        pick = (lambda column: column) if rows is None else (lambda column: column[rows])
        video_code, label_code = pick(self.video_code), pick(self.label_code)
        return SegmentTable(self.videos[video_code], pick(self.t0), pick(self.t1), self.labels[label_code],
                            pick(self.score), {"video": (self.videos, video_code), "label": (self.labels, label_code)})


def read_prediction_columns(path: str | Path, annotations: Annotations | None = None, require_label: bool = True,
                            classes=None) -> PredictionColumns:
    """:func:`load_predictions`, as columns."""
    path = Path(path)
    columns, where = (_read_csv if prediction_format(path) == "csv" else _read_json)(path, require_label)
    (videos, video_code), t0, t1, (labels, label_code), score = columns
    if annotations is not None:
        videos = np.array([annotations.resolve_video_id(v) or v for v in videos.tolist()], dtype=str)
    read = PredictionColumns(videos, video_code, t0, t1, labels, label_code, score)
    _check(read, path, where, require_label, classes)
    if len(read) == 0:
        warnings.warn(f"{path}: no predictions (every class scores AP 0)")
    return read


def _check(read: PredictionColumns, path: Path, where, require_label: bool, classes) -> None:
    """The row-level rules, as array operations; the first broken row is named via ``where(row)``."""
    for what, values in (("segment start", read.t0), ("segment end", read.t1), ("score", read.score)):
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise PredictionError(f"{path}: {where(bad[0])}: {what} is not a finite number: {float(values[bad[0]])!r}")
    bad = np.flatnonzero(read.t1 < read.t0)
    if len(bad):
        i = bad[0]
        raise PredictionError(f"{path}: {where(i)}: segment [{read.t0[i]:g}, {read.t1[i]:g}] has negative length")
    names, codes = read.labels, read.label_code  # the rules on labels, checked on the distinct names
    wrong = (names == "") if require_label else np.zeros(len(names), dtype=bool)
    if len(wrong) and wrong.any():
        row = np.flatnonzero(np.isin(codes, np.flatnonzero(wrong)))[0]
        raise PredictionError(f"{path}: {where(row)}: label must be a non-empty string, got ''")
    if classes is not None:
        unknown = np.flatnonzero(~np.isin(names, np.asarray(list(classes), dtype=str)) & (names != ""))
        if len(unknown):
            rows = np.flatnonzero(np.isin(codes, unknown))
            raise PredictionError(f"{path}: {where(rows[0])}: {len(unknown)} unknown class name(s), e.g. "
                                  f"{', '.join(map(repr, names[unknown][:3].tolist()))} ({len(rows)} predictions)")


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------

# gc=False: half a million small structs would otherwise trigger the cycle collector again and again
class _Prediction(msgspec.Struct, gc=False):
    segment: tuple[float, float]
    score: float
    label: str


class _Proposal(msgspec.Struct, gc=False):
    segment: tuple[float, float]
    score: float
    label: str = ""


class _Submission(msgspec.Struct, gc=False):
    results: dict[str, list[_Prediction]]


class _ProposalSubmission(msgspec.Struct, gc=False):
    results: dict[str, list[_Proposal]]


def _read_json(path: Path, require_label: bool):
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PredictionError(f"{path}: file not found") from None
    if not raw.strip():
        return _EMPTY, None
    try:
        results = msgspec.json.decode(raw, type=_Submission if require_label else _ProposalSubmission).results
    except msgspec.DecodeError as fast:
        _explain(path, require_label)  # raises with the video and entry named
        raise PredictionError(f"{path}: {fast}") from None  # refused by the fast decoder only
    counts = np.fromiter(map(len, results.values()), dtype=np.int64, count=len(results))
    entries = list(chain.from_iterable(results.values()))
    n = len(entries)  # the columns, gathered by C iterators (no per-row Python frame)
    segments = np.fromiter(chain.from_iterable(map(attrgetter("segment"), entries)), np.float64, 2 * n).reshape(n, 2)
    labels = list(map(attrgetter("label"), entries))
    names = list(dict.fromkeys(labels))
    codes = np.fromiter(map({name: k for k, name in enumerate(names)}.__getitem__, labels), np.int64, n)
    video_index = np.repeat(np.arange(len(counts)), counts)
    columns = ((np.array(list(results), dtype=str), video_index), segments[:, 0], segments[:, 1],
               (np.array(names, dtype=str), codes), np.fromiter(map(attrgetter("score"), entries), np.float64, n))
    starts = np.cumsum(counts) - counts
    return columns, lambda row: f"video {list(results)[video_index[row]]} (its prediction {row - starts[video_index[row]] + 1})"


def _explain(path: Path, require_label: bool) -> None:
    """Read the file with Python's json and raise a PredictionError at the first bad entry."""
    doc = read_json(path, PredictionError)
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
        raise PredictionError(f"{path}: expected a JSON object with a 'results' object (ActivityNet submission format)")
    for vid, entries in doc["results"].items():
        if not isinstance(entries, list):
            raise PredictionError(f"{path}: video {vid}: expected a list of predictions")
        for k, entry in enumerate(entries, 1):
            try:
                segment, score = entry["segment"], entry["score"]
                start, end = segment
                label = entry["label"] if require_label else entry.get("label", "")
            except (KeyError, TypeError, ValueError):
                needs = "segment [start, end], label and score" if require_label else "segment [start, end] and score"
                raise PredictionError(f"{path}: video {vid} (its prediction {k}): prediction without {needs}: "
                                      f"{entry!r}") from None
            for what, value in (("segment start", start), ("segment end", end), ("score", score)):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise PredictionError(f"{path}: video {vid} (its prediction {k}): {what} is not a finite number: "
                                          f"{value!r}")
            if not isinstance(label, str):
                raise PredictionError(f"{path}: video {vid} (its prediction {k}): label must be a string, got {label!r}")
            if require_label and not label:
                raise PredictionError(f"{path}: video {vid} (its prediction {k}): label must be a non-empty string, "
                                      f"got {label!r}")


# The columns a reader returns: (video names, video code per row), t0, t1, (label names, label code per row),
# score. Those of a file without predictions:
_NO_NAMES = (np.zeros(0, dtype=str), np.zeros(0, dtype=np.int64))
_EMPTY = (_NO_NAMES, np.zeros(0), np.zeros(0), _NO_NAMES, np.zeros(0))


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------

def _read_csv(path: Path, require_label: bool):
    import pandas as pd  # only CSV files pay for pandas

    text = read_text(path, PredictionError, "CSV file")  # missing, unreadable or binary: one line
    header = [c.strip() for c in next(csv.reader(io.StringIO(text)), [])]
    if not header:
        return _EMPTY, None
    missing = [c for c in CSV_COLUMNS if c not in header and (require_label or c != "label")]
    if missing:
        raise PredictionError(f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(header)}; "
                              f"expected {', '.join(CSV_COLUMNS)} in any order)")
    repeated = sorted(c for c in set(header) & set(CSV_COLUMNS) if header.count(c) > 1)
    if repeated:
        raise PredictionError(f"{path}: column(s) {', '.join(repeated)} appear twice in the header")
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)  # pandas only warns of a long first row
        try:
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False,
                                skipinitialspace=True, index_col=False)
        except pd.errors.ParserError as e:
            raise PredictionError(f"{path}: malformed CSV: {' '.join(str(e).split())}") from None
        except pd.errors.ParserWarning:
            raise PredictionError(f"{path}: malformed CSV: the first row has more fields than the header") from None
    frame.columns = header

    def where(row: int) -> str:
        return f"line {row + 2} (video {frame['video-id'].iloc[row]})"

    numbers = {}
    for column in ("t-start", "t-end", "score"):
        text = frame[column].str.strip()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.isnan(values) & ~text.str.lower().isin(["nan", "+nan", "-nan"]).to_numpy())
        if len(bad):
            raise PredictionError(f"{path}: {where(bad[0])}: {column} is not a number: {text.iloc[bad[0]]!r}")
        numbers[column] = values
    labels = frame["label"] if "label" in frame else pd.Series("", index=frame.index)

    def factors(column: pd.Series):
        codes, names = pd.factorize(column.str.strip())
        return np.asarray(names, dtype=str).reshape(-1), codes

    return (factors(frame["video-id"]), numbers["t-start"], numbers["t-end"], factors(labels), numbers["score"]), where


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def write_predictions(path: str | Path, detections: dict[str, list[dict]]) -> Path:
    """``{video: [{"segment", "label", "score"}]}`` as a file of :func:`load_predictions`' formats
    (by suffix); numbers are written so that they read back as the same floats."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if prediction_format(path) == "json":
        doc = {"version": "ZS-TAD", "results": detections, "external_data": {}}
        path.write_text(json.dumps(doc, default=lambda x: x.tolist()))
        return path
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(CSV_COLUMNS)
        for vid, entries in detections.items():
            out.writerows((vid, repr(float(d["segment"][0])), repr(float(d["segment"][1])), d.get("label", ""),
                           repr(float(d["score"]))) for d in entries)
    return path
