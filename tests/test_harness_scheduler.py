"""Scheduler reliability: failures, hard exits and timeouts recorded; resume; flags; SIGKILL midway;
GPU pinning without a GPU; determinism; the SLURM path through submitit's local executor."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import pytest

from benchmark.harness import registry
from benchmark.harness.cli import main
from benchmark.harness.scheduler import cpu_count
from benchmark.harness.store import RECORD, Store, load_records, read_predictions
from harness_toy import PREPARE, RUNNER, write_suite

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module", autouse=True)
def torch_in_parent():
    """As with the real runner (its methods import torch), the forkserver then preloads torch."""
    import torch  # noqa: F401


@pytest.fixture(autouse=True)
def toy_env(monkeypatch):
    import harness_toy  # noqa: F401

    monkeypatch.setattr(registry, "_DISCOVERED", {"methods"})
    monkeypatch.setenv("ZSTAD_CODE_VERSION", "test")


def run(tmp_path: Path, suite: Path, *flags: str, results: str = "results") -> int:
    return main(["run", "--suite", str(suite), "--runner", RUNNER, "--prepare", PREPARE, "--workers", "2",
                 "--results-dir", str(tmp_path / results), "--reports-dir", str(tmp_path / f"reports-{results}"),
                 *flags])


def records(tmp_path: Path, results: str = "results") -> dict[str, dict]:
    return {r["labels"][0]: r for r in load_records("toy", tmp_path / results)}


def record_bytes(tmp_path: Path, results: str = "results") -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in (tmp_path / results / "toy").glob(f"*/{RECORD}")}


def job_pid(job_dir: Path) -> int:
    return int(re.search(r"pid (\d+)", (job_dir / "job.log").read_text()).group(1))


def wait_dead(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_raise_hard_exit_and_timeout_are_recorded_and_the_rest_finishes(tmp_path, capsys):
    suite = write_suite(tmp_path / "s.yaml", indices=(0, 1), variants={
        "boom": {"behaviour": "raise"}, "crash": {"behaviour": "exit"}, "hang": {"behaviour": "hang"}})
    assert run(tmp_path, suite, "--timeout", "1") == 1
    out = capsys.readouterr().out
    assert "summary: ok 2, failed 4, timeout 2, cached 0, unavailable 0" in out
    recs = records(tmp_path)
    for split in (0, 1):
        ok = recs[f"toy/default/75/25/split{split}/seed0"]
        assert ok["status"] == "ok" and ok["error"] is None and 0 < ok["metrics"]["mAP@0.5"] < 1
        job_dir = tmp_path / "results/toy" / ok["key"]
        assert read_predictions(job_dir) and "toy job done" in (job_dir / "job.log").read_text()
        assert {"train", "predict", "eval", "run", "startup"} <= set(ok["timings"])
        prov = ok["provenance"]
        assert prov["seed"] == 0 and prov["device"] == "cpu" and prov["git_commit"] and prov["packages"]["torch"]
        assert prov["start_time"] <= prov["end_time"] and prov["host"]

        boom = recs[f"toy/boom/75/25/split{split}/seed0"]  # the record keeps the line, the log the traceback
        assert boom["status"] == "failed" and boom["error"] == "RuntimeError: toy failure on purpose"
        assert boom["metrics"] == {}
        log = (tmp_path / "results/toy" / boom["key"] / "job.log").read_text()
        assert "Traceback" in log and "RuntimeError: toy failure on purpose" in log

        crash = recs[f"toy/crash/75/25/split{split}/seed0"]
        assert crash["status"] == "failed" and crash["exit"] == {"signal": None, "code": 3}
        assert crash["error"].startswith("job process exited with code 3 without writing a record (last log line: ")
        assert len(crash["error"].splitlines()) == 1

        hang = recs[f"toy/hang/75/25/split{split}/seed0"]
        assert hang["status"] == "timeout" and hang["exit"]["signal"] == "SIGKILL"
        assert "timed out after 1s" in hang["error"] and len(hang["error"].splitlines()) == 1
        assert wait_dead(job_pid(tmp_path / "results/toy" / hang["key"]))
    summary_rows = [line for line in out.splitlines() if "toy/boom/" in line and line.startswith("failed")]
    assert len(summary_rows) == 2 and all(row.endswith("RuntimeError: toy failure on purpose") for row in summary_rows)
    index = (tmp_path / "reports-results" / "toy" / "README.md").read_text()
    assert "## Failed jobs" in index and "- `toy/boom/75/25/split0/seed0` (failed): RuntimeError: toy failure on purpose" in index


def test_resume_and_the_selection_flags(tmp_path, capsys):
    suite = write_suite(tmp_path / "s.yaml", indices=(0, 1), variants={"boom": {"behaviour": "raise"}})
    assert run(tmp_path, suite) == 1
    first = record_bytes(tmp_path)
    assert len(first) == 4
    capsys.readouterr()

    assert run(tmp_path, suite) == 1  # resume: nothing runs; cached failures keep the exit code red
    assert record_bytes(tmp_path) == first
    out = capsys.readouterr().out
    assert "0 to run, 4 cached" in out and "2 cached records are failed or timed out" in out

    assert run(tmp_path, suite, "--dry-run") == 0
    out = capsys.readouterr().out
    assert record_bytes(tmp_path) == first
    table = [line.split() for line in out.splitlines() if re.match(r"[0-9a-f]{16} ", line)]
    assert sorted((row[2], row[-2], row[-1]) for row in table) == [
        ("boom", "failed", "skip"), ("boom", "failed", "skip"), ("default", "ok", "skip"), ("default", "ok", "skip")]

    assert run(tmp_path, suite, "--retry-failed", "--dry-run") == 0
    assert sum(line.split()[-1:] == ["run"] for line in capsys.readouterr().out.splitlines()) == 2

    assert run(tmp_path, suite, "--retry-failed") == 1
    after = record_bytes(tmp_path)
    boom = {r["key"] for label, r in records(tmp_path).items() if "/boom/" in label}
    assert {k for k in after if after[k] != first[k]} == boom

    capsys.readouterr()
    assert run(tmp_path, suite, "--force", "--only", "toy/default/*/split1") == 0  # boom is not selected
    forced = record_bytes(tmp_path)
    target = records(tmp_path)["toy/default/75/25/split1/seed0"]["key"]
    assert {k for k in forced if forced[k] != after[k]} == {target}
    assert "1 to run, 0 cached" in capsys.readouterr().out and target in forced


def test_each_job_sees_its_own_gpu(tmp_path):
    suite = write_suite(tmp_path / "s.yaml", indices=(0, 1, 2, 3), variants={"slow": {"sleep_s": 0.3}},
                        rows=[{"method": "toy", "variant": "slow"}])
    assert run(tmp_path, suite, "--gpus", "7,9") == 0
    recs = list(records(tmp_path).values())
    assert len(recs) == 4
    for r in recs:
        assert r["extra"]["cuda_visible_devices"] in ("7", "9")
        assert r["provenance"]["cuda_visible_devices"] == r["extra"]["cuda_visible_devices"]
        assert r["provenance"]["device"] == "cuda"
        assert r["extra"]["threads"] == str(max(1, cpu_count() // 2))
    assert {r["extra"]["cuda_visible_devices"] for r in recs} == {"7", "9"}
    for a, b in combinations(recs, 2):  # jobs running at the same time never share a device
        if a["extra"]["t_start"] < b["extra"]["t_end"] and b["extra"]["t_start"] < a["extra"]["t_end"]:
            assert a["extra"]["cuda_visible_devices"] != b["extra"]["cuda_visible_devices"]


def test_same_seed_on_cpu_gives_identical_metrics(tmp_path):
    suite = write_suite(tmp_path / "s.yaml", indices=(0, 1), variants={"trained": {"torch": True}},
                        rows=[{"method": "toy", "variant": "trained"}])
    assert run(tmp_path, suite) == 0
    first = records(tmp_path)
    preds = {k: (tmp_path / "results/toy" / r["key"] / "predictions.json.gz").read_bytes() for k, r in first.items()}
    assert run(tmp_path, suite, "--force") == 0
    again = records(tmp_path)
    assert {k: r["metrics"] for k, r in again.items()} == {k: r["metrics"] for k, r in first.items()}
    assert {k: (tmp_path / "results/toy" / r["key"] / "predictions.json.gz").read_bytes() for k, r in again.items()} == preds
    assert again["toy/trained/75/25/split0/seed0"]["provenance"]["pid"] != first["toy/trained/75/25/split0/seed0"]["provenance"]["pid"]
    m0, m1 = (first[f"toy/trained/75/25/split{i}/seed0"]["metrics"] for i in (0, 1))
    assert m0 != m1  # the metric does depend on the data: equality above is not vacuous


def test_sigkill_midway_then_resume_equals_an_uninterrupted_run(tmp_path):
    suite = write_suite(tmp_path / "s.yaml", indices=tuple(range(6)), variants={"slow": {"sleep_s": 0.4}})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "ZSTAD_CODE_VERSION": "test"}
    cmd = [sys.executable, "-m", "benchmark.harness.cli", "run", "--suite", str(suite), "--runner", RUNNER,
           "--prepare", PREPARE, "--workers", "2", "--results-dir", str(tmp_path / "results"), "--no-report"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store_dir = tmp_path / "results/toy"
    deadline = time.monotonic() + 40
    while len(list(store_dir.glob(f"*/{RECORD}"))) < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.2)  # a job caught in its last milliseconds may still land its record
    finished = record_bytes(tmp_path)
    assert 5 <= len(finished) < 12, "the run was not killed midway"
    running = [d for d in store_dir.iterdir() if (d / "job.log").exists() and not (d / RECORD).exists()]
    time.sleep(0.8)  # longer than a slow job: an orphan that survived the kill would finish by now
    assert record_bytes(tmp_path) == finished
    assert all(wait_dead(job_pid(d)) for d in running if "pid" in (d / "job.log").read_text())
    for data in finished.values():
        assert json.loads(data)["status"] == "ok"  # whole, parseable records only

    assert run(tmp_path, suite) == 0
    resumed = record_bytes(tmp_path)
    assert len(resumed) == 12 and all(resumed[k] == v for k, v in finished.items())  # no finished job re-ran

    assert run(tmp_path, suite, results="reference") == 0
    for name in ("t1.csv", "t1.md"):
        assert (tmp_path / "reports-results/toy" / name).read_text() == (tmp_path / "reports-reference/toy" / name).read_text()


def test_slurm_path_with_submitits_local_executor(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    suite = write_suite(tmp_path / "s.yaml", indices=(0,), variants={
        "boom": {"behaviour": "raise"}, "crash": {"behaviour": "exit"}},
        run={"timeout_s": 30, "slurm": {"partition": "gpu", "cpus_per_task": 1, "mem_gb": 1}})
    assert run(tmp_path, suite, "--backend", "slurm", "--submitit-cluster", "local", "--gpus-per-job", "0",
               "--time-min", "2") == 1
    assert "summary: ok 1, failed 2, timeout 0" in capsys.readouterr().out
    recs = records(tmp_path)
    assert recs["toy/default/75/25/split0/seed0"]["status"] == "ok"
    assert "toy failure on purpose" in recs["toy/boom/75/25/split0/seed0"]["error"]
    crash = recs["toy/crash/75/25/split0/seed0"]
    assert crash["status"] == "failed" and "without writing a record" in crash["error"]
    assert list((tmp_path / "results/toy/_submitit").iterdir())  # submitit's own logs stay beside the records


def test_one_run_per_store_at_a_time(tmp_path, capsys):
    suite = write_suite(tmp_path / "s.yaml", indices=(0,))
    with Store(tmp_path / "results", "toy").lock():
        assert run(tmp_path, suite) == 2
        assert "another run of this suite is in progress" in capsys.readouterr().err
        assert run(tmp_path, suite, "--dry-run") == 0  # reading is fine
    assert run(tmp_path, suite) == 0


def test_jobs_of_methods_that_train_run_first(tmp_path, monkeypatch):
    """A long trained job started last would run alone at the end; training-free jobs are left for last,
    otherwise the suite's order is kept."""
    from types import SimpleNamespace

    from benchmark.harness.scheduler import select

    class Free(registry.Method):
        trains = False

    monkeypatch.setitem(registry._METHODS, "toy_free", Free)
    monkeypatch.setitem(registry._METHODS, "toy_trained", registry.Method)
    methods = ["toy_free", "toy_trained", "toy_free", "toy_trained"]
    jobs = [SimpleNamespace(key=f"{i:016x}", labels=(m,), spec={"method": m}, available=True) for i, m in enumerate(methods)]
    todo = select(jobs, Store(tmp_path, "toy")).todo
    assert [job.key[-1] for job in todo] == ["1", "3", "0", "2"]
