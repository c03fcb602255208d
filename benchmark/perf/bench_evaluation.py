"""Time and peak memory of the evaluator on an ActivityNet-validation-sized case.

    python -m benchmark.perf.bench_evaluation [--videos 4926] [--per-video 100] [--skip-reference]

The case is synthetic and seeded: 4,926 videos with ~1.55 GT instances each over 200 classes (the
shape of ActivityNet v1.3 validation), 100 predictions per video (≈490k), half of them labelled with
the video's GT class and placed near a GT instance, half random. Scores are continuous (no ties).

Printed: the metric alone (in this process); then, with the case written as files (ActivityNet GT
JSON, submission JSON), the whole ``python -m benchmark evaluate`` process (start, imports, parsing,
checks, metric, output; best of 3) and, for comparison, the whole process of the independent slow
reference of tests/test_detection.py: the official per-prediction loop transcribed in plain Python
(json.load, then the loop; several times faster than the official pandas code). The two must agree;
the ratio is measured in this one run, since this machine's speed drifts.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from benchmark.evaluation.detection import ACTIVITYNET_TIOU, evaluate_detection
from benchmark.evaluation.proposals import evaluate_proposals
from benchmark.evaluation.segments import SegmentTable

N_CLASSES = 200
GT_PER_VIDEO = 7654 / 4926  # ActivityNet v1.3 validation


def synthetic_case(n_videos: int, per_video: int, seed: int = 0) -> tuple[SegmentTable, SegmentTable]:
    rng = np.random.default_rng(seed)
    classes = np.array([f"class {c:03d}" for c in range(N_CLASSES)])
    duration = rng.uniform(30, 240, n_videos)
    video_class = rng.integers(N_CLASSES, size=n_videos)  # ActivityNet videos hold one class
    n_gt = 1 + rng.poisson(GT_PER_VIDEO - 1, n_videos)
    gt_video = np.repeat(np.arange(n_videos), n_gt)
    length = rng.uniform(0.05, 0.6, len(gt_video)) * duration[gt_video]
    gt_t0 = rng.uniform(0, 1, len(gt_video)) * (duration[gt_video] - length)
    videos = np.char.add("vid", np.arange(n_videos).astype(str))
    gt = SegmentTable(videos[gt_video], gt_t0, gt_t0 + length, classes[video_class[gt_video]])
    return gt, predictions_around(gt, videos, duration, classes, per_video, rng)


def predictions_around(gt: SegmentTable, videos: np.ndarray, duration: np.ndarray, classes: np.ndarray, per_video: int,
                       rng: np.random.Generator) -> SegmentTable:
    """``per_video`` predictions on each of ``videos`` (every one with GT): half labelled with a GT class of the
    video and placed near one of its GT instances, half with a random class anywhere. Continuous scores."""
    order = np.argsort(gt.video, kind="stable")
    first_gt = np.searchsorted(gt.video[order], videos, side="left")
    n_gt = np.searchsorted(gt.video[order], videos, side="right") - first_gt
    pred_video = np.repeat(np.arange(len(videos)), per_video)
    n = len(pred_video)
    near_gt = rng.random(n) < 0.5
    anchor = order[first_gt[pred_video] + (rng.random(n) * n_gt[pred_video]).astype(int)]
    jitter = rng.normal(0, 0.15, (n, 2)) * (gt.t1 - gt.t0)[anchor, None]
    near = np.sort(np.stack([gt.t0[anchor], gt.t1[anchor]], 1) + jitter, axis=1)
    random_start = rng.uniform(0, 0.9, n) * duration[pred_video]
    random = np.stack([random_start, random_start + rng.uniform(0.02, 0.5, n) * duration[pred_video]], 1)
    segments = np.where(near_gt[:, None], near, random)
    label = np.where(near_gt, gt.label[anchor], classes[rng.integers(len(classes), size=n)])
    return SegmentTable(videos[pred_video], segments[:, 0], segments[:, 1], label, rng.random(n))


def timed(fn, repeats: int = 1):
    """Best wall-clock and CPU seconds over ``repeats`` runs (CPU time is what other jobs on a
    shared machine cannot inflate), and the result."""
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    return wall, cpu, result


def peak_memory_mb(fn) -> float:
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def load_reference():
    """The slow reference lives with the tests, so that it stays independent of the code it checks."""
    path = Path(__file__).resolve().parents[2] / "tests" / "test_detection.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("reference_detection", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_detection_ap


def rows(table: SegmentTable):
    columns = [table.video.tolist(), table.t0.tolist(), table.t1.tolist(), table.label.tolist()]
    if table.score is not None:
        columns.append(table.score.tolist())
    return list(zip(*columns))


def write_case(gt: SegmentTable, pred: SegmentTable, folder: Path) -> tuple[Path, Path]:
    """The case as files: ActivityNet GT (every video in the validation subset) and a submission."""
    database: dict = {}
    for row in rows(gt):
        entry = database.setdefault(row[0], {"subset": "validation", "duration": 300.0, "annotations": []})
        entry["annotations"].append({"segment": [row[1], row[2]], "label": row[3]})
    results: dict = {}
    for row in rows(pred):
        results.setdefault(row[0], []).append({"segment": [row[1], row[2]], "label": row[3], "score": row[4]})
    gt_path, pred_path = folder / "gt.json", folder / "pred.json"
    gt_path.write_text(json.dumps({"version": "ActivityNet v1.3 shape", "database": database, "taxonomy": []}))
    pred_path.write_text(json.dumps({"version": "bench", "results": results, "external_data": {}}))
    return gt_path, pred_path


def process_seconds(command: list[str], repeats: int) -> tuple[float, str]:
    """Best wall-clock seconds of a whole process over ``repeats`` runs, and its last output."""
    best, out = float("inf"), ""
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        best = min(best, time.perf_counter() - start)
    return best, out


def reference_process(gt_path: str, pred_path: str) -> None:
    """The slow reference as a whole process: read both files with json, run the official loop, print Avg."""
    reference = load_reference()
    database = json.loads(Path(gt_path).read_text())["database"]
    gt_rows = [(vid, a["segment"][0], a["segment"][1], a["label"]) for vid, v in database.items()
               for a in v["annotations"]]
    results = json.loads(Path(pred_path).read_text())["results"]
    pred_rows = [(vid, p["segment"][0], p["segment"][1], p["label"], p["score"]) for vid, ps in results.items() for p in ps]
    ap = reference(gt_rows, pred_rows, list(ACTIVITYNET_TIOU))
    print(json.dumps({"average": float(np.mean([np.mean(v) for v in ap.values()]))}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4926)
    parser.add_argument("--per-video", type=int, default=100)
    parser.add_argument("--skip-reference", action="store_true", help="do not run the slow reference (~20 s)")
    parser.add_argument("--reference-process", nargs=2, metavar=("GT", "PRED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reference_process:
        return reference_process(*args.reference_process)

    gt, pred = synthetic_case(args.videos, args.per_video)
    print(f"case: {args.videos} videos, {len(gt)} GT instances, {len(pred)} predictions, {N_CLASSES} classes, "
          f"{len(ACTIVITYNET_TIOU)} tIoU thresholds")
    seconds, cpu, result = timed(lambda: evaluate_detection(gt, pred, ACTIVITYNET_TIOU), repeats=3)
    memory = peak_memory_mb(lambda: evaluate_detection(gt, pred, ACTIVITYNET_TIOU))
    print(f"detection mAP (metric only): {seconds:.3f} s wall, {cpu:.3f} s CPU (best of 3), peak memory {memory:.0f} MiB "
          f"(tracemalloc); average mAP {result.average:.4f}")
    proposal_seconds, proposal_cpu, proposals = timed(lambda: evaluate_proposals(gt, pred, ACTIVITYNET_TIOU))
    print(f"proposal AR-AN (metric only): {proposal_seconds:.3f} s wall, {proposal_cpu:.3f} s CPU; "
          f"AR@100 {proposals.ar_at[100]:.4f}, AUC {proposals.auc:.2f}")

    with tempfile.TemporaryDirectory() as folder:
        gt_path, pred_path = write_case(gt, pred, Path(folder))
        command = [sys.executable, "-m", "benchmark", "evaluate", "--gt", str(gt_path), "--pred", str(pred_path),
                   "--subset", "validation"]  # as a user runs it: the table output
        whole, out = process_seconds(command, repeats=3)
        average = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Avg"))) / 100
        print(f"python -m benchmark evaluate, whole process: {whole:.2f} s wall (best of 3; "
              f"{pred_path.stat().st_size / 2**20:.0f} MiB of predictions); average mAP {average:.4f}")
        if args.skip_reference or load_reference() is None:
            return
        slow, out = process_seconds([sys.executable, "-m", "benchmark.perf.bench_evaluation", "--reference-process",
                                     str(gt_path), str(pred_path)], repeats=1)
        slow_average = json.loads(out)["average"]
        print(f"slow reference (plain-Python official loop), whole process: {slow:.2f} s wall, {slow / whole:.1f}x the "
              f"evaluate process; average mAP {slow_average:.4f} (evaluate prints 2 decimals of percent: "
              f"{100 * average:.2f} vs {100 * slow_average:.2f})")


if __name__ == "__main__":
    main()
