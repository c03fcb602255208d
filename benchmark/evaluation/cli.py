"""The `evaluate` and `proposal-recall` commands (registered into the main `python -m benchmark` CLI).

Both read the GT through the annotation readers (any supported format) and predictions in the
ActivityNet submission format. Errors in the inputs are InputErrors: one line on stderr, exit code 2
(``benchmark.errors.run_command``).
This module must not import torch: evaluating a file should not need the model stack.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from tabulate import tabulate

from benchmark.data.annotations import Annotations, load_annotations
from benchmark.errors import InputError
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

