"""Run jobs: one process per job, locally (CPU workers or a GPU pool) or on SLURM through submitit.

A job is run by a *runner*, a function named ``"module:function"``::

    def run_job(spec: dict, job_dir: Path) -> dict:
        return {"metrics": {...}, "per_class": {...}, "predictions": {video: [...]}, "extra": {...},
                "timings": {"train": s, "predict": s, "eval": s}}   # timings optional

``spec`` is the planned spec plus ``spec["runtime"]``: ``device`` ("cpu" or "cuda"), ``threads``
and ``data`` (what ``runner.prepare_data`` returned). The harness seeds python's ``random`` (and
numpy / torch when the runner's module has imported them) with ``spec["seed"]``, sends the job's
stdout/stderr to ``job.log``, and writes ``record.json`` + ``predictions.json.gz``; a runner that
raises is recorded as failed with its traceback.

Local executor: each job is a child of a multiprocessing *forkserver* that has already imported
the runner's module (and, when that pulls in torch, torch, numpy and torch._dynamo), so a job
starts in ~0.1-0.2 s instead of paying a fresh interpreter + ``import torch`` (2.5-5 s here;
``python -m benchmark.perf.bench_scheduler`` measures both). The forkserver is a fresh interpreter
(not a fork of this process), and importing torch does not initialise CUDA, so each child still
sets its own ``CUDA_VISIBLE_DEVICES``. A child:
- runs in its own session, so a timeout kills it with all its subprocesses (``killpg``);
- watches the run's process (pidfd) and kills its own session when the run dies: killing the run
  leaves no orphan that could go on computing and write a record later;
- writes its own record, so a record computed is a record kept, whatever happens to the parent.
A child that exits without a record (``os._exit``, segfault, OOM kill) gets a ``failed`` record
with its exit code or signal and the tail of its log; one past its timeout gets ``timeout``.
As with any multiprocessing start method but fork, a script that runs jobs must guard its entry
point with ``if __name__ == "__main__":`` (children re-import the main module).
"""
from __future__ import annotations

import contextlib
import fnmatch
import importlib
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import submitit
from tabulate import tabulate
from tqdm import tqdm

from benchmark.errors import error_line
from benchmark.harness.store import LOG, Store, build_record, now, write_predictions

DEFAULT_RUNNER = "benchmark.harness.runner:run_job"
# Heavy modules the forkserver imports once when the runner's module uses torch; torch.optim
# imports torch._dynamo (~900 modules, 3+ s) at the first optimiser, so that one too.
TORCH_PRELOAD = ("numpy", "torch", "torch._dynamo")
STATUS_COLUMNS = ("ok", "failed", "timeout", "cached", "unavailable")


# ---------------------------------------------------------------------------------------------
# Selection (resume, --force, --only, --retry-failed)
# ---------------------------------------------------------------------------------------------

@dataclass
class Selection:
    todo: list  # jobs to run now
    cached: list  # finished jobs that are skipped
    unavailable: list  # jobs whose method is not registered
    filtered: list  # left out by --only


def matches(job, pattern: str) -> bool:
    """``--only``: a glob matched anywhere in one of the job's labels, or a key prefix."""
    return job.key.startswith(pattern) or any(fnmatch.fnmatchcase(label, f"*{pattern}*") for label in job.labels)


def select(jobs, store: Store, only: str | None = None, force: bool = False, retry_failed: bool = False) -> Selection:
    sel = Selection([], [], [], [])
    for job in jobs:
        if only and not matches(job, only):
            sel.filtered.append(job)
        elif not job.available:
            sel.unavailable.append(job)
        else:
            status = store.status(job.key)
            rerun = force or status is None or (retry_failed and status != "ok")
            (sel.todo if rerun else sel.cached).append(job)
    # Jobs of methods that train first: they are the long ones, and the training-free jobs left for the end
    # fill the workers' last gaps instead of one long job running alone at the end.
    from benchmark.harness.registry import get_method

    sel.todo.sort(key=lambda job: not get_method(job.spec["method"]).trains)
    return sel


def job_table(sel: Selection, store: Store) -> str:
    """The ``--dry-run`` table: one line per selected job, what the store holds and what would happen."""
    rows = []
    for action, jobs in (("run", sel.todo), ("skip", sel.cached), ("wait: method not registered", sel.unavailable)):
        for job in jobs:
            spec = job.spec
            rows.append([job.key, spec["method"], ", ".join(sorted({lbl.split("/")[1] for lbl in job.labels})),
                         spec["setting"], spec["split"]["index"], spec["seed"],
                         store.status(job.key) or "-", action])
    return tabulate(rows, headers=["key", "method", "variant(s)", "setting", "split", "seed", "stored", "action"])


# ---------------------------------------------------------------------------------------------
# Inside the job's process
# ---------------------------------------------------------------------------------------------

def resolve_runner(path: str):
    module, sep, name = path.partition(":")
    if not sep:
        raise ValueError(f"runner {path!r}: expected 'module:function'")
    return getattr(importlib.import_module(module), name)


def seed_everything(seed: int) -> None:
    """Seed python, and numpy / torch if loaded (a runner that imports torch later seeds it itself)."""
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def set_threads(threads: int | None) -> None:
    if not threads:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:  # preloaded: the variables above come too late for its pool
        sys.modules["torch"].set_num_threads(threads)


def execute(payload: dict, cuda_devices: str | None = None, threads: int | None = None) -> str:
    """Run one job in this process and write its record. Returns the status."""
    started = time.time()
    if cuda_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_devices
    set_threads(threads)
    spec = {**payload["spec"], "runtime": {**payload.get("runtime", {}), "threads": threads,
                                           "device": "cuda" if os.environ.get("CUDA_VISIBLE_DEVICES") else "cpu"}}
    job_dir = Path(payload["job_dir"])
    runtime = {"device": spec["runtime"]["device"], "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
               "threads": threads, "pid": os.getpid(), "start_time": now()}
    print(f"[harness] job {payload['key']} {payload['labels'][0]} pid {os.getpid()} start {runtime['start_time']}", flush=True)
    status, result, error = "ok", None, None
    t0 = time.perf_counter()
    try:
        runner = resolve_runner(payload["runner"])
        seed_everything(spec["seed"])
        result = runner(spec, job_dir)
        if not isinstance(result, dict) or not isinstance(result.get("metrics"), dict):
            raise TypeError(f"runner returned {type(result).__name__}, expected a dict with 'metrics'")
        if "predictions" in result:
            write_predictions(job_dir, result["predictions"])
    except Exception as e:  # the record keeps the line; the log, the traceback
        status, error = "failed", error_line(e)
        print(traceback.format_exc(), file=sys.stderr, flush=True)
    run_s = time.perf_counter() - t0
    timings = {**((result or {}).get("timings") or {}), "run": run_s,
               "startup": max(0.0, started - payload.get("launched_at", started))}
    runtime["end_time"] = now()
    record = build_record(payload, status, result=result, error=error, timings=timings, runtime=runtime)
    Store(payload["results_dir"], payload["suite"]).write_record(payload["key"], record)
    print(f"[harness] job {payload['key']} {status} in {run_s:.2f}s", flush=True)
    return status


def _die_with_run(run_pid: int) -> None:
    """SIGKILL this job's session as soon as the run's process is gone (a killed run leaves no orphan).

    A daemon thread waits on a pidfd of the run's process (Linux >= 5.3). Not PR_SET_PDEATHSIG:
    our parent is the forkserver, which outlives the run while any child holds its "alive" pipe.
    """
    try:
        pidfd = os.pidfd_open(run_pid)
    except ProcessLookupError:  # the run died while this job was starting
        os._exit(1)

    def watch():
        multiprocessing.connection.wait([pidfd])  # readable once the run's process has exited
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="die-with-run").start()


@contextlib.contextmanager
def job_log(job_dir: Path):
    """The job's stdout and stderr, Python's and C libraries' alike, go to its ``job.log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(job_dir / LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, old in zip((1, 2), saved):
            os.dup2(old, fd)
            os.close(old)


def _child_main(payload: dict, cuda_devices: str, threads: int, run_pid: int) -> None:
    os.setsid()
    _die_with_run(run_pid)
    with job_log(Path(payload["job_dir"])):
        execute(payload, cuda_devices, threads)


# ---------------------------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------------------------

@dataclass
class Summary:
    """Counts of this run: ok / failed / timeout for jobs run now, cached and unavailable for the rest."""

    counts: dict = field(default_factory=lambda: dict.fromkeys(STATUS_COLUMNS, 0))
    problems: list = field(default_factory=list)  # (status, label, key, last error line)
    cached_bad: int = 0  # skipped jobs whose stored record is failed or timeout

    @property
    def exit_code(self) -> int:
        """Non-zero while any selected job is failed or timed out, run now or cached."""
        return 1 if self.counts["failed"] or self.counts["timeout"] or self.cached_bad else 0

    def add_cached(self, jobs, store: Store) -> None:
        self.counts["cached"] += len(jobs)
        self.cached_bad += sum(store.status(job.key) != "ok" for job in jobs)

    def add(self, status: str, job, record: dict | None = None) -> None:
        self.counts[status] += 1
        if status in ("failed", "timeout"):
            err = (record or {}).get("error") or ""
            self.problems.append((status, job.label, job.key, _last_line(err)))

    def render(self) -> str:
        text = "summary: " + ", ".join(f"{k} {v}" for k, v in self.counts.items())
        if self.cached_bad:
            text += f"\n{self.cached_bad} cached records are failed or timed out (re-run them with --retry-failed)"
        if self.problems:
            text += "\n" + tabulate(self.problems, headers=["status", "job", "key", "error"])
        return text


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def job_payload(job, store: Store, runner: str, provenance: dict, runtime: dict) -> dict:
    return {
        "suite": store.suite, "results_dir": str(store.root), "job_dir": str(store.job_dir(job.key)),
        "key": job.key, "spec_hash": job.spec_hash, "code_version": job.code_version,
        "data_identity": job.data_identity, "labels": list(job.labels), "spec": job.spec,
        "runner": runner, "provenance": provenance, "runtime": runtime, "launched_at": time.time(),
    }


def status_line(status: str, job, seconds: float, record: dict | None) -> str:
    line = f"[{status:>7}] {job.label}  {seconds:6.1f}s  {job.key}"
    if status != "ok" and record:
        line += f"  {_last_line(record.get('error') or '')}"
    return line


def _exit_text(exitcode: int | None) -> tuple[str, dict]:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        return f"killed by signal {name}", {"signal": name, "code": None}
    return f"exited with code {exitcode}", {"signal": None, "code": exitcode}


def _with_log_line(text: str, job_dir: Path, other_log: str = "") -> str:
    """One line: what happened to a job that left no record, and the last line of its log (or of
    ``other_log``, e.g. submitit's stderr, when the job's own log is empty)."""
    try:
        last = _last_line((job_dir / LOG).read_text(errors="replace"))
    except OSError:
        last = ""
    last = last or _last_line(other_log)
    return f"{text} (last log line: {last})" if last else text


def visible_gpus() -> list[str]:
    """Default GPU pool: CUDA_VISIBLE_DEVICES if set, else every GPU nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    return nvidia_smi_gpus()


def nvidia_smi_gpus() -> list[str]:
    """The GPU indices nvidia-smi lists; none without it.

    Not torch.cuda.device_count(): importing torch here would cost seconds on every CPU-only run.
    """
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.split() if out.returncode == 0 else []


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class LocalExecutor:
    """Jobs as forkserver children: ``workers`` at a time on CPU, or one per id in ``gpus``.

    A slot is a ``CUDA_VISIBLE_DEVICES`` value: a GPU id, or "" for a CPU worker (which then sees
    no GPU even if the machine has some). Torch threads per job = cores // slots.
    """

    def __init__(self, workers: int = 1, gpus: list[str] | None = None, timeout_s: float | None = None,
                 runner: str = DEFAULT_RUNNER, progress: bool = True, poll_s: float = 0.2):
        self.slots = list(gpus or []) or [""] * max(1, workers)
        self.threads = max(1, cpu_count() // len(self.slots))
        self.timeout_s = timeout_s
        self.runner = runner
        self.poll_s = poll_s
        self.progress = progress
        self.ctx = multiprocessing.get_context("forkserver")
        module = runner.partition(":")[0]
        importlib.import_module(module)
        heavy = TORCH_PRELOAD if "torch" in sys.modules else ()
        # Takes effect when the forkserver starts, i.e. at the first job of this process.
        self.ctx.set_forkserver_preload([__name__, *heavy, module])

    def run(self, jobs, store: Store, provenance: dict, runtime: dict | None = None,
            summary: Summary | None = None) -> Summary:
        summary = summary or Summary()
        pending = list(jobs)
        free = list(range(len(self.slots)))
        running = {}  # sentinel -> (process, job, slot, start, payload)
        bar = tqdm(total=len(pending), unit="job", desc=store.suite, disable=not self.progress, file=sys.stderr)
        try:
            while pending or running:
                while pending and free:
                    job, slot = pending.pop(0), free.pop(0)
                    store.prepare(job.key, job.spec)
                    payload = job_payload(job, store, self.runner, provenance, runtime or {})
                    proc = self.ctx.Process(target=_child_main, name=f"job-{job.key}",
                                            args=(payload, self.slots[slot], self.threads, os.getpid()))
                    proc.start()
                    running[proc.sentinel] = (proc, job, slot, time.monotonic(), payload)
                multiprocessing.connection.wait(list(running), timeout=self.poll_s)
                for sentinel, (proc, job, slot, start, payload) in list(running.items()):
                    timed_out = self.timeout_s is not None and time.monotonic() - start > self.timeout_s
                    if proc.is_alive() and not timed_out:
                        continue
                    if proc.is_alive():
                        _kill(proc)
                    proc.join()
                    del running[sentinel]
                    free.append(slot)
                    record = self._finish(job, store, payload, proc.exitcode, timed_out, time.monotonic() - start)
                    summary.add(record["status"], job, record)
                    if self.progress:
                        bar.write(status_line(record["status"], job, time.monotonic() - start, record))
                    bar.set_postfix({k: v for k, v in summary.counts.items() if v}, refresh=False)
                    bar.update(1)
        finally:
            for proc, *_ in running.values():  # interrupted: no half-run job survives us
                _kill(proc)
                proc.join()
            bar.close()
        return summary

    def _finish(self, job, store: Store, payload: dict, exitcode: int | None, timed_out: bool, wall: float) -> dict:
        record = store.record(job.key)
        if record is not None:  # the child finished, even if a timeout raced with it
            return record
        if timed_out:
            status, text, info = "timeout", f"timed out after {self.timeout_s:g}s, killed", {"signal": "SIGKILL", "code": None}
        else:
            status = "failed"
            text, info = _exit_text(exitcode)
            text = f"job process {text} without writing a record"
        record = build_record(payload, status, error=_with_log_line(text, store.job_dir(job.key)), exit_info=info,
                              timings={"wall": wall}, runtime={"end_time": now()})
        store.write_record(job.key, record)
        return record


def _kill(proc) -> None:
    """SIGKILL the job's whole session (it called setsid); the process itself if it had not yet."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.kill()


class SubmititJob(submitit.helpers.Checkpointable):
    """The callable submitit runs; ``Checkpointable`` makes SLURM requeue it on preemption/timeout.

    A requeued job starts over: records are written only at the end, so a half-run job leaves nothing.
    """

    def __call__(self, payload: dict, threads: int | None) -> str:
        with job_log(Path(payload["job_dir"])):
            return execute(payload, None, threads)


class SlurmExecutor:
    """Jobs as a SLURM job array through submitit. ``cluster="local"``/``"debug"`` run without SLURM."""

    def __init__(self, folder: str | Path, runner: str = DEFAULT_RUNNER, partition: str | None = None,
                 time_min: int = 240, gpus_per_job: int = 1, mem_gb: float | None = None, cpus_per_task: int = 4,
                 array_parallelism: int = 64, cluster: str | None = "slurm", progress: bool = True,
                 poll_s: float = 1.0):
        self.runner = runner
        self.progress = progress
        self.poll_s = poll_s
        self.cpus = cpus_per_task
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        self.executor.update_parameters(
            name="zstad", timeout_min=time_min, gpus_per_node=gpus_per_job, mem_gb=mem_gb, cpus_per_task=cpus_per_task,
            slurm_partition=partition, slurm_array_parallelism=array_parallelism)

    def run(self, jobs, store: Store, provenance: dict, runtime: dict | None = None,
            summary: Summary | None = None) -> Summary:
        summary = summary or Summary()
        submitted = []
        with self.executor.batch():  # one job array
            for job in jobs:
                store.prepare(job.key, job.spec)
                payload = job_payload(job, store, self.runner, provenance, runtime or {})
                submitted.append((self.executor.submit(SubmititJob(), payload, self.cpus), job, payload, time.monotonic()))
        bar = tqdm(total=len(submitted), unit="job", desc=store.suite, disable=not self.progress, file=sys.stderr)
        try:
            while submitted:
                for item in [s for s in submitted if s[0].done()]:
                    submitted.remove(item)
                    handle, job, payload, start = item
                    record = store.record(job.key) or self._lost(handle, job, store, payload)
                    summary.add(record["status"], job, record)
                    if self.progress:
                        bar.write(status_line(record["status"], job, time.monotonic() - start, record))
                    bar.update(1)
                if submitted:
                    time.sleep(self.poll_s)
        finally:
            bar.close()
        return summary

    @staticmethod
    def _lost(handle, job, store: Store, payload: dict) -> dict:
        """A submitit job that ended without a record: killed, cancelled, out of time or memory.

        Not ``handle.exception()``: without a result file it waits 15 s for a slow shared filesystem.
        """
        state = str(handle.state)
        status = "timeout" if "TIMEOUT" in state.upper() else "failed"
        text = f"submitit job {handle.job_id} ended in state {state} without writing a record"
        record = build_record(payload, status, error=_with_log_line(text, store.job_dir(job.key), handle.stderr() or ""),
                              exit_info={"state": state, "code": None, "signal": None}, runtime={"end_time": now()})
        store.write_record(job.key, record)
        return record
