"""Time of ``python -m benchmark score`` on an ActivityNet-scale predictions folder.

    python -m benchmark.perf.bench_score [--shared ../shared/data] [--per-video 100] [--format json]

The real ActivityNet v1.3 annotations and the published class splits (``--shared``: the folder of
SOURCES.md), and a generated folder of 20 files (10 splits of 75/25 and of 50/50), each with
``--per-video`` predictions on every one of the 4,728 validation videos of BMN's annotation file (492,600 rows a file, as a
method that predicts every class everywhere writes them; most fall outside a split's scored set and
are left out, counted). Half of them sit near a GT instance with its label, half are random. Printed:
the whole process (start, imports, 20 files read and checked, each scored as the suite scores its
jobs: mAP, GT-labels oracle, external-classifier fusion; records written), without and with
``--diagnostics`` (DETAD's summaries too), in one run.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmark.data.annotations import load_annotations
from benchmark.evaluation.predictions import write_predictions
from benchmark.evaluation.segments import SegmentTable
from benchmark.harness.external import SETTING_DIRS
from benchmark.perf.bench_evaluation import predictions_around

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="the real data folder (default ../shared/data)")
    parser.add_argument("--per-video", type=int, default=100)
    parser.add_argument("--format", choices=("json", "csv"), default="json")
    parser.add_argument("--folder", type=Path, help="write the files here and keep them (default: a temporary folder)")
    args = parser.parse_args(argv)

    annotations_path = args.shared / "activitynet" / "anet_anno_action.json"  # BMN format: every video has a duration
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        annotations = load_annotations(annotations_path)
    gt = SegmentTable.ground_truth(annotations, "validation")
    videos = np.unique(gt.video)
    last_end = {v: max(i.end for i in annotations.videos[v].instances) for v in videos.tolist()}
    duration = np.array([annotations.videos[v].duration or last_end[v] for v in videos.tolist()])  # 198 lack one
    classes = np.array(annotations.classes)
    with tempfile.TemporaryDirectory() as folder:
        root = args.folder or Path(folder)
        rng = np.random.default_rng(0)
        for setting in ("75/25", "50/50"):
            for index in range(10):
                path = root / "predictions" / SETTING_DIRS[setting] / f"split_{index}.{args.format}"
                pred = predictions_around(gt, videos, duration, classes, args.per_video, rng)
                if not path.exists():  # a kept folder is reused
                    write_predictions(path, pred.to_detections())
        size = sum(p.stat().st_size for p in (root / "predictions").rglob("*.*"))
        command = [sys.executable, "-m", "benchmark", "score", "--suite", "zs_activitynet", "--name", "bench",
                   "--predictions", str(root / "predictions"), "--annotations", str(annotations_path),
                   "--split-lists", str(args.shared / "splits"), "--external-scores",
                   str(args.shared / "activitynet" / "stale_best_score.json"), "--settings", "75/25", "50/50",
                   "--no-report"]
        print(f"case: 20 files ({args.format}, {size / 2**20:.0f} MiB), {len(videos) * args.per_video} predictions each "
              f"on {len(videos)} ActivityNet validation videos, published splits")
        for extra in ([], ["--diagnostics"]):
            start = time.perf_counter()
            done = subprocess.run(command + extra + ["--results-dir", str(Path(folder) / f"results{len(extra)}")],
                                  capture_output=True, text=True)  # a fresh store each time
            seconds = time.perf_counter() - start
            if done.returncode:
                sys.exit(f"{' '.join(command + extra)}\nexited with {done.returncode}: {done.stderr.strip()}")
            print(f"python -m benchmark score{' ' if extra else ''}{' '.join(extra)}, whole process: {seconds:.1f} s wall "
                  f"({seconds / 20:.2f} s a file); {done.stdout.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
