"""Time of frame-mAP per preset on a synthetic case of 300k prediction rows against ~30k GT rows.

    python -m benchmark.perf.bench_frame_map [--frames 12000] [--per-frame 25]

The case is seeded: 300 videos of 40 annotated frames, 1-3 people a frame (overlapping, as in a crowd),
each person one or two of 24 classes (one GT row per (box, label)); 25 prediction rows a frame, 60% near a
GT box with its label or another, 40% random boxes with random labels. Scores are continuous. Printed:
the metric alone (best of 3), wall and CPU seconds, per preset.
"""
from __future__ import annotations

import argparse

import numpy as np

from benchmark.evaluation.boxes import BoxTable
from benchmark.evaluation.frame_map import PRESETS, frame_map
from benchmark.perf.bench_evaluation import timed

N_CLASSES = 24
FRAMES_PER_VIDEO = 40


def synthetic_case(n_frames: int, per_frame: int, seed: int = 0) -> tuple[BoxTable, BoxTable]:
    rng = np.random.default_rng(seed)
    classes = np.array([f"class {c:02d}" for c in range(N_CLASSES)])
    videos = np.char.add("video", (np.arange(n_frames) // FRAMES_PER_VIDEO).astype(str))
    frames = np.arange(n_frames) % FRAMES_PER_VIDEO + 1
    people = rng.integers(1, 4, n_frames)
    person_frame = np.repeat(np.arange(n_frames), people)
    xy = rng.uniform(0, 200, (len(person_frame), 2))
    wh = rng.uniform(30, 120, (len(person_frame), 2))
    person_box = np.hstack([xy, xy + wh])
    labels_per_person = rng.integers(1, 3, len(person_frame))
    row_person = np.repeat(np.arange(len(person_frame)), labels_per_person)
    row_label = rng.integers(N_CLASSES, size=len(row_person))
    gt = BoxTable(videos[person_frame[row_person]], frames[person_frame[row_person]], person_box[row_person],
                  classes[row_label])

    pred_frame = np.repeat(np.arange(n_frames), per_frame)
    n = len(pred_frame)
    near = rng.random(n) < 0.6
    first_row = np.searchsorted(person_frame[row_person], pred_frame)
    rows_in_frame = np.searchsorted(person_frame[row_person], pred_frame, side="right") - first_row
    anchor = first_row + (rng.random(n) * rows_in_frame).astype(int)
    jitter = rng.normal(0, 12, (n, 4))
    random_xy = rng.uniform(0, 200, (n, 2))
    random_box = np.hstack([random_xy, random_xy + rng.uniform(30, 120, (n, 2))])
    box = np.where(near[:, None], person_box[row_person[anchor]] + jitter, random_box)
    box = np.hstack([np.minimum(box[:, :2], box[:, 2:]), np.maximum(box[:, :2], box[:, 2:])])
    keep_label = near & (rng.random(n) < 0.5)
    label = np.where(keep_label, row_label[anchor], rng.integers(N_CLASSES, size=n))
    pred = BoxTable(videos[pred_frame], frames[pred_frame], box, classes[label], rng.random(n))
    return gt, pred


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12000)
    parser.add_argument("--per-frame", type=int, default=25)
    args = parser.parse_args(argv)
    gt, pred = synthetic_case(args.frames, args.per_frame)
    print(f"case: {args.frames} frames, {len(gt)} GT rows, {len(pred)} prediction rows, {N_CLASSES} classes")
    for preset in PRESETS:
        seconds, cpu, result = timed(lambda: frame_map(gt, pred, preset), repeats=3)
        print(f"{preset:>15}: {seconds:.3f} s wall, {cpu:.3f} s CPU (metric only, best of 3); mAP@0.5 {result.map:.4f}")


if __name__ == "__main__":
    main()
