"""Reports: tables rebuilt from record.json files, checked against hand-computed numbers."""
from __future__ import annotations

import math
import re

import pandas as pd
import pytest
import yaml

from benchmark.harness import registry
from benchmark.harness.report import build_reports
from benchmark.harness.scheduler import job_payload
from benchmark.harness.store import Store, build_record
from benchmark.harness.suite import load_suite, plan
from harness_toy import write_suite
import run_all


@pytest.fixture(autouse=True)
def toy_env(monkeypatch):
    import harness_toy  # noqa: F401

    monkeypatch.setattr(registry, "_DISCOVERED", {"methods"})
    monkeypatch.setenv("ZSTAD_CODE_VERSION", "test")


def _write(store, job, status, metrics, end_time, code_version="test"):
    payload = job_payload(job, store, "x:y", {"host": "h"}, {})
    payload["code_version"] = code_version
    store.write_record(f"{job.key}-{code_version}-{status}", build_record(
        payload, status, result={"metrics": metrics}, runtime={"end_time": end_time}))


def test_tables_from_records_match_hand_computed_statistics(tmp_path):
    (tmp_path / "ref.yaml").write_text(yaml.safe_dump({"t": {"Toy": [12.5, 6.0]}}))
    path = write_suite(tmp_path / "s.yaml", variants={"wide": {"hidden": 16}},
                       rows=[{"label": "Toy", "method": "toy", "paper": ["t", "Toy"]},
                             {"label": "Wide", "method": "toy", "variant": "wide"}],
                       paper_reference="ref.yaml", report={"metric_scale": 100, "digits": 1},
                       figures=[{"name": "t1_splits", "builder": "split_metric", "table": "t1", "metric": "mAP_avg",
                                 "description": "per-split dots"}])
    doc = yaml.safe_load(path.read_text())
    doc["tables"]["t1"]["compare"] = {"to": "Toy", "metric": "mAP_avg"}
    path.write_text(yaml.safe_dump(doc))
    suite = load_suite(path)
    store = Store(tmp_path / "results", "toy")
    jobs = {j.label: j for j in plan(suite)}
    for split, value in enumerate((0.1, 0.2, 0.3)):
        _write(store, jobs[f"toy/default/75/25/split{split}/seed0"], "ok", {"mAP@0.5": value, "mAP_avg": value / 2}, "2026-01-02")
    # an older ok record of the same job (earlier code) and a newer failed one: both ignored
    _write(store, jobs["toy/default/75/25/split0/seed0"], "ok", {"mAP@0.5": 0.9, "mAP_avg": 0.9}, "2026-01-01", "old")
    _write(store, jobs["toy/default/75/25/split0/seed0"], "failed", {}, "2026-01-03")
    for split, value in ((0, 0.5), (1, 0.7)):
        _write(store, jobs[f"toy/wide/75/25/split{split}/seed0"], "ok", {"mAP@0.5": value, "mAP_avg": value / 2}, "2026-01-02")
    _write(store, jobs["toy/wide/75/25/split2/seed0"], "timeout", {}, "2026-01-02")

    build_reports(suite, tmp_path / "results", tmp_path / "reports")
    out = tmp_path / "reports/toy"
    csv = pd.read_csv(out / "t1.csv").set_index("row")
    assert csv.loc["Toy", ["mAP@0.5 mean", "mAP@0.5 std", "mAP@0.5 n"]].tolist() == pytest.approx([20.0, 10.0, 3])
    assert csv.loc["Wide", ["mAP@0.5 mean", "mAP@0.5 std", "mAP@0.5 n"]].tolist() == pytest.approx([60.0, math.sqrt(200), 2])
    assert csv.loc["Toy", "paper mAP@0.5"] == 12.5 and csv.loc["Toy", "paper mAP_avg"] == 6.0
    assert math.isnan(csv.loc["Wide", "paper mAP@0.5"])
    # paired with Toy on the splits both have: (25 - 5 + 35 - 10) / 2
    assert csv.loc["Wide", "Δ mAP_avg vs Toy"] == pytest.approx(22.5) and csv.loc["Wide", "pairs"] == 2
    # 95% CI of the Toy mean: 20 ± t(0.975, 2) * 10 / sqrt(3)
    assert csv.loc["Toy", "mAP@0.5 ci95_hi"] == pytest.approx(20 + 4.302653 * 10 / math.sqrt(3), rel=1e-5)

    md = (out / "t1.md").read_text()
    assert md.startswith("# Toy table — synthetic data")
    assert "| Toy      | 3/3 | 20.0 ± 10.0 |" in md and "| 60.0 ± 14.1 |" in md and "2/3" in md
    assert "paper mAP@0.5" in md and "12.5" in md
    readme = (out / "README.md").read_text()
    assert "[t1](t1.md)" in readme and "(5/6 jobs ok)" in readme
    assert (out / "t1_splits.png").stat().st_size > 0 and "- t1_splits ([png](t1_splits.png)" in readme


def test_run_all_plans_the_smoke_suite(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(registry, "_DISCOVERED", set())  # this test wants the real methods/ discovered
    assert run_all.main(["--suite", "zs_activitynet", "--profile", "smoke", "--dry-run", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.match(r"zs_activitynet \(smoke\): (\d+) jobs; \1 to run, 0 cached, 0 waiting for unregistered", out)
    assert "stale" in out and "wait: method not registered" not in out


def test_report_command_uses_the_data_flags_of_the_last_run(tmp_path, capsys):
    from benchmark.harness.cli import main
    from benchmark.harness.store import atomic_write_json

    path = write_suite(tmp_path / "s.yaml", indices=(0,))
    ann = tmp_path / "gt.json"
    ann.write_text("{}")
    over = {"data": {"source": "real", "real": {"annotations": str(ann), "features": str(tmp_path)}}}
    atomic_write_json(tmp_path / "results/toy/_runs/smoke.json", {"overrides": {}, "time": "2026-01-01T00:00:00"})
    atomic_write_json(tmp_path / "results/toy/_runs/default.json", {"overrides": over, "time": "2026-01-02T00:00:00"})
    suite = load_suite(path, "default", over)
    job = plan(suite)[0]
    _write(Store(tmp_path / "results", "toy"), job, "ok", {"mAP@0.5": 0.4, "mAP_avg": 0.2}, "2026-01-02")
    assert main(["report", "--suite", str(path), "--results-dir", str(tmp_path / "results"),
                 "--reports-dir", str(tmp_path / "reports")]) == 0
    md = (tmp_path / "reports/toy/t1.md").read_text()
    assert md.startswith("# Toy table — real data (toyset, features:") and "| 40.0" in md
    assert "reports (default):" in capsys.readouterr().out  # the newest run's profile


def test_pooled_fp_profile_keeps_the_groups_in_numeric_order_after_the_records_json():
    """Records are written with sorted keys ("10G" before "2G"); the pooled profile must read 1G..10G."""
    import json
    from types import SimpleNamespace

    import numpy as np

    from benchmark.evaluation.diagnostics import false_positive_profile
    from benchmark.evaluation.segments import SegmentTable
    from benchmark.harness.report import pooled_fp_profile
    from benchmark.harness.scoring import detad_summary

    rng = np.random.default_rng(0)
    gt = SegmentTable.from_rows([("v", 10.0 * i, 10.0 * i + 5, "a") for i in range(5)], with_score=False)
    detections = {"v": [{"segment": [float(s), float(s) + 5], "label": "a", "score": float(rng.random())}
                        for s in rng.uniform(0, 50, 60)]}
    view = SimpleNamespace(gt=gt, videos=[SimpleNamespace(id="v", duration=60.0)])
    record = json.loads(json.dumps(detad_summary(view, SegmentTable.from_detections(detections), [0.5]), sort_keys=True))
    assert list(record["fp_fractions"]["true positive"])[:3] == ["10G", "1G", "2G"]  # what the store hands back
    pooled = pooled_fp_profile([record, record])
    assert list(pooled.fractions.index) == [f"{g}G" for g in range(1, 11)]
    direct = false_positive_profile(gt, SegmentTable.from_detections(detections), [0.5]).fractions
    pd.testing.assert_frame_equal(pooled.fractions, direct, check_names=False)


def test_claims_table_is_built_from_records(tmp_path):
    (tmp_path / "ref.yaml").write_text(yaml.safe_dump({"t": {"Toy": [12.5, 6.0], "Wide": [20.0, 9.5]}}))
    claims = [{"id": "wide_beats_toy", "statement": "the wide model is better", "where": "Table 1", "table": "t1",
               "a": "Wide", "b": "Toy", "note": "a toy claim"},
              {"id": "toy_beats_wide", "statement": "the toy model is better", "where": "Table 1", "table": "t1",
               "a": "Toy", "b": "Wide"}]
    path = write_suite(tmp_path / "s.yaml", variants={"wide": {"hidden": 16}}, paper_reference="ref.yaml",
                       rows=[{"label": "Toy", "method": "toy", "paper": ["t", "Toy"]},
                             {"label": "Wide", "method": "toy", "variant": "wide", "paper": ["t", "Wide"]}],
                       claims=claims)
    suite = load_suite(path)
    store = Store(tmp_path / "results", "toy")
    jobs = {j.label: j for j in plan(suite)}
    for split, (toy, wide) in enumerate([(0.10, 0.20), (0.20, 0.32), (0.30, 0.38)]):  # mAP_avg Δ 5, 6, 4
        _write(store, jobs[f"toy/default/75/25/split{split}/seed0"], "ok", {"mAP@0.5": toy, "mAP_avg": toy / 2}, "2026-01-02")
        _write(store, jobs[f"toy/wide/75/25/split{split}/seed0"], "ok", {"mAP@0.5": wide, "mAP_avg": wide / 2}, "2026-01-02")

    build_reports(suite, tmp_path / "results", tmp_path / "reports")
    out = tmp_path / "reports/toy"
    csv = pd.read_csv(out / "claims.csv").set_index("id")
    assert csv.loc["wide_beats_toy", ["n", "Δ mean", "paper A", "paper B", "paper Δ"]].tolist() == pytest.approx([3, 5.0, 9.5, 6.0, 3.5])
    # Δ 5, 6, 4: sd 1, t = 5 / (1 / sqrt 3) = 8.66, two-sided p(t_2) = 0.01307; both claims share it, Holm x2 then x1
    assert csv["paired t p"].tolist() == pytest.approx([0.013072, 0.013072], rel=1e-4)
    assert csv["Holm p"].tolist() == pytest.approx([0.026144, 0.026144], rel=1e-4)
    assert csv["verdict"].tolist() == ["supported", "contradicted"]
    assert pd.read_csv(out / "claims_pairs.csv")["Δ"].tolist() == pytest.approx([5, 6, 4, -5, -6, -4])
    md = (out / "claims.md").read_text()
    assert md.startswith("# Claims of the paper, tested — synthetic data")
    assert "| wide_beats_toy | the wide model is better (Table 1) | Wide > Toy |" in md and "| 9.50 / 6.00 (+3.50) |" in md
    assert "- wide_beats_toy: a toy claim" in md
    assert "- [claims](claims.md) ([csv](claims.csv)" in (out / "README.md").read_text()


def test_rows_can_leave_out_or_keep_only_the_splits_with_a_double_label_leak(tmp_path):
    """``leaky_splits: exclude`` drops the jobs whose record names a double-label leak, ``only`` keeps just those;
    the README lists the leaking splits."""
    path = write_suite(tmp_path / "s.yaml", rows=[{"label": "All", "method": "toy"},
                                                  {"label": "No leak", "method": "toy", "leaky_splits": "exclude"},
                                                  {"label": "Leak", "method": "toy", "leaky_splits": "only"}])
    suite = load_suite(path)
    store = Store(tmp_path / "results", "toy")
    for split, value in enumerate((0.1, 0.2, 0.6)):
        job = next(j for j in plan(suite) if j.label == f"toy/default/75/25/split{split}/seed0")
        payload = job_payload(job, store, "x:y", {"host": "h"}, {})
        leaks = ["Y/X double labels cross the split"] if split == 2 else []
        store.write_record(f"{job.key}-ok", build_record(payload, "ok", result={
            "metrics": {"mAP@0.5": value, "mAP_avg": value}, "extra": {"split": {"leaks": leaks}}},
            runtime={"end_time": "2026-01-02"}))
    build_reports(suite, tmp_path / "results", tmp_path / "reports")
    csv = pd.read_csv(tmp_path / "reports/toy/t1.csv").set_index("row")
    assert csv.loc["All", "mAP_avg mean"] == pytest.approx(30.0) and csv.loc["All", "jobs"] == 3
    assert csv.loc["No leak", "mAP_avg mean"] == pytest.approx(15.0) and csv.loc["No leak", "jobs"] == 2
    assert csv.loc["Leak", "mAP_avg mean"] == pytest.approx(60.0) and csv.loc["Leak", "jobs"] == 1
    readme = (tmp_path / "reports/toy/README.md").read_text()
    assert "- 75/25: splits 2 (Y/X double labels cross the split)" in readme
    with pytest.raises(Exception, match="leaky_splits: 'some' is not one of include, exclude, only"):
        load_suite(write_suite(tmp_path / "bad.yaml", rows=[{"label": "A", "method": "toy", "leaky_splits": "some"}]))
