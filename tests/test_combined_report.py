"""``report --suites A B --table t1``: one table of two suites side by side, checked against hand-computed numbers."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from benchmark.cli import main
from benchmark.harness import registry
from benchmark.harness.scheduler import job_payload
from benchmark.harness.store import Store, atomic_write_json, build_record
from benchmark.harness.suite import load_suite, plan
from harness_toy import write_suite

PAPER = ["t1_zero_shot", "{setting}", "{dataset}"]


@pytest.fixture(autouse=True)
def toy_env(monkeypatch):
    import harness_toy  # noqa: F401

    monkeypatch.setattr(registry, "_DISCOVERED", {"methods"})
    monkeypatch.setenv("ZSTAD_CODE_VERSION", "test")


def _toy_suite(tmp_path, name: str, dataset: str, metrics: list[str], labels: list[str], **extra):
    rows = [{"label": label, "method": "toy", "variant": label.lower(), "paper": PAPER + [label]} for label in labels]
    table = {"title": f"{name} table", "metrics": metrics, "rows": rows}
    # t10 must not be taken for t1 (the name, or the name + "_")
    tables = {"t1_zero_shot": table, "t10": {"title": "other", "metrics": metrics, "rows": rows[:1]}}
    return write_suite(tmp_path / f"{name}.yaml", name=name, dataset=dataset, tables=tables, paper_reference="ref.yaml",
                       methods={"toy": {"variants": {label.lower(): {"hidden": 8 + i} for i, label in enumerate(labels)}}},
                       **extra)


def _write(results, suite, label: str, values: list[dict]):
    """ok records of the t1 jobs of row ``label``, split i getting ``values[i]``."""
    store = Store(results, suite.name)
    jobs = {j.label: j for j in plan(suite)}
    for split, metrics in enumerate(values):
        job = jobs[f"toy/{label.lower()}/75/25/split{split}/seed0"]
        store.write_record(f"{job.key}-ok", build_record(job_payload(job, store, "x:y", {"host": "h"}, {}), "ok",
                                                         result={"metrics": metrics}, runtime={"end_time": "2026-01-02"}))


@pytest.fixture
def two_suites(tmp_path):
    """alpha (synthetic; rows Toy, Wide) and beta (real data from its last run's flags; rows Toy, Narrow)."""
    (tmp_path / "ref.yaml").write_text(yaml.safe_dump({"t1_zero_shot": {"75/25": {
        "alpha": {"Toy": [12.5, 6.0]}, "beta": {"Toy": [30.0, 11.0, 15.0], "Narrow": [1.0, 2.0, 3.0]}}}}))
    _toy_suite(tmp_path, "toy_a", "alpha", ["mAP@0.5", "mAP_avg"], ["Toy", "Wide"])
    path_b = _toy_suite(tmp_path, "toy_b", "beta", ["mAP@0.3", "mAP@0.7", "mAP_avg"], ["Toy", "Narrow"])
    results = tmp_path / "results"
    alpha = load_suite(tmp_path / "toy_a.yaml")
    _write(results, alpha, "Toy", [{"mAP@0.5": v, "mAP_avg": v / 2} for v in (0.1, 0.2, 0.3)])
    _write(results, alpha, "Wide", [{"mAP@0.5": 0.5, "mAP_avg": 0.25}])  # 1 of 3 jobs ok
    (tmp_path / "gt.json").write_text("{}")
    real = {"data": {"source": "real", "real": {"annotations": str(tmp_path / "gt.json"), "features": str(tmp_path)}}}
    atomic_write_json(results / "toy_b/_runs/default.json", {"overrides": real, "time": "2026-01-02T00:00:00"})
    beta = load_suite(path_b, "default", real)
    _write(results, beta, "Toy", [{"mAP@0.3": v, "mAP@0.7": v / 4, "mAP_avg": v / 2} for v in (0.4, 0.6)])
    return tmp_path


def _report(tmp_path, *flags: str) -> int:
    return main(["report", *flags, "--results-dir", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports")])


def test_two_suites_side_by_side(two_suites, capsys):
    assert _report(two_suites, "--suites", str(two_suites / "toy_a.yaml"), str(two_suites / "toy_b.yaml"),
                   "--table", "t1") == 0
    out = two_suites / "reports/t1_toy_a+toy_b"
    assert str(out) in capsys.readouterr().out
    csv = pd.read_csv(out / "t1.csv").set_index("row")
    assert list(csv.index) == ["Toy", "Wide", "Narrow"]  # the first suite's rows, then the second's own
    # alpha Toy: mAP@0.5 10, 20, 30 -> mean 20, std 10; beta Toy: mAP@0.3 40, 60 -> 50, sqrt(200); mAP@0.7 10, 15
    assert csv.loc["Toy", ["alpha mAP@0.5 mean", "alpha mAP@0.5 std", "alpha mAP@0.5 n"]].tolist() == pytest.approx([20, 10, 3])
    assert csv.loc["Toy", ["beta mAP@0.3 mean", "beta mAP@0.3 std", "beta mAP@0.7 mean"]].tolist() == pytest.approx(
        [50, math.sqrt(200), 12.5])
    assert csv.loc["Toy", ["beta ok", "beta jobs"]].tolist() == [2, 3]
    # the paper's numbers beside ours, by the metrics' positions in each suite's table
    assert csv.loc["Toy", ["paper alpha mAP@0.5", "paper beta mAP@0.3", "paper beta mAP_avg"]].tolist() == [12.5, 30.0, 15.0]
    # a row one suite lacks is blank in its block, not zero
    assert csv.loc["Wide", ["beta jobs", "beta mAP@0.3 mean", "paper beta mAP@0.3"]].isna().all()
    assert csv.loc["Narrow", ["alpha jobs", "alpha mAP@0.5 mean"]].isna().all()
    assert csv.loc["Narrow", "paper beta mAP@0.7"] == 2.0 and csv.loc["Narrow", "beta ok"] == 0

    md = (out / "t1.md").read_text()
    lines = md.splitlines()
    assert lines[0] == "# t1: alpha and beta side by side — real data; synthetic data"
    assert "- **alpha**: suite toy_a (profile default), table t1_zero_shot — synthetic data (generated, alpha-shaped" in md
    assert "- **beta**: suite toy_b (profile default), table t1_zero_shot — real data (beta, features:" in md
    header = next(line for line in lines if line.startswith("| method"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "method", "alpha n", "alpha mAP@0.5", "paper alpha mAP@0.5", "alpha mAP_avg", "paper alpha mAP_avg",
        "beta n", "beta mAP@0.3", "paper beta mAP@0.3", "beta mAP@0.7", "paper beta mAP@0.7", "beta mAP_avg",
        "paper beta mAP_avg"]
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]] for line in lines
             if line.startswith("| ") and line != header}
    assert cells["Toy"] == ["3/3", "20.00 ± 10.00", "12.5", "10.00 ± 5.00", "6.0",
                            "2/3", "50.00 ± 14.14", "30.0", "12.50 ± 3.54", "11.0", "25.00 ± 7.07", "15.0"]
    assert cells["Wide"][:5] == ["1/3", "50.00", "", "25.00", ""] and cells["Wide"][5:] == [""] * 7
    assert cells["Narrow"][:5] == [""] * 5 and cells["Narrow"][5:] == ["0/3", "—", "1.0", "—", "2.0", "—", "3.0"]


def test_table_that_is_not_in_every_suite_is_a_one_line_error(two_suites, capsys):
    a, b = str(two_suites / "toy_a.yaml"), str(two_suites / "toy_b.yaml")
    assert _report(two_suites, "--suites", a, b, "--table", "t2") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--table t2: no table matches; tables: t1_zero_shot, t10" in err
    assert _report(two_suites, "--suites", a, b) == 2 and "needs --table" in capsys.readouterr().err
    assert not (two_suites / "reports").exists()


def test_report_of_one_suite_is_unchanged(two_suites, capsys):
    assert _report(two_suites, "--suite", str(two_suites / "toy_b.yaml")) == 0
    assert "reports (default):" in capsys.readouterr().out
    md = (two_suites / "reports/toy_b/t1_zero_shot.md").read_text()
    assert md.startswith("# toy_b table — real data (beta, features:") and "| 50.00 ± 14.14 |" in md
    assert _report(two_suites, "--suite", str(two_suites / "toy_b.yaml"), "--table", "t1") == 2
