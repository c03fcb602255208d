"""The `evaluate`, `proposal-recall` and `evaluate-boxes` commands (registered into the main `python -m benchmark` CLI).

The first two read the GT through the annotation readers (any supported format) and predictions in the
ActivityNet submission format; `evaluate-boxes` reads box-level GT (benchmark.data.box_annotations) and a
CSV of box detections (load_box_predictions). Errors in the inputs are InputErrors: one line on stderr, exit code 2
(``benchmark.errors.run_command``).
This module must not import torch: evaluating a file should not need the model stack.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from tabulate import tabulate

from benchmark.data.annotations import Annotations, load_annotations
from benchmark.errors import InputError, error_line
from benchmark.evaluation.boxes import BoxTable
from benchmark.evaluation.frame_map import PRESETS, frame_map
from benchmark.evaluation.detection import ACTIVITYNET_TIOU, THUMOS_TIOU, evaluate_detection, parse_tiou, tiou_key
from benchmark.evaluation.predictions import load_predictions
from benchmark.evaluation.segments import SegmentTable

TIOU_HELP = (
    "tIoU thresholds: start:stop:count (inclusive, e.g. 0.5:0.95:10) or a list (e.g. 0.3,0.4,0.5); "
    "default 0.5:0.95:10 for ActivityNet annotation formats, 0.3:0.7:5 for THUMOS14 ones"
)


def register(subparsers) -> None:
    """Add the `evaluate` and `proposal-recall` subcommands to an argparse subparsers object.

    Each sets ``func``: the caller runs ``sys.exit(args.func(args))``; the return value is the exit code.
    """
    evaluate = subparsers.add_parser(
        "evaluate", help="detection mAP of a prediction file (official ActivityNet semantics)",
        description="Detection mAP per tIoU threshold and its average, with the semantics of the official "
                    "ActivityNet eval_detection.py. Predictions on videos without GT of their class are false "
                    "positives; predicted labels without GT in the evaluated set are ignored and counted.",
    )
    _common_arguments(evaluate, "prediction file: {\"results\": {video: [{\"segment\": [s, e], \"label\": name, \"score\": x}]}}")
    evaluate.add_argument("--videos", help="evaluate only these videos (one id per line): GT and predictions elsewhere are left out")
    evaluate.set_defaults(func=run_evaluate)

    recall = subparsers.add_parser(
        "proposal-recall", help="average recall vs average number of proposals (official ActivityNet semantics)",
        description="Class-agnostic average recall at AN = 1, 5, 10, 50, 100 (averaged over the tIoU set) and the "
                    "area under the AR-AN curve (x100), with the semantics of the official eval_proposal.py.",
    )
    _common_arguments(recall, "proposal file: {\"results\": {video: [{\"segment\": [s, e], \"score\": x}]}} (labels ignored)")
    recall.add_argument("--max-avg-proposals", type=int, default=100, metavar="N",
                        help="average number of proposals per video at the end of the AR-AN curve (default 100)")
    recall.set_defaults(func=run_proposal_recall)

    boxes = subparsers.add_parser(
        "evaluate-boxes", help="frame-mAP of box detections (spatio-temporal), with an official evaluator's semantics",
        description="Frame-mAP of per-frame box detections against box-level GT (ACT pkl, UCF pyannot, ST-CLIP "
                    "JSON, AVA CSV), with the semantics of one official evaluator (benchmark/evaluation/frame_map.py).",
    )
    boxes.add_argument("--gt", required=True, help="box-level ground-truth file (any supported format)")
    boxes.add_argument("--pred", required=True,
                       help="detections: a CSV with header video,frame,x1,y1,x2,y2,label,score (any column order), or "
                            "the AVA layout without header: video_id,timestamp,x1,y1,x2,y2,action_id,score")
    boxes.add_argument("--preset", default="multisports", choices=list(PRESETS),
                       help="the evaluator to reproduce (default multisports, as MultiSports/iCLIP/HIT)")
    boxes.add_argument("--classes", help="the evaluated classes, one name per line (a split's unseen classes; "
                                         "AVA: the label map's); act averages over all of them")
    boxes.add_argument("--iou", type=float, default=0.5, help="IoU threshold (>=; default 0.5)")
    boxes.add_argument("--split", type=int, help="evaluate only the test videos of this official split (1-based; ACT layout)")
    boxes.add_argument("--excluded", help="AVA presets: a CSV of video_id,timestamp keys left out of GT and detections")
    boxes.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    boxes.set_defaults(func=run_evaluate_boxes)


def _common_arguments(parser: argparse.ArgumentParser, pred_help: str) -> None:
    parser.add_argument("--gt", required=True, help="ground-truth annotation file (any supported format)")
    parser.add_argument("--pred", required=True, help=pred_help)
    parser.add_argument("--subset", required=True, help="GT subset to evaluate, e.g. validation (ActivityNet) or Test (THUMOS14)")
    parser.add_argument("--tiou", help=TIOU_HELP)
    parser.add_argument("--classes", help="evaluate only these classes (one name per line), e.g. a split's unseen classes")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run_evaluate(args: argparse.Namespace) -> int:
    annotations, thresholds, gt = _inputs(args)
    pred = load_predictions(args.pred, annotations)
    videos = None if args.videos is None else _video_list(args.videos, annotations)
    result = evaluate_detection(gt, pred, thresholds, videos=videos)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    rows = [[tiou_key(t), 100 * m] for t, m in zip(result.tiou, result.map)] + [["Avg", 100 * result.average]]
    print(tabulate(rows, headers=["tIoU", "mAP (%)"], floatfmt=".2f"))
    print(_meta_line(result.meta))
    return 0


def run_proposal_recall(args: argparse.Namespace) -> int:
    from benchmark.evaluation.proposals import evaluate_proposals  # pandas: not on the path of `evaluate`

    annotations, thresholds, gt = _inputs(args)
    proposals = load_predictions(args.pred, annotations, require_label=False)
    result = evaluate_proposals(gt, proposals, thresholds, max_avg_nr_proposals=args.max_avg_proposals)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    rows = [[f"AR@{an}", 100 * ar] for an, ar in result.ar_at.items()] + [["AUC", result.auc]]
    print(tabulate(rows, headers=["", "(%)"], floatfmt=".2f"))
    print(_meta_line(result.meta))
    return 0


def run_evaluate_boxes(args: argparse.Namespace) -> int:
    from benchmark.data.box_annotations import load_box_annotations  # pandas / pickle readers: not on `evaluate`'s path

    if not 0 < args.iou <= 1:
        raise InputError(f"--iou {args.iou}: the threshold must lie in (0, 1]")
    annotations = load_box_annotations(args.gt)
    gt = annotations.gt
    if args.split is not None:
        if not 1 <= args.split <= len(annotations.splits):
            raise InputError(f"--split {args.split}: {annotations.source} has {len(annotations.splits)} official split(s)")
        gt = gt.select(np.isin(gt.video, list(annotations.splits[args.split - 1][1])))
    pred = load_box_predictions(args.pred, annotations.labels)
    classes = None if args.classes is None else _box_class_list(args.classes, annotations.labels)
    keys = annotations.keyframes if args.preset == "ava_official" else None
    excluded = None if args.excluded is None else _excluded_keys(args.excluded)
    if excluded is not None and not PRESETS[args.preset].ava:
        raise InputError(f"--excluded applies to the AVA presets, not {args.preset}")
    result = frame_map(gt, pred, args.preset, args.iou, classes, keys, excluded)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    rows = [[name, 100 * ap] for name, ap in result.per_class.items()] + [["mAP", 100 * result.map]]
    print(tabulate(rows, headers=["class", f"AP@{args.iou:g} (%)"], floatfmt=".2f"))
    print(f"preset: {args.preset}; " + _meta_line(result.meta))
    return 0


BOX_COLUMNS = ("video", "frame", "x1", "y1", "x2", "y2", "label", "score")


def load_box_predictions(path: str, labels) -> BoxTable:
    """Box detections from a CSV: with a header naming the columns of BOX_COLUMNS (any order, more allowed), or
    in the AVA layout without header (video_id, timestamp, x1, y1, x2, y2, action_id, score). An AVA action id is
    the GT's label itself when the GT labels are ids (AVA CSV), else the id-th label (1-based). A missing
    column, an empty or non-numeric value, a non-integer frame, x2 < x1 or y2 < y1, or a label that is not
    one of ``labels`` is an InputError naming the file and its line."""
    import pandas as pd

    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().strip().split(",")
    header = {"video", "score"} <= {c.strip() for c in first}
    try:
        table = pd.read_csv(path, header=0 if header else None, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable CSV ({error_line(e)})") from None
    if header:
        table.columns = [str(c).strip() for c in table.columns]
        missing = [c for c in BOX_COLUMNS if c not in table.columns]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)} (need {','.join(BOX_COLUMNS)})")
        table = table[list(BOX_COLUMNS)]
    elif table.shape[1] != len(BOX_COLUMNS):
        raise InputError(f"{path}: line 1: expected a header naming {','.join(BOX_COLUMNS)} or the 8 AVA columns "
                         f"video_id,timestamp,x1,y1,x2,y2,action_id,score; got {table.shape[1]} columns")
    table.columns = list(BOX_COLUMNS)
    line = np.arange(len(table)) + (2 if header else 1)  # the file line of each row

    def fail(bad: np.ndarray, what):
        """An InputError at the first bad row; ``what(i)`` describes row i."""
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"{path}: line {line[i]}: {what(i)} ({int(bad.sum())} row(s) like it)")

    numbers = {c: pd.to_numeric(table[c], errors="coerce").to_numpy(np.float64) for c in BOX_COLUMNS[1:6] + ("score",)}
    for column, values in numbers.items():
        fail(~np.isfinite(values), lambda i: f"{column} {table[column].iat[i]!r} is not a number")
    fail(numbers["frame"] != np.round(numbers["frame"]), lambda i: "the frame is not an integer")
    fail(numbers["x2"] < numbers["x1"], lambda i: "x2 < x1")
    fail(numbers["y2"] < numbers["y1"], lambda i: "y2 < y1")
    video = table["video"].str.strip().to_numpy(dtype=str)
    fail(video == "", lambda i: "empty video id")
    label = table["label"].str.strip().to_numpy(dtype=str)
    labels = np.asarray(list(labels), dtype=str)
    if not header and not all(name.isdigit() for name in labels.tolist()):
        ids = pd.to_numeric(pd.Series(label), errors="coerce").to_numpy(np.float64)
        fail(~((ids >= 1) & (ids <= len(labels)) & (ids == np.round(ids))),
             lambda i: f"action id {str(label[i])!r} is not in 1..{len(labels)}")
        label = labels[ids.astype(np.int64) - 1]
    elif not header:
        label = np.array([str(int(x)) if x.isdigit() else x for x in label.tolist()], dtype=str)  # "012" -> "12"
    fail(~np.isin(label, labels), lambda i: f"unknown class {str(label[i])!r}")
    box = np.stack([numbers[c] for c in ("x1", "y1", "x2", "y2")], axis=1)
    return BoxTable(video, numbers["frame"].astype(np.int64), box, label, numbers["score"])


def _box_class_list(path: str, labels) -> list[str]:
    names = _lines(path)
    unknown = [n for n in names if n not in set(labels)]
    if unknown:
        raise InputError(f"{path}: {len(unknown)} unknown class name(s) (not in the GT's labels): {', '.join(map(repr, unknown[:5]))}")
    return names


def _excluded_keys(path: str) -> np.ndarray:
    """AVA's excluded timestamps: ``video_id,timestamp`` lines -> a structured array (video, frame)."""
    keys = []
    for number, line in enumerate(_lines(path), 1):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[1].isdigit():
            raise InputError(f"{path}: line {number}: expected video_id,timestamp (whole seconds), got {line!r}")
        keys.append((parts[0], int(parts[1])))
    out = np.empty(len(keys), dtype=[("video", object), ("frame", np.int64)])
    out["video"], out["frame"] = [k[0] for k in keys], [k[1] for k in keys]
    return out


def _inputs(args) -> tuple[Annotations, np.ndarray, SegmentTable]:
    """The annotations, the tIoU set (default by dataset) and the evaluated GT table."""
    annotations = load_annotations(args.gt)
    if args.tiou:
        thresholds = parse_tiou(args.tiou)
    else:
        thresholds = ACTIVITYNET_TIOU if annotations.format in ("activitynet", "bmn") else THUMOS_TIOU
    classes = None if args.classes is None else _class_list(args.classes, annotations)
    return annotations, thresholds, SegmentTable.ground_truth(annotations, args.subset, classes=classes)


def _class_list(path: str, annotations: Annotations) -> list[str]:
    names = _lines(path)
    unknown = [n for n in names if n not in annotations.classes]
    if unknown:
        raise InputError(f"{path}: {len(unknown)} unknown class name(s) (not in {annotations.source}): {', '.join(map(repr, unknown[:5]))}")
    return names


def _video_list(path: str, annotations: Annotations) -> list[str]:
    ids = [(v, annotations.resolve_video_id(v)) for v in _lines(path)]
    unknown = [written for written, resolved in ids if resolved is None]
    if unknown:
        raise InputError(f"{path}: {len(unknown)} unknown video id(s) (not in {annotations.source}): {', '.join(unknown[:5])}")
    return [resolved for _, resolved in ids]


def _lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None


def _meta_line(meta: dict) -> str:
    return "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in meta.items())

