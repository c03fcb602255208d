"""Cold and warm load time of an ActivityNet-scale feature directory.

    python -m benchmark.perf.bench_features [--videos 14500] [--dim 512] [--T 100] [--jobs 1 2] [--out DIR]

Generates (once; reused when present) a directory of ``v_<id>.npy`` files shaped like the CLIP
release, ``[T_raw, dim]`` float32 with T_raw uniform in 100..200 (mean ≈ 150), then loads the whole
split to ``[N, T, dim]`` in a fresh process per phase:

- cold: empty harness cache, every raw file read and rescaled (once per ``--jobs`` value);
- warm: the cache written by the cold run is loaded instead;
- run scan, cold / rerun: ``scan_features`` over every video, as a run's pre-run check does (the
  rerun finds its cache by the files' fingerprint: one stat per file, nothing read);
- a job's rows: one 75/25-like training view (a random 3/4 of the videos) taken from the scan,
  which is what each job does instead of reading and rescaling the files itself.

"Cold" means an empty *harness* cache: the raw files may still be in the OS page cache (just
written, and dropping it needs root), so cold times on a fresh machine with a slow disk are longer.
Peak RSS is that phase's process maximum; the 1-minute load average at the end of each phase says
how busy the machine was. The cold time includes writing the cache (one ≈3 GB ``.npy``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from benchmark.data.features import NpyDirStore, ScannedFeatures, load_features, scan_features

T_RAW_RANGE = (100, 200)


def generate(root: Path, videos: int, dim: int, seed: int = 0) -> Path:
    """Write the feature directory unless a complete one with the same shape is already there."""
    spec = {"videos": videos, "dim": dim, "t_raw": T_RAW_RANGE, "seed": seed}
    feats = root / f"anet_clip_like_{videos}x{dim}"
    done = feats / "COMPLETE.json"
    if done.is_file() and json.loads(done.read_text()) == json.loads(json.dumps(spec)):
        print(f"reusing {feats}")
        return feats
    shutil.rmtree(feats, ignore_errors=True)
    feats.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for i in range(videos):
        t_raw = int(rng.integers(T_RAW_RANGE[0], T_RAW_RANGE[1] + 1))
        np.save(feats / f"v_{i:011d}.npy", rng.standard_normal((t_raw, dim), dtype=np.float32))
    done.write_text(json.dumps(spec))
    print(f"generated {videos} files in {feats} ({time.perf_counter() - t0:.0f} s)")
    return feats


def _phase(feats: str, cache: str, T: int, jobs: int) -> dict:
    """Runs in a fresh process, so peak RSS is this phase's alone."""
    t0 = time.perf_counter()
    store = NpyDirStore(feats)
    x = load_features(store, store.ids(), T, cache_dir=cache, n_jobs=jobs)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "shape": x.shape, "gb": x.nbytes / 1e9,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
            "load_avg": os.getloadavg()[0]}  # other work on the machine inflates the times


def _scan_phase(feats: str, cache: str, T: int, take: bool) -> dict:
    t0 = time.perf_counter()
    store = NpyDirStore(feats)
    path = scan_features(store, store.ids(), T, cache)
    if take:  # time only the job's part: open the scan and copy out its rows
        ids = list(np.random.default_rng(0).permutation(store.ids())[: len(store) * 3 // 4])
        t0 = time.perf_counter()
        x = ScannedFeatures(path).take(ids)
    else:
        x = np.load(path, mmap_mode="r")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "shape": x.shape, "gb": x.nbytes / 1e9,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
            "load_avg": os.getloadavg()[0]}


def run_phase(feats: Path, cache: Path, T: int, jobs: int, phase=_phase) -> dict:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(phase, str(feats), str(cache), T, jobs).result()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=14500)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--jobs", type=int, nargs="+", default=[1], help="reader threads; one cold run per value")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "zstad_bench_features")
    args = p.parse_args(argv)

    feats = generate(args.out, args.videos, args.dim)
    cache = args.out / "cache"
    rows = []
    for jobs in args.jobs:
        shutil.rmtree(cache, ignore_errors=True)
        rows.append((f"cold (empty harness cache), {jobs} thread{'s' if jobs > 1 else ''}", run_phase(feats, cache, args.T, jobs)))
    rows.append(("warm (cache hit)", run_phase(feats, cache, args.T, args.jobs[-1])))
    shutil.rmtree(cache, ignore_errors=True)
    rows.append(("run scan, cold (empty cache)", run_phase(feats, cache, args.T, False, _scan_phase)))
    rows.append(("run scan, rerun (cache hit)", run_phase(feats, cache, args.T, False, _scan_phase)))
    rows.append(("a job's rows from the scan (3/4 of videos)", run_phase(feats, cache, args.T, True, _scan_phase)))

    shape = rows[0][1]["shape"]
    print(f"\n{args.videos} videos × [{T_RAW_RANGE[0]}..{T_RAW_RANGE[1]}, {args.dim}] float32 -> {tuple(shape)} "
          f"({rows[0][1]['gb']:.2f} GB)")
    for name, r in rows:
        print(f"{name:<42} {r['seconds']:7.1f} s   peak RSS {r['peak_rss_gb']:5.2f} GB   "
              f"load average {r['load_avg']:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
