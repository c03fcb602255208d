"""One table of several suites side by side: STALE's Table 1 prints ActivityNet and THUMOS14 together.

``python -m benchmark report --suites zs_activitynet zs_thumos14 --table table1`` writes
``reports/table1_zs_activitynet+zs_thumos14/table1.{csv,md}``. In each suite the table is the one
named ``table1`` or ``table1_*``; its cells are summarised exactly as in the suite's own report
(report.job_frame + summary_frame). One line per (setting, row label): the first suite's settings
and rows in its order, a row only another suite has at the end of its setting, blank where a suite
lacks it. Per suite a block of columns named after its dataset: n (ok / planned jobs), then per
metric ours (mean ± std) with the paper's number beside; the CSV keeps the numbers (mean, std, n,
paper) and the block's data source.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from benchmark.errors import InputError
from benchmark.harness.report import fmt_cell, job_frame, summary_frame, with_external
from benchmark.harness.store import load_records
from benchmark.harness.suite import Suite, Table


def pick_table(suite: Suite, name: str) -> Table:
    """The suite's table called ``name`` or ``name_<anything>``; exactly one, or a one-line error."""
    found = [t for t in suite.tables if t.name == name or t.name.startswith(name + "_")]
    if len(found) != 1:
        which = f"several tables match ({', '.join(t.name for t in found)})" if found else "no table matches"
        raise InputError(f"{suite.path}: --table {name}: {which}; tables: {', '.join(t.name for t in suite.tables)}")
    return found[0]


def block(suite: Suite, table: Table, label: str, results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The table's per-cell summary, columns prefixed by ``label`` (paper ones: "paper <label> <metric>"), and its job frame."""
    reference = yaml.safe_load(suite.paper_reference.read_text()) if suite.paper_reference else None
    records = load_records(suite.name, results_dir)
    suite, reference = with_external(suite, records, reference)
    table = suite.table(table.name)
    jobs = job_frame(suite, table, records)
    summary = summary_frame(suite, table, jobs, reference).set_index(["setting", "row"])
    counts = ["jobs", "ok"] + [f"{m} n" for m in table.metrics]
    summary[counts] = summary[counts].astype("Int64")  # stays whole numbers where another suite's row adds a blank
    keep = ["jobs", "ok"] + [c for m in table.metrics for c in (f"{m} mean", f"{m} std", f"{m} n", f"paper {m}")
                             if c in summary]
    summary = summary[keep].rename(columns=lambda c: f"paper {label} {c[6:]}" if c.startswith("paper ") else f"{label} {c}")
    return summary, jobs


def build_combined(suites: list[Suite], name: str, results_dir: str | Path, reports_dir: str | Path) -> list[Path]:
    """Write ``<reports_dir>/<name>_<suite1>+<suite2>.../<name>.csv`` and ``.md``; returns the two files."""
    names = [s.name for s in suites]
    if len(set(names)) < len(names):
        raise InputError(f"--suites {' '.join(names)}: a suite repeats")
    labels = [s.dataset for s in suites]
    if len(set(labels)) < len(labels):  # two suites of one dataset: their suite names tell the blocks apart
        labels = names
    tables = [pick_table(s, name) for s in suites]
    blocks = [block(s, t, label, Path(results_dir)) for s, t, label in zip(suites, tables, labels)]
    keys = list(dict.fromkeys(k for summary, _ in blocks for k in summary.index))
    settings = list(dict.fromkeys(setting for setting, _ in keys))
    keys.sort(key=lambda k: settings.index(k[0]))  # grouped by setting as the paper prints it; rows keep their order
    index = pd.MultiIndex.from_tuples(keys, names=["setting", "row"])
    frame = pd.concat([summary.reindex(index) for summary, _ in blocks], axis=1)
    data = ["; ".join(sorted(set(jobs["data"]))) for _, jobs in blocks]  # report.describe_data, per block
    for label, text in zip(labels, data):
        frame[f"{label} data"] = text
    frame = frame.reset_index()

    digits = suites[0].report["digits"]
    shown = frame[["setting", "row"]].rename(columns={"row": "method"})
    if shown["setting"].nunique() == 1:
        shown = shown.drop(columns="setting")
    for label, table in zip(labels, tables):
        here = frame[f"{label} jobs"].notna()
        shown[f"{label} n"] = [f"{ok}/{jobs}" if h else "" for h, ok, jobs
                               in zip(here, frame[f"{label} ok"], frame[f"{label} jobs"])]
        for m in table.metrics:
            shown[f"{label} {m}"] = [fmt_cell(a, b, n, digits) if h else "" for h, a, b, n in zip(
                here, frame[f"{label} {m} mean"], frame[f"{label} {m} std"], frame[f"{label} {m} n"])]
            if f"paper {label} {m}" in frame:
                shown[f"paper {label} {m}"] = frame[f"paper {label} {m}"].map(lambda v: "" if pd.isna(v) else str(v))

    sources = "; ".join(sorted({s for _, jobs in blocks for s in jobs["source"]}))
    out_dir = Path(reports_dir) / f"{name}_{'+'.join(names)}"
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, md = out_dir / f"{name}.csv", out_dir / f"{name}.md"
    frame.to_csv(csv, index=False)
    md.write_text("\n".join([
        f"# {name}: {' and '.join(labels)} side by side — {sources}", "",
        f"Rebuilt from the records by `python -m benchmark report --suites {' '.join(names)} --table {name}`; "
        "do not edit by hand. Column blocks:", "",
        *[f"- **{label}**: suite {s.name} (profile {s.profile}), table {t.name} — {text}"
          for label, s, t, text in zip(labels, suites, tables, data)], "",
        "Cells: mean ± std (ddof=1) over the jobs of the cell (class splits × seeds); n = jobs with an ok record / "
        "jobs planned; a blank block: the suite's table has no such row. Columns labelled **paper** are the "
        "published numbers, not ours.", "",
        shown.to_markdown(index=False, disable_numparse=True), ""]))
    return [csv, md]
