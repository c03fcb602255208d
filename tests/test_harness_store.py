"""Results store: atomic writes (even under SIGKILL), predictions, job folders, provenance."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from benchmark.harness import store as store_mod
from benchmark.harness.store import (RECORD, Store, atomic_write_json, collect_provenance, load_records,
                                     read_predictions, write_predictions)

WRITER = """
import sys
from benchmark.harness.store import atomic_write_json
docs = [{"v": "a" * 2_000_000}, {"v": "b" * 2_000_000}]
i = 0
while True:
    atomic_write_json(sys.argv[1], docs[i % 2])
    i += 1
"""


def test_a_file_killed_mid_write_is_old_or_new_never_torn(tmp_path):
    path = tmp_path / RECORD
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    try:
        deadline = time.monotonic() + 20
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # several rewrites in flight
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    doc = json.loads(path.read_text())
    assert doc["v"] in ("a" * 2_000_000, "b" * 2_000_000)


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"old": 1})

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(store_mod.os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_json(path, {"new": 2})
    assert json.loads(path.read_text()) == {"old": 1}
    assert os.listdir(tmp_path) == ["x.json"]


def test_predictions_round_trip_with_stable_bytes(tmp_path):
    preds = {"v1": [{"segment": [1.0, 2.5], "label": "a", "score": 0.9}], "v2": []}
    write_predictions(tmp_path, preds)
    first = (tmp_path / "predictions.json.gz").read_bytes()
    write_predictions(tmp_path, dict(reversed(preds.items())))
    assert (tmp_path / "predictions.json.gz").read_bytes() == first  # no gzip timestamp, sorted keys
    assert read_predictions(tmp_path) == preds


def test_prepare_clears_the_previous_outcome(tmp_path):
    store = Store(tmp_path, "s")
    d = store.prepare("k1", {"a": 1})
    store.write_record("k1", {"status": "failed"})
    write_predictions(d, {})
    (d / ".record.json.abc.tmp").write_text("torn")
    store.prepare("k1", {"a": 1})
    assert sorted(p.name for p in d.iterdir()) == ["spec.json"]
    assert store.record("k1") is None and store.status("k1") is None


def test_load_records_reads_every_job_of_a_suite(tmp_path):
    store = Store(tmp_path, "s")
    for key, status in (("k1", "ok"), ("k2", "timeout")):
        store.prepare(key, {})
        store.write_record(key, {"key": key, "status": status})
    store.prepare("k3", {})  # started, never finished
    assert [r["status"] for r in load_records("s", tmp_path)] == ["ok", "timeout"]
    assert load_records("other", tmp_path) == []


def test_provenance_names_the_code_packages_and_machine():
    prov = collect_provenance()
    assert re.fullmatch(r"[0-9a-f]{40}", prov["git_commit"])
    assert isinstance(prov["git_dirty"], bool)
    assert prov["packages"]["numpy"] and prov["packages"]["torch"] and "open_clip_torch" in prov["packages"]
    assert prov["host"] and prov["python"] == sys.version.split()[0]
