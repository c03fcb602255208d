"""The results store: one folder per job under ``results/<suite>/<key>/``.

- ``spec.json``            the job spec, written by the scheduler before the job starts
- ``job.log``              the job's stdout and stderr
- ``predictions.json.gz``  ActivityNet submission ``{"version", "results": {video: [...]}, "external_data"}``
- ``record.json``          written last: status (ok / failed / timeout), metrics, per-class AP,
                           timings, provenance, error text. Its presence means "finished".

Every file is written atomically (temp file in the same folder, fsync, ``os.replace``, fsync of the
folder): a kill at any moment leaves the old file or the new one, never a torn one.
"""
from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from benchmark.errors import InputError

RECORD, PREDICTIONS, SPEC, LOG = "record.json", "predictions.json.gz", "spec.json", "job.log"
STATUSES = ("ok", "failed", "timeout")
SCHEMA = 1
PACKAGES = ("zstad-bench", "torch", "numpy", "scipy", "pandas", "open_clip_torch", "h5py", "submitit")
DEFAULT_RESULTS = Path("results")
# the note an ok record carries when the method detected nothing at all (a collapsed model); reports list such jobs
NO_DETECTIONS = "no detections on any test video"


class StoreError(InputError):
    """An unreadable record; the message names the file."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(obj):
    """numpy scalars and arrays, Paths: what runners tend to return."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: unreadable ({' '.join(str(e).split())})") from None


def write_predictions(job_dir: Path, results: dict) -> str:
    """Gzipped ActivityNet submission; mtime=0 so equal predictions give equal bytes."""
    doc = {"version": "ZS-TAD", "results": results, "external_data": {}}
    raw = json.dumps(doc, sort_keys=True, default=_json_default).encode()
    atomic_write_bytes(Path(job_dir) / PREDICTIONS, gzip.compress(raw, mtime=0))
    return PREDICTIONS


def read_predictions(job_dir: Path) -> dict:
    return json.loads(gzip.decompress((Path(job_dir) / PREDICTIONS).read_bytes()))["results"]


class Store:
    """The records of one suite: ``<root>/<suite>/<key>/``."""

    def __init__(self, root: str | Path, suite: str):
        self.root = Path(root)
        self.dir = self.root / suite
        self.suite = suite

    def job_dir(self, key: str) -> Path:
        return self.dir / key

    def record(self, key: str) -> dict | None:
        path = self.job_dir(key) / RECORD
        return read_json(path) if path.is_file() else None

    def status(self, key: str) -> str | None:
        rec = self.record(key)
        return rec["status"] if rec else None

    def write_record(self, key: str, record: dict) -> None:
        atomic_write_json(self.job_dir(key) / RECORD, record)

    def prepare(self, key: str, spec: dict) -> Path:
        """A fresh job folder for a (re-)run: the old record goes first, so a kill leaves "not done"."""
        d = self.job_dir(key)
        d.mkdir(parents=True, exist_ok=True)
        for name in (RECORD, PREDICTIONS):
            (d / name).unlink(missing_ok=True)
        for tmp in d.glob(".*.tmp"):  # left by a job killed mid-write
            tmp.unlink(missing_ok=True)
        atomic_write_json(d / SPEC, spec)
        return d

    @contextlib.contextmanager
    def lock(self):
        """One run per suite store at a time; the kernel releases the lock if the run is killed."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"{self.dir}: another run of this suite is in progress") from None
            yield

    def records(self) -> list[dict]:
        if not self.dir.is_dir():
            return []
        return [read_json(p) for p in sorted(self.dir.glob(f"*/{RECORD}"))]


def load_records(suite: str, results_dir: str | Path = DEFAULT_RESULTS) -> list[dict]:
    """Every record.json of ``suite`` in the store (any status, any code version)."""
    return Store(results_dir, suite).records()


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------

def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def collect_provenance(root: Path | None = None) -> dict:
    """What is the same for every job of a run: code, packages, machine. Collected once, by the parent."""
    from benchmark.harness.suite import CODE_DIRS, CODE_ROOT

    root = root or CODE_ROOT
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--", *CODE_DIRS, "run_all.py") if commit else None
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "git_commit": commit,
        "git_dirty": bool(status) if commit else None,
        "packages": packages,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "argv": sys.argv,
    }


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def build_record(payload: dict, status: str, *, result: dict | None = None, error: str | None = None,
                 exit_info: dict | None = None, timings: dict | None = None, runtime: dict | None = None) -> dict:
    """One record.json. ``payload`` is what the scheduler hands a job (see scheduler.job_payload)."""
    assert status in STATUSES, status
    result = result or {}
    return {
        "schema": SCHEMA,
        "status": status,
        "suite": payload["suite"],
        "key": payload["key"],
        "spec_hash": payload["spec_hash"],
        "code_version": payload["code_version"],
        "data_identity": payload["data_identity"],
        "labels": payload["labels"],
        "spec": payload["spec"],
        "runtime": payload.get("runtime", {}),  # e.g. where prepare_data put the data; not part of the key
        "metrics": result.get("metrics", {}),
        "per_class": result.get("per_class", {}),
        "extra": result.get("extra", {}),
        "predictions": PREDICTIONS if status == "ok" and "predictions" in result else None,
        "timings": timings or {},
        "provenance": {**payload["provenance"], "seed": payload["spec"]["seed"], **(runtime or {})},
        "error": error,
        "exit": exit_info,
    }
