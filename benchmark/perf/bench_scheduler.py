"""Scheduler overhead per job, measured with no-op jobs: ``python -m benchmark.perf.bench_scheduler``.

Every second between "job handed to the executor" and "record on disk" is overhead for a no-op
job: forking a child from the forkserver, setting it up (session, log, seeds, threads), writing
its record atomically (fsync), and the parent noticing. This module imports torch, as a real
runner's module does, so the forkserver preloads torch (+ numpy, torch._dynamo) and every child is
a fork of a process with torch mapped, as in a real run. Printed: the first job's latency (it
includes starting the forkserver and its imports), the steady per-job overhead, and for
comparison what a fresh interpreter per job would cost just to import torch and numpy.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import torch  # noqa: F401  (as a real runner's methods do: the forkserver then preloads torch)
from tabulate import tabulate

from benchmark.harness.scheduler import LocalExecutor
from benchmark.harness.store import Store, collect_provenance
from benchmark.harness.suite import Job


def noop_job(spec: dict, job_dir) -> dict:
    return {"metrics": {"noop": 0.0}}


def noop_jobs(n: int) -> list[Job]:
    return [Job(key=f"noop{i:05d}", spec_hash=f"noop{i}", data_identity="none", code_version="bench",
                spec={"method": "noop", "seed": 0, "split": {"index": i}, "setting": "-"},
                labels=(f"noop/{i}",), available=True) for i in range(n)]


def fresh_interpreter_s(repeats: int = 3) -> float:
    """Wall time of ``python -c 'import torch, numpy'``: what a plain subprocess per job pays first."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, numpy"], check=True)
        times.append(time.perf_counter() - t)
    return sum(times) / len(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true", help="skip the fresh-interpreter comparison")
    args = parser.parse_args(argv)
    jobs = noop_jobs(args.jobs + 1)
    provenance = collect_provenance()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp, "bench")
        executor = LocalExecutor(workers=args.workers, runner=f"{__name__}:noop_job", progress=False)
        t0 = time.perf_counter()
        executor.run(jobs[:1], store, provenance)
        first = time.perf_counter() - t0
        t1 = time.perf_counter()
        summary = executor.run(jobs[1:], store, provenance)
        steady = (time.perf_counter() - t1) / args.jobs
        assert summary.counts["ok"] == args.jobs, summary.render()
    rows = [["first job (starts the forkserver: imports torch, numpy, torch._dynamo once)", f"{first:.2f} s"],
            [f"per job, steady state ({args.jobs} jobs, {args.workers} worker(s)): wall / jobs", f"{steady * 1000:.0f} ms"],
            ["per job x workers (overhead each job costs its worker)", f"{steady * args.workers * 1000:.0f} ms"]]
    if not args.no_baseline:
        rows.append(["fresh interpreter + import torch, numpy (plain subprocess per job)", f"{fresh_interpreter_s():.2f} s"])
    print(tabulate(rows, headers=["scheduler overhead", "time"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
