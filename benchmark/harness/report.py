"""Tables and figures of a suite, rebuilt from the ``record.json`` files alone.

For each table of the suite: the planned jobs of every (row, setting) cell are looked up in the
store by ``spec_hash`` (the job identity without the code version, so a report survives a code
change; when a job has records from several code versions the newest ok one counts). Then:
- ``<table>.csv``: one line per cell, ``<metric> mean``, ``<metric> std`` (ddof=1), ``<metric> n``,
  ``<metric> ci95_lo/hi`` (benchmark.evaluation.stats.summarise), ``paper <metric>``, optional paired
  comparison columns;
- ``<table>.md``: the same as ``mean ± std`` (tabulate via pandas), paper numbers in their own
  columns labelled "paper", the data source in the title;
- ``README.md``: an index with one line per table and figure.

Claims (``claims:`` in the suite): ``claims.csv`` / ``claims.md`` test each qualitative claim of the
paper on our splits: Δ = A − B per (split, seed) pair (``claims_pairs.csv``), its mean with a
Student-t 95% CI, the two-sided paired t p-value, Holm's correction across the claims, and a verdict
(``verdict``): supported / contradicted when the Holm p is below ``report.alpha`` and Δ has the
claimed / the opposite sign, otherwise inconclusive, or not run when no split has both sides.

Record metrics are multiplied by the suite's ``report.metric_scale`` (100: the evaluator's fractions
-> the paper's percent) and shown with ``report.digits`` decimals. A table with
``compare: {to: <row label>, metric: <metric>}`` gets a paired comparison of every row with that
row over the (split, seed) pairs both have (benchmark.evaluation.stats.paired_comparison).

Figures: builders registered with ``@register_figure("name")`` and listed under ``figures:`` in the
suite. A builder gets the table's per-job frame (one line per planned job: row label, setting,
split, seed, metrics) and returns the files it wrote; adding a figure = one function + a YAML entry.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import yaml

from benchmark.errors import InputError
from benchmark.evaluation.stats import holm, paired_comparison, summarise
from benchmark.harness.store import DEFAULT_RESULTS, NO_DETECTIONS, load_records
from benchmark.harness.suite import (EXTERNAL, Claim, Suite, Table, cells, data_identity, deep_merge, external_rows, plan,
                                     spec_hash)

DEFAULT_REPORTS = Path("reports")
FIGURES: dict[str, Callable] = {}


def register_figure(name: str):
    """``builder(frame, table, figure_spec, stem, source) -> list[Path]``.

    ``frame``: the table's per-job frame (metrics scaled as in the tables); ``figure_spec``: the YAML
    entry; ``stem``: output path without suffix; ``source``: "synthetic data" or "real data", which
    the figure's title must carry.
    """

    def wrap(fn):
        FIGURES[name] = fn
        return fn

    return wrap


def _setting_rows(frame: pd.DataFrame, fig: dict) -> pd.DataFrame:
    return frame[frame["setting"] == fig.get("setting", frame["setting"].iloc[0])]


@register_figure("error_propagation")
def _error_propagation(frame: pd.DataFrame, table: Table, fig: dict, stem: Path, source: str) -> list[Path]:
    """Average mAP per method: as run, with GT localisation (its classifier), with GT labels (its segments)."""
    from benchmark.evaluation.plots import plot_error_propagation

    settings = {"predicted": "record:mAP_avg", "GT localisation": "record:gt_localisation/mAP_avg",
                "GT labels": "record:gt_labels/mAP_avg"}
    rows = _setting_rows(frame, fig)
    data = pd.concat([pd.DataFrame({"method": rows["row"], "setting": name, "average": rows.get(col, math.nan) / 100})
                      for name, col in settings.items()]).dropna()
    setting = fig.get("setting", "")
    return list(plot_error_propagation(data, stem, f"Error propagation {setting} ({source})"))


@register_figure("noise_curve")
def _noise_curve(frame: pd.DataFrame, table: Table, fig: dict, stem: Path, source: str) -> list[Path]:
    """Average mAP of each method's classifier on GT segments jittered to tIoU 1.0 ... 0.5."""
    from benchmark.evaluation.diagnostics import NOISE_LEVELS
    from benchmark.evaluation.plots import plot_noise_curve

    rows = _setting_rows(frame, fig)
    parts = []
    for level in NOISE_LEVELS:
        col = "record:gt_localisation/mAP_avg" if level == 1.0 else f"record:noise@{level:g}/mAP_avg"
        if col in rows:
            parts.append(pd.DataFrame({"method": rows["row"], "level": level, "average": rows[col] / 100}))
    data = pd.concat(parts).dropna() if parts else pd.DataFrame(columns=["method", "level", "average"])
    setting = fig.get("setting", "")
    return list(plot_noise_curve(data, stem, f"Localisation noise {setting} ({source})"))


def _diagnostics_of(frame: pd.DataFrame, fig: dict) -> dict[str, list[dict]]:
    """Each row's DETAD summaries (one per split), for the rows named in the figure's ``rows``."""
    rows = _setting_rows(frame, fig)
    wanted = fig.get("rows") or list(dict.fromkeys(rows["row"]))
    return {label: [d for d in rows.loc[rows["row"] == label, "diagnostics"] if d] for label in wanted}


def _figure_per_row(frame: pd.DataFrame, fig: dict, stem: Path, source: str, pool, plot) -> list[Path]:
    """One figure per row: ``plot(pool(runs), path, title)``, ``runs`` the row's per-split DETAD summaries."""
    paths = []
    for label, runs in _diagnostics_of(frame, fig).items():
        if runs:
            title = f"{label}, {fig.get('setting', '')}, mean of {len(runs)} splits ({source})"
            paths += list(plot(pool(runs), Path(f"{stem}_{_slug(label)}"), title))
    return paths


def pooled_fp_profile(runs: list[dict]):
    """The DETAD false-positive profiles of a row's jobs (records' ``diagnostics``), averaged."""
    from benchmark.evaluation.diagnostics import ERROR_TYPES, OUTCOMES, FalsePositiveProfile

    # the records' JSON has sorted keys ("10G" before "2G", outcomes alphabetical): back to the profile's order
    groups = sorted(pd.DataFrame(runs[0]["fp_fractions"]).index, key=lambda g: int(g.rstrip("G")))
    total = sum(pd.DataFrame(r["fp_fractions"]).fillna(0.0) for r in runs)
    fractions = (total / len(runs)).reindex(index=groups, columns=list(OUTCOMES))
    gain = {k: float(np.mean([r["fp_gain"][k] for r in runs])) for k in ERROR_TYPES}
    return FalsePositiveProfile(np.array(runs[0]["tiou"]), None, None, fractions,
                                np.mean([r["map_n"] for r in runs], axis=0), gain,
                                float(np.mean([r["n_norm"] for r in runs])))


def pooled_sensitivity(runs: list[dict]):
    """The DETAD sensitivity of a row's jobs: ground-truth counts summed, mAP_N and FN rates averaged."""
    from benchmark.evaluation.diagnostics import SensitivityResult

    bins = pd.concat([pd.DataFrame(r["sensitivity"]) for r in runs])
    pooled = bins.groupby(["characteristic", "bin"], sort=False).agg(
        n_gt=("n_gt", "sum"), map_n=("map_n", "mean"), fn_rate=("fn_rate", "mean")).reset_index()
    return SensitivityResult(np.array(runs[0]["tiou"]), float(np.mean([r["sensitivity_map_n"] for r in runs])), pooled)


@register_figure("fp_profile")
def _fp_profile(frame: pd.DataFrame, table: Table, fig: dict, stem: Path, source: str) -> list[Path]:
    """DETAD false-positive profile per row, averaged over the splits (one figure per row)."""
    from benchmark.evaluation.plots import plot_fp_profile

    return _figure_per_row(frame, fig, stem, source, pooled_fp_profile, plot_fp_profile)


@register_figure("sensitivity")
def _sensitivity(frame: pd.DataFrame, table: Table, fig: dict, stem: Path, source: str) -> list[Path]:
    """DETAD sensitivity (mAP_N and false negatives by coverage, length, instances) per row, split mean."""
    from benchmark.evaluation.plots import plot_sensitivity

    return _figure_per_row(frame, fig, stem, source, pooled_sensitivity, plot_sensitivity)


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label).strip("_").lower()


@register_figure("split_metric")
def _split_metric(frame: pd.DataFrame, table: Table, fig: dict, stem: Path, source: str) -> list[Path]:
    """One dot per split and row with the mean and its 95% CI, for one metric and one setting."""
    from benchmark.evaluation.plots import plot_split_metric

    metric = fig.get("metric", table.metrics[-1])
    setting = fig.get("setting", table.settings[0])
    data = frame[(frame["setting"] == setting) & frame[metric].notna()]
    data = data[["row", "split", metric]].rename(columns={"row": "method"})
    data[metric] = data[metric] / 100  # the plot takes fractions and shows percent
    return list(plot_split_metric(data, stem, f"{table.title}, {setting} ({source})", metric=metric))


def describe_data(data: dict, dataset: str) -> str:
    """The data source for titles: 'synthetic data (...)' or 'real data (...)'."""
    if data["source"] == "synthetic":
        params = ", ".join(f"{k} {v}" for k, v in sorted(data.items()) if k != "source")
        return f"synthetic data (generated, {dataset}-shaped{', ' + params if params else ''})"
    feats = data.get("feature_format") or Path(str(data.get("features") or data.get("root") or "?")).name
    return f"real data ({dataset}, features: {feats})"


def paper_values(reference: dict | None, path: tuple | None, setting: str, dataset: str) -> list | None:
    if reference is None or path is None:
        return None
    if path and isinstance(path[0], tuple):  # one path per paper metric, each to one number
        values = [paper_values(reference, p, setting, dataset) for p in path]
        return [v[0] if v and len(v) == 1 else None for v in values]
    node = reference
    for part in path:
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node):
                return None
            node = node[part]
            continue
        part = part.format(setting=setting, dataset=dataset)
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return [node]  # a table of single numbers (ablations)
    return node if isinstance(node, list) else None


def newest(records: list[dict], status: str | None = None) -> dict[str, dict]:
    """spec_hash -> the newest record of that job (the newest with ``status``, if given)."""
    best: dict[str, dict] = {}
    for rec in records:
        if status is not None and rec["status"] != status:
            continue
        old = best.get(rec["spec_hash"])
        if old is None or rec["provenance"].get("end_time", "") >= old["provenance"].get("end_time", ""):
            best[rec["spec_hash"]] = rec
    return best


# cost columns of a table with ``cost: true``: column -> (phase, field) of the record's compute totals
COST_COLUMNS = {"train CPU s": ("train", "cpu_s"), "train steps": ("train", "steps"),
                "inference CPU s": ("predict", "cpu_s")}


def job_frame(suite: Suite, table: Table, records: list[dict]) -> pd.DataFrame:
    """One line per planned job of ``table``: its cell, split, seed, status and metrics x metric_scale."""
    ok, last = newest(records, "ok"), newest(records)
    lines = []
    for tbl, row, setting, specs in cells(suite):
        if tbl is not table:
            continue
        for spec in specs:
            h = spec_hash(spec, data_identity(spec))
            rec = ok.get(h)
            if rec is not None and row.leaky_splits != "include" and \
                    bool((rec["extra"].get("split") or {}).get("leaks")) != (row.leaky_splits == "only"):
                continue  # the row takes only the splits that separate (only) / keep (exclude) double labels
            line = {"row": row.label, "method": row.method, "variant": row.variant, "setting": setting,
                    "split": spec["split"]["index"], "seed": spec["seed"], "status": last[h]["status"] if h in last else "missing"}
            scale = suite.report["metric_scale"]
            # every recorded metric (analyses too, for the figures); the table's own under the row's prefix
            line |= {f"record:{k}": float(v) * scale for k, v in (rec["metrics"] if rec else {}).items()}
            line["diagnostics"] = rec["extra"].get("diagnostics") if rec else None
            compute = (rec["extra"].get("compute") or {}).get("total", {}) if rec else {}
            for column, (phase, key) in COST_COLUMNS.items():
                line[column] = compute.get(phase, {}).get(key, math.nan)
            line["training"] = (rec["extra"].get("compute") or {}).get("training") if rec else None
            for m in table.metrics:
                value = rec["metrics"].get(row.metrics_from + m) if rec else None
                line[m] = math.nan if value is None else float(value) * scale
            data = (rec or {"spec": spec})["spec"]["data"]
            line["data"] = describe_data(data, spec["dataset"])
            line["source"] = f"{data['source']} data"
            line["leaks"] = bool(rec and (rec["extra"].get("split") or {}).get("leaks"))
            lines.append(line)
    return pd.DataFrame(lines)


def summary_frame(suite: Suite, table: Table, jobs: pd.DataFrame, reference: dict | None) -> pd.DataFrame:
    """One line per cell (row, setting): mean/std/n/CI per metric, paper numbers, paired comparison."""
    out = []
    compare = table.compare
    for (setting, label), cell in jobs.groupby(["setting", "row"], sort=False):
        row = next(r for r in table.rows if r.label == label)
        line = {"setting": setting, "row": label, "method": row.method, "variant": row.variant,
                "jobs": len(cell), "ok": int(cell[table.metrics[0]].notna().sum())}
        for m in table.metrics:
            s = summarise(cell[m].dropna())
            line.update({f"{m} mean": s.mean, f"{m} std": s.std, f"{m} n": s.n,
                         f"{m} ci95_lo": s.ci95[0], f"{m} ci95_hi": s.ci95[1]})
        paper = paper_values(reference, row.paper, setting, suite.dataset) or []
        for m, value in zip(table.paper_metrics, paper):
            if m in table.metrics:
                line[f"paper {m}"] = math.nan if value is None else value
        if compare:
            line.update(_paired(jobs, setting, label, row.compare_to or compare["to"], compare["metric"]))
        if table.cost:
            line |= {column: cell[column].mean() for column in COST_COLUMNS}
            line[TRAINING_COLUMN] = training_summary(cell["training"])
        out.append(line)
    frame = pd.DataFrame(out)
    paper_cols = [f"paper {m}" for m in table.metrics if f"paper {m}" in frame]
    return frame[[c for c in frame.columns if not c.startswith("paper ")] + paper_cols]


TRAINING_COLUMN = "training: epochs, stopped on plateau"


def training_summary(records) -> str:
    """How a cell's models were trained (the convergence rule's records): per model, the mean epochs
    and how many jobs stopped on the held-out plateau (the rest hit the cap, or ran a fixed schedule)."""
    models: dict[str, list[dict]] = {}
    for training in records:
        for name, record in (training or {}).items():
            models.setdefault(name, []).append(record)
    parts = []
    for name, runs in models.items():
        epochs = np.mean([r["epochs"] for r in runs])
        if all(r.get("rule") == "epochs" for r in runs):
            parts.append(f"{name} {epochs:.1f} (fixed)")
        else:
            parts.append(f"{name} {epochs:.1f}, {sum(r['stopped'] == 'plateau' for r in runs)}/{len(runs)}")
    return "; ".join(parts)


def by_pair(cell: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``metric`` of each row (columns) per (split, seed) pair (index) of one setting's jobs. A row planned with
    one seed (a training-free method, a prediction file) gives the same number whatever the seed, so it is paired
    with every seed of the other rows."""
    wide = cell.pivot_table(index=["split", "seed"], columns="row", values=metric)
    if cell["seed"].nunique() > 1:
        seedless = [row for row, seeds in cell.groupby("row")["seed"].nunique().items() if seeds == 1 and row in wide]
        wide[seedless] = wide[seedless].groupby(level="split").transform("first")
    return wide


def _paired(jobs: pd.DataFrame, setting: str, label: str, ref: str, metric: str) -> dict:
    cols = {f"Δ {metric} vs {ref}": math.nan, f"relative Δ vs {ref}": math.nan, "paired t p": math.nan, "pairs": 0}
    if label == ref:
        return cols
    both = by_pair(jobs[jobs["setting"] == setting], metric)
    if label not in both or ref not in both:
        return cols
    pairs = both[[label, ref]].dropna()
    if len(pairs) == 0:
        return cols
    c = paired_comparison(pairs[label], pairs[ref])
    base = pairs[ref].mean()
    return {f"Δ {metric} vs {ref}": c.diff, f"relative Δ vs {ref}": c.diff / base if base else math.nan,
            "paired t p": c.t_pvalue, "pairs": c.n}


def fmt_cell(mean: float, std: float, n: int, digits: int) -> str:
    if n == 0:
        return "—"
    if n == 1 or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def leak_note(jobs: pd.DataFrame) -> list[str]:
    """The table's class splits that separate a double-labelled class pair, as one line (none: no line)."""
    leaky = jobs[jobs["leaks"]].groupby("setting")["split"].unique() if len(jobs) else {}
    if not len(leaky):
        return []
    return ["", "Class splits with a double-label leak (training sees instances of an unseen class, DESIGN.md §1 "
            "pitfall 5): " + "; ".join(f"{setting} split {', '.join(map(str, sorted(splits)))}"
                                       for setting, splits in leaky.items()) + "."]


def markdown(table: Table, summary: pd.DataFrame, title: str, digits: int, notes: list[str] = ()) -> str:
    shown = pd.DataFrame({"setting": summary["setting"], "method": summary["row"]})
    shown["n"] = [f"{ok}/{jobs}" for ok, jobs in zip(summary["ok"], summary["jobs"])]
    for m in table.metrics:
        shown[m] = [fmt_cell(a, b, n, digits) for a, b, n in zip(summary[f"{m} mean"], summary[f"{m} std"], summary[f"{m} n"])]
    for col in summary.columns:
        if col.startswith("Δ ") or col.startswith("relative Δ"):
            fmt = "{:." + str(digits) + "f}" if col.startswith("Δ") else "{:.0%}"
            shown[col] = summary[col].map(lambda v, fmt=fmt: "" if pd.isna(v) else fmt.format(v))
        elif col == "paired t p":
            shown[col] = summary[col].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    for column in COST_COLUMNS:
        if column in summary:
            whole = column.endswith("steps") or None
            shown[column] = summary[column].map(
                lambda v, whole=whole: "" if pd.isna(v) else f"{v:,.0f}" if whole or v >= 100 else f"{v:.1f}")
    if TRAINING_COLUMN in summary:
        shown[TRAINING_COLUMN] = summary[TRAINING_COLUMN]
    for m in table.metrics:
        if f"paper {m}" in summary:
            shown[f"paper {m}"] = summary[f"paper {m}"].map(lambda v: "" if pd.isna(v) else str(v))
    if shown["setting"].nunique() == 1:
        shown = shown.drop(columns="setting")
    lines = [f"# {title}", ""]
    if table.mirrors:
        lines.append(f"Mirrors {table.mirrors}. ")
    lines += [
        "Cells: mean ± std (ddof=1) over the jobs of the cell (class splits × seeds); n = jobs with an ok "
        "record / jobs planned. Columns labelled **paper** are the published numbers, not ours."
        + (" Cost columns: mean per job of the training (fit) and inference (predict) CPU seconds, all threads, "
           "and optimizer steps; a shared artifact (BMN, its proposals) is charged in full to every job that "
           "uses it, whether it built it or found it cached. Training column: per trained model, the mean "
           "epochs and the jobs whose held-out seen-class loss stopped improving (the shared convergence rule) "
           "out of the jobs; the others reached the cap." if table.cost else ""),
        *notes, "", shown.to_markdown(index=False, disable_numparse=True), ""]
    return "\n".join(lines)


def verdict(diff: float, p_holm: float, n: int, direction: str, alpha: float) -> tuple[str, str]:
    """(verdict, why) for the claim "A > B" (direction "greater") or "A < B" ("less"), Δ = mean(A − B)."""
    if n == 0:
        return "not run", "no split has both sides"
    if n < 2:
        return "inconclusive", f"n = {n}"
    if math.isnan(p_holm):
        return "inconclusive", "no test: Δ = 0 on every split"
    if p_holm >= alpha:
        return "inconclusive", f"Holm p ≥ {alpha:g}"
    as_claimed = diff > 0 if direction == "greater" else diff < 0
    return ("supported" if as_claimed else "contradicted"), f"Holm p < {alpha:g}"


def side_name(side: tuple[str, ...]) -> str:
    return side[0] if len(side) == 1 else f"({side[0]} − {side[1]})"


def claim_pairs(jobs: pd.DataFrame, claim: Claim) -> pd.DataFrame:
    """The claim's paired values: one line per (split, seed) with both sides, columns A, B and Δ = A − B."""
    cell = jobs[jobs["setting"] == claim.setting]
    wide = by_pair(cell, claim.metric).reindex(columns=list(dict.fromkeys(claim.a + claim.b)))

    def side(labels: tuple[str, ...]) -> pd.Series:
        return wide[labels[0]] - wide[labels[1]] if len(labels) == 2 else wide[labels[0]]

    pairs = pd.DataFrame({"A": side(claim.a), "B": side(claim.b)}).dropna()
    return pairs.assign(Δ=pairs["A"] - pairs["B"])


def claims_frame(claims: tuple[Claim, ...], frames: dict[str, pd.DataFrame], alpha: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One line per claim (evidence, Holm p across the claims, verdict) and the paired values behind them."""
    lines, paired = [], []
    for claim in claims:
        pairs = claim_pairs(frames[claim.table], claim)
        c = paired_comparison(pairs["A"], pairs["B"])
        sign = ">" if claim.direction == "greater" else "<"
        lines.append({"id": claim.id, "table": claim.table, "setting": claim.setting, "metric": claim.metric,
                      "test": f"{side_name(claim.a)} {sign} {side_name(claim.b)}", "statement": claim.statement,
                      "where": claim.where, "note": claim.note, "direction": claim.direction, "n": c.n,
                      "A mean": pairs["A"].mean(), "B mean": pairs["B"].mean(), "Δ mean": c.diff,
                      "Δ ci95_lo": c.diff_ci95[0], "Δ ci95_hi": c.diff_ci95[1], "paired t p": c.t_pvalue})
        paired.append(pairs.reset_index().assign(id=claim.id))
    out = pd.DataFrame(lines)
    out["Holm p"] = holm(out["paired t p"])
    out["Holm m"] = int(out["paired t p"].notna().sum())
    out["alpha"] = alpha
    out["verdict"], out["why"] = zip(*(verdict(d, p, n, claim.direction, alpha) for d, p, n, claim
                                       in zip(out["Δ mean"], out["Holm p"], out["n"], claims)))
    return out, pd.concat(paired)[["id", "split", "seed", "A", "B", "Δ"]]


def paper_side(suite: Suite, reference: dict | None, claim: Claim, side: tuple[str, ...]) -> float:
    """The paper's number for a side of a claim (a row, or the difference of two), nan if it has none."""
    table = suite.table(claim.table)
    if claim.metric not in table.paper_metrics:
        return math.nan
    position, values = table.paper_metrics.index(claim.metric), []
    for label in side:
        row = next(r for r in table.rows if r.label == label)
        entry = paper_values(reference, row.paper, claim.setting, suite.dataset) or []
        values.append(entry[position] if position < len(entry) and entry[position] is not None else math.nan)
    return values[0] - values[1] if len(values) == 2 else values[0]


def _p(value: float) -> str:
    return "" if pd.isna(value) else "< 0.001" if value < 0.001 else f"{value:.3f}"


def claims_markdown(claims: pd.DataFrame, title: str, digits: int, synthetic: bool) -> str:
    def num(v: float, sign: str = "+") -> str:
        return "" if pd.isna(v) else f"{round(v, digits) + 0.0:{sign}.{digits}f}"  # + 0.0: no "-0.0"

    def sides(a: float, b: float, d: float) -> str:
        return "" if pd.isna(d) else f"{num(a, '')} / {num(b, '')} ({num(d)})"

    shown = pd.DataFrame({
        "id": claims["id"], "the paper says": claims["statement"] + " (" + claims["where"] + ")",
        "test": claims["test"], "setting": claims["setting"], "n": claims["n"].astype(str),
        "ours: A / B": [f"{num(a, '')} / {num(b, '')}" if n else "" for a, b, n
                        in zip(claims["A mean"], claims["B mean"], claims["n"])],
        "Δ [95% CI]": [num(d) + (f" [{num(lo)}, {num(hi)}]" if n > 1 else "")
                       for d, lo, hi, n in zip(claims["Δ mean"], claims["Δ ci95_lo"], claims["Δ ci95_hi"], claims["n"])],
        "paired t p": claims["paired t p"].map(_p), "Holm p": claims["Holm p"].map(_p),
        "verdict": [v if v in ("supported", "contradicted") else f"{v} ({why})"
                    for v, why in zip(claims["verdict"], claims["why"])],
        "paper: A / B (Δ)": [sides(a, b, d) for a, b, d in zip(claims["paper A"], claims["paper B"], claims["paper Δ"])]})
    alpha, family = claims["alpha"].iloc[0], int(claims["Holm m"].iloc[0])
    notes = [f"- {i}: {note}" for i, note in zip(claims["id"], claims["note"]) if note]
    return "\n".join([
        f"# {title}", "",
        "Each claim the paper draws from its tables, tested on our runs. Δ = A − B per class split (and seed) on "
        "the splits both sides have (n pairs; a side in brackets is the per-split difference of two rows), in the "
        f"tables' units ({', '.join(dict.fromkeys(claims['metric']))}); ours: A / B are the means over those pairs. "
        "Δ [95% CI]: mean and Student-t interval; paired t "
        f"p: two-sided paired t-test; Holm p: Holm's correction across the {family} claims that have a p-value "
        "(a claim with n < 2 has none). "
        f"Verdict: supported if Holm p < {alpha:g} and Δ has the claimed sign, contradicted if Holm p < {alpha:g} and "
        "the opposite sign, otherwise inconclusive; not run if no split has both sides. Columns labelled **paper** "
        "are the published means (no spread given), not ours. Paired values: [claims_pairs.csv](claims_pairs.csv).",
        *(["", "On synthetic data a verdict says what this test bed shows, not what holds on the paper's dataset."]
          if synthetic else []),
        "", shown.to_markdown(index=False, disable_numparse=True), "",
        *(["Notes:", "", *notes, ""] if notes else [])])


def write_claims(suite: Suite, frames: dict[str, pd.DataFrame], reference: dict | None, out_dir: Path) -> tuple[list[Path], str]:
    """claims.csv, claims_pairs.csv and claims.md; returns the files and the README index line."""
    claims, pairs = claims_frame(suite.claims, frames, suite.report["alpha"])
    claims["paper A"] = [paper_side(suite, reference, c, c.a) for c in suite.claims]
    claims["paper B"] = [paper_side(suite, reference, c, c.b) for c in suite.claims]
    claims["paper Δ"] = claims["paper A"] - claims["paper B"]
    data = sorted({d for c in suite.claims for d in frames[c.table]["data"]})
    claims["data"] = "; ".join(data)
    paths = [out_dir / "claims.csv", out_dir / "claims_pairs.csv", out_dir / "claims.md"]
    claims.to_csv(paths[0], index=False)
    pairs.to_csv(paths[1], index=False)
    synthetic = any(s == "synthetic data" for c in suite.claims for s in frames[c.table]["source"])
    paths[2].write_text(claims_markdown(claims, f"Claims of the paper, tested — {'; '.join(data)}",
                                        suite.report["digits"], synthetic))
    counts = claims["verdict"].value_counts()
    tally = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("supported", "contradicted", "inconclusive", "not run"))
    return paths, f"- [claims](claims.md) ([csv](claims.csv), [paired values](claims_pairs.csv)) — {len(claims)} claims: {tally}"


def run_facts(records: list[dict]) -> list[str]:
    """Wall time and hardware of the planned jobs' ok records (first job start to last job end), per code
    version: a run that re-ran only some jobs after a code change shows as two runs."""
    used = [r for r in records if r.get("provenance", {}).get("start_time") and r.get("timings")]
    if not used:
        return ["No finished jobs yet."]
    runs: dict[str, list[dict]] = {}
    for r in used:
        runs.setdefault(r.get("code_version", "?"), []).append(r)
    lines = []
    for version, group in sorted(runs.items(), key=lambda kv: min(r["provenance"]["start_time"] for r in kv[1])):
        starts = pd.to_datetime([r["provenance"]["start_time"] for r in group])
        ends = pd.to_datetime([r["provenance"]["end_time"] for r in group])
        busy = sum(r["timings"].get("run", 0.0) for r in group)
        lines.append(f"- {len(group)} job records{f' of code {version}' if len(runs) > 1 else ''}; first job start "
                     f"{starts.min()}, last job end {ends.max()}: wall time {(ends.max() - starts.min()).total_seconds() / 60:.1f} "
                     f"min (an interrupted and resumed run counts its pause too); summed job time {busy / 60:.1f} min.")
    hosts = sorted({f"{r['provenance'].get('host')} ({r['provenance'].get('platform')}, "
                    f"{r['provenance'].get('device')}, {r['provenance'].get('threads')} torch threads per job)"
                    for r in used})
    return lines + [f"- Hardware: {'; '.join(hosts)}."]


def failed_jobs(suite: Suite, records: list[dict]) -> list[str]:
    """One line per planned job whose newest record is not ok: its label, status and error line."""
    last = newest(records)
    lines = []
    for job in plan(suite):
        rec = last.get(job.spec_hash)
        if rec is not None and rec["status"] != "ok":
            error = (rec.get("error") or "").strip().splitlines()
            lines.append(f"- `{job.label}` ({rec['status']}): {error[-1] if error else 'no error text'}")
    return lines


def planned_records(suite: Suite, records: list[dict]) -> list[dict]:
    """The newest ok record of every planned job of ``suite`` (not of other profiles' jobs in the store)."""
    ok = newest(records, "ok")
    return [ok[job.spec_hash] for job in plan(suite) if job.spec_hash in ok]


def leaky_splits(records: list[dict]) -> list[str]:
    """One line per setting whose class splits separate a double-labelled class pair (DESIGN.md §1,
    pitfall 5): the split indices and the pairs, from the records' ``extra.split.leaks``."""
    leaks: dict[str, dict[int, set]] = {}
    for rec in records:
        for note in (rec["extra"].get("split") or {}).get("leaks") or []:
            leaks.setdefault(rec["spec"]["setting"], {}).setdefault(rec["spec"]["split"]["index"], set()).add(note)
    return [f"- {setting}: splits {', '.join(map(str, sorted(by_split)))} "
            f"({'; '.join(sorted(set().union(*by_split.values())))})" for setting, by_split in sorted(leaks.items())]


def without_detections(records: list[dict]) -> list[str]:
    """One line per job that detected nothing on any test video (a collapsed model; recorded "ok")."""
    return [f"- `{rec['labels'][0]}`" for rec in records if NO_DETECTIONS in rec["extra"].get("notes", [])]


def with_external(suite: Suite, records: list[dict], reference: dict | None) -> tuple[Suite, dict | None]:
    """The suite with a row for every method scored from its prediction files (``external:<name>``
    records, ``python -m benchmark score``) in each table that takes them (its ``external`` templates)
    and where it has a record; the reference with the numbers a paper published for it (the newest
    record's ``--paper-numbers``, under ``external.<name>.<table>.<setting>``)."""
    scored = [r for r in records if r["spec"]["method"].startswith(EXTERNAL)]
    if not scored:
        return suite, reference
    hashes, names = {r["spec_hash"] for r in scored}, sorted({r["spec"]["method"][len(EXTERNAL):] for r in scored})
    tables = []
    for table in suite.tables:
        candidates = replace(table, rows=tuple(row for name in names for row in external_rows(table, name)))
        kept = {row.label for _, row, _, specs in cells(replace(suite, tables=(candidates,)))
                if any(spec_hash(spec, data_identity(spec)) in hashes for spec in specs)}
        tables.append(replace(table, rows=table.rows + tuple(r for r in candidates.rows if r.label in kept)))
    papers: dict = {}
    for rec in sorted(scored, key=lambda r: r["provenance"].get("end_time", "")):  # the newest wins
        numbers = rec["extra"].get("paper_numbers")
        if numbers:
            name = rec["spec"]["method"][len(EXTERNAL):]
            papers[name] = {tbl: {setting: [values.get(m) for m in suite.table(tbl).paper_metrics]
                                  for setting, values in by_setting.items()}
                            for tbl, by_setting in numbers.items() if tbl in {t.name for t in suite.tables}}
    return replace(suite, tables=tuple(tables)), deep_merge(reference or {}, {"external": papers})


def external_lines(records: list[dict]) -> list[str]:
    """One line per prediction file scored into the reports: where it came from and what was left out of the metric."""
    lines = []
    scored = newest([r for r in records if r["spec"]["method"].startswith(EXTERNAL)], "ok").values()
    for rec in sorted(scored, key=lambda r: r["labels"][0]):
        source, counts = rec["provenance"].get("prediction_file", {}), rec["extra"].get("scored", {})
        lines.append(f"- `{rec['labels'][0]}`: {source.get('path')} ({source.get('format')}, {source.get('bytes')} bytes, "
                     f"sha256 {str(source.get('sha256'))[:12]}…, scored {rec['provenance'].get('end_time')}): "
                     f"{counts.get('predictions')} predictions, {counts.get('outside_scored_videos')} on videos outside the "
                     f"split's scored set and {counts.get('outside_test_classes')} with a label outside its test classes "
                     f"left out of the metric")
    return lines


def external_comparisons(suite: Suite, frames: dict[str, pd.DataFrame], out_dir: Path) -> tuple[list[Path], list[str]]:
    """For each method scored from its files: its paired comparison with every other row of every table it
    is in that reads the same analysis (as run, GT labels, fused), Δ = it − the row over the (split, seed)
    pairs both have, Student-t 95% CI, paired t and Wilcoxon p, on the table's compared metric (its last
    one without ``compare``). ``paired_<name>.csv/.md``."""
    paths, index = [], []
    for name in sorted({row.method[len(EXTERNAL):] for t in suite.tables for row in t.rows if row.method.startswith(EXTERNAL)}):
        lines = []
        for table in suite.tables:
            metric = table.compare["metric"] if table.compare else table.metrics[-1]
            jobs = frames[table.name]
            ours = [r for r in table.rows if r.method == EXTERNAL + name]
            for setting in table.settings:
                wide = by_pair(jobs[jobs["setting"] == setting], metric)
                for label, prefix in ((r.label, r.metrics_from) for r in ours if r.label in wide):
                    for other in (r.label for r in table.rows if not r.method.startswith(EXTERNAL) and r.label in wide
                                  and r.metrics_from == prefix):  # like with like: as run, GT labels, fused
                        pairs = wide[[label, other]].dropna()
                        c = paired_comparison(pairs[label], pairs[other])
                        lines.append({"table": table.name, "setting": setting, "metric": metric, "row": label,
                                      "vs": other, "pairs": c.n, "row mean": pairs[label].mean(), "vs mean": pairs[other].mean(),
                                      "Δ mean": c.diff, "Δ ci95_lo": c.diff_ci95[0], "Δ ci95_hi": c.diff_ci95[1],
                                      "paired t p": c.t_pvalue, "wilcoxon p": c.wilcoxon_pvalue})
        if not lines:
            continue
        frame = pd.DataFrame(lines)
        stem = out_dir / f"paired_{_slug(name)}"
        frame.to_csv(stem.with_suffix(".csv"), index=False)
        digits = suite.report["digits"]
        shown = frame[["table", "setting", "row", "vs", "pairs"]].assign(**{
            "ours: row / vs": [f"{a:.{digits}f} / {b:.{digits}f}" for a, b in zip(frame["row mean"], frame["vs mean"])],
            "Δ [95% CI]": [f"{d:+.{digits}f}" + ("" if math.isnan(lo) else f" [{lo:+.{digits}f}, {hi:+.{digits}f}]")
                           for d, lo, hi in zip(frame["Δ mean"], frame["Δ ci95_lo"], frame["Δ ci95_hi"])],
            "paired t p": frame["paired t p"].map(_p), "wilcoxon p": frame["wilcoxon p"].map(_p)})
        stem.with_suffix(".md").write_text("\n".join([
            f"# {name} against every method, paired over class splits", "",
            f"{name} is scored from its prediction files (`python -m benchmark score`). Per table and setting, each of its "
            "rows against every other row of the same analysis (as run, GT labels, fused): Δ = it − the row per (split, seed) pair "
            "both have, on the table's compared metric (Table 1: average mAP), in the tables' units; Student-t 95% CI, "
            "two-sided paired t-test and Wilcoxon signed-rank p (no correction for the number of comparisons).", "",
            shown.to_markdown(index=False, disable_numparse=True), ""]))
        paths += [stem.with_suffix(".csv"), stem.with_suffix(".md")]
        index.append(f"- [{name} against every method]({stem.name}.md) ([csv]({stem.name}.csv)) — {len(frame)} paired comparisons")
    return paths, index


def build_reports(suite: Suite, results_dir: str | Path = DEFAULT_RESULTS,
                  reports_dir: str | Path = DEFAULT_REPORTS) -> list[Path]:
    """Write every table and figure of ``suite`` and the index; returns the files written."""
    records = load_records(suite.name, results_dir)
    reference = yaml.safe_load(suite.paper_reference.read_text()) if suite.paper_reference else None
    suite, reference = with_external(suite, records, reference)
    out_dir = Path(reports_dir) / suite.name
    out_dir.mkdir(parents=True, exist_ok=True)
    digits = suite.report["digits"]
    written, index, frames = [], [], {}
    for table in suite.tables:
        jobs = job_frame(suite, table, records)
        summary = summary_frame(suite, table, jobs, reference)
        title = f"{table.title} — {'; '.join(sorted(set(jobs['data'])))}"
        frames[table.name] = jobs
        csv, md = out_dir / f"{table.name}.csv", out_dir / f"{table.name}.md"
        summary.to_csv(csv, index=False)
        md.write_text(markdown(table, summary, title, digits, leak_note(jobs)))
        written += [csv, md]
        index.append(f"- [{table.name}]({md.name}) ([csv]({csv.name})) — {table.description or table.title}"
                     f" ({int(summary['ok'].sum())}/{int(summary['jobs'].sum())} jobs ok)")
    claim_lines = []
    if suite.claims:
        paths, line = write_claims(suite, frames, reference, out_dir)
        written += paths
        claim_lines = [line]
    paired_paths, paired_lines = external_comparisons(suite, frames, out_dir)
    written += paired_paths
    figure_lines = []
    for fig in suite.figures:
        if fig["builder"] not in FIGURES:
            raise InputError(f"{suite.path}: figures: unknown builder {fig['builder']!r} (known: {', '.join(FIGURES)})")
        table = suite.table(fig["table"])
        if frames[table.name][table.metrics[0]].notna().sum() == 0:
            figure_lines.append(f"- {fig['name']}: not drawn, no results yet — {fig.get('description', '')}")
            continue
        frame = frames[table.name]
        source = "; ".join(sorted(set(frame["source"])))
        paths = FIGURES[fig["builder"]](frame, table, fig, out_dir / fig["name"], source)
        written += paths
        links = ", ".join(f"[{p.suffix[1:]}]({p.name})" for p in paths)
        figure_lines.append(f"- {fig['name']} ({links}) — {fig.get('description', '')}")
    sources = "; ".join(sorted({s for f in frames.values() for s in f["source"]}))
    failures = failed_jobs(suite, records)
    planned = planned_records(suite, records)
    leaks, empty = leaky_splits(planned), without_detections(planned)
    scored = external_lines(records)
    readme = out_dir / "README.md"
    readme.write_text("\n".join([
        f"# Reports: {suite.name} (profile {suite.profile}) — {sources}", "",
        *([suite.description, ""] if suite.description else []),
        f"Rebuilt from the records in `results/{suite.name}/` by "
        f"`python -m benchmark report --suite {suite.name} --profile {suite.profile}`; do not edit by hand.", "",
        "## Tables", "", *index, "",
        *(["## Claims", "", *claim_lines, ""] if claim_lines else []),
        *(["## Splits with a double-label leak", "",
           "A class pair annotated on the same segments (one class's instances are all instances of the other too) "
           "with one class seen and the other unseen: training sees instances of an unseen class. Flagged in every "
           "job's notes; the protocol audit gives the means with and without these splits.", "", *leaks, ""]
          if leaks else []),
        *(["## Failed jobs", "", "Their tracebacks are in `results/<suite>/<key>/job.log`.", "", *failures, ""]
          if failures else []),
        *(["## Methods scored from their prediction files", "",
           "Rows named after a method we do not run: its own prediction files, one per class split, scored by "
           "`python -m benchmark score` under this suite's protocol (the evaluation of our jobs, on the same split); "
           "no training cost is known for them. Each against every method, paired over the class splits:", "",
           *paired_lines, "", "The files scored:", "", *scored, ""] if scored else []),
        *(["## Jobs without a single detection", "", "Finished, but the model detected nothing on any test video "
           "(mAP 0 in every table): a collapsed model, not a measurement of the method at its best.", "", *empty, ""]
          if empty else []),
        *(["## Figures", "", *figure_lines, ""] if figure_lines else []),
        "## Run", "", *run_facts(planned), "",
    ]))
    return written + [readme]
