"""Time and peak memory of the evaluator on an ActivityNet-validation-sized case.

    python -m benchmark.perf.bench_evaluation [--videos 4926] [--per-video 100] [--skip-reference]

The case is synthetic and seeded: 4,926 videos with ~1.55 GT instances each over 200 classes (the
shape of ActivityNet v1.3 validation), 100 predictions per video (≈490k), half of them labelled with
the video's GT class and placed near a GT instance, half random. Scores are continuous (no ties).

For comparison, the independent slow reference of tests/test_detection.py (the official
per-prediction loop, in plain Python rather than the official pandas code, so several times faster
than the official evaluator) runs once on the same case, and the two must agree.
"""
from __future__ import annotations

import argparse
import importlib.util
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
    gt = SegmentTable(
        np.char.add("vid", gt_video.astype(str)), gt_t0, gt_t0 + length, classes[video_class[gt_video]],
    )

    pred_video = np.repeat(np.arange(n_videos), per_video)
    n = len(pred_video)
    near_gt = rng.random(n) < 0.5
    # a GT instance of the same video for the "near GT" half
    first_gt = np.r_[0, np.cumsum(n_gt)[:-1]]
    anchor = first_gt[pred_video] + (rng.random(n) * n_gt[pred_video]).astype(int)
    jitter = rng.normal(0, 0.15, (n, 2)) * (gt.t1 - gt.t0)[anchor, None]
    near = np.sort(np.stack([gt.t0[anchor], gt.t1[anchor]], 1) + jitter, axis=1)
    random_start = rng.uniform(0, 0.9, n) * duration[pred_video]
    random = np.stack([random_start, random_start + rng.uniform(0.02, 0.5, n) * duration[pred_video]], 1)
    segments = np.where(near_gt[:, None], near, random)
    label = np.where(near_gt, video_class[pred_video], rng.integers(N_CLASSES, size=n))
    pred = SegmentTable(
        np.char.add("vid", pred_video.astype(str)), segments[:, 0], segments[:, 1], classes[label], rng.random(n),
    )
    return gt, pred


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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4926)
    parser.add_argument("--per-video", type=int, default=100)
    parser.add_argument("--skip-reference", action="store_true", help="do not run the slow reference (a few seconds)")
    args = parser.parse_args(argv)

    gt, pred = synthetic_case(args.videos, args.per_video)
    print(f"case: {args.videos} videos, {len(gt)} GT instances, {len(pred)} predictions, {N_CLASSES} classes, "
          f"{len(ACTIVITYNET_TIOU)} tIoU thresholds")
    seconds, cpu, result = timed(lambda: evaluate_detection(gt, pred, ACTIVITYNET_TIOU), repeats=3)
    memory = peak_memory_mb(lambda: evaluate_detection(gt, pred, ACTIVITYNET_TIOU))
    print(f"detection mAP: {seconds:.3f} s wall, {cpu:.3f} s CPU (best of 3), peak memory {memory:.0f} MiB "
          f"(tracemalloc); average mAP {result.average:.4f}")
    proposal_seconds, proposal_cpu, proposals = timed(lambda: evaluate_proposals(gt, pred, ACTIVITYNET_TIOU))
    print(f"proposal AR-AN: {proposal_seconds:.3f} s wall, {proposal_cpu:.3f} s CPU; "
          f"AR@100 {proposals.ar_at[100]:.4f}, AUC {proposals.auc:.2f}")

    reference = None if args.skip_reference else load_reference()
    if reference is None:
        return
    _, slow_seconds, slow = timed(lambda: reference(rows(gt), rows(pred), list(ACTIVITYNET_TIOU)))
    worst = max(float(np.max(np.abs(result.per_class[name] - np.array(ap)))) for name, ap in slow.items())
    print(f"slow reference (plain-Python official loop): {slow_seconds:.2f} s CPU ({slow_seconds / cpu:.1f}x slower); "
          f"largest per-class AP difference {worst:.1e}")

if __name__ == "__main__":
    main()
