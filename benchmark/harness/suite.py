"""Suites: a YAML file of datasets, splits, methods x variants, seeds and tables -> a list of jobs.

Schema (``benchmark/suites/zs_activitynet.yaml`` is the worked example; every top-level key but
``methods`` and ``tables`` is optional)::

    name: zs_activitynet                 # default: the file name
    description: one line
    paper_reference: paper_reference/stale_eccv2022.yaml   # relative to the suite file
    task: tad                            # tad (segments) | stad (boxes, benchmark.harness.stad)
    dataset: activitynet
    data:
      source: synthetic                  # synthetic | real
      synthetic: {profile: default, seed: 0}               # benchmark.data.synthetic parameters
      real: {root: null, annotations: null, features: null, video_info: null, feature_format: null}
    splits: {settings: ["75/25", "50/50"], indices: [0, 1], lists: generated, seed: 0, lists_dir: null}
    seeds: [0]                           # training seeds
    hparams: {epochs: 15}                # profile hyper-parameters, handed to the runner
    protocol: {external_classifier: none, ...}   # DESIGN.md section 1 switches, clean defaults
    run: {timeout_s: 3600, slurm: {partition: gpu, time_min: 240, gpus_per_job: 1, mem_gb: 32}}
                                         # scheduling only; never part of a job key
    report: {metric_scale: 100, digits: 1, alpha: 0.05}   # record metrics x scale in tables (fractions ->
                                         # percent); alpha: the claims' family-wise error rate
    methods:
      stale: {variants: {default: {}, mask_none: {masking: none}}}
    tables:
      table4:
        title: Representation masking    # the data source is added to it by the report
        mirrors: STALE Table 4
        description: one line for reports/<suite>/README.md
        settings: ["75/25"]              # default: splits.settings; "closed" = all classes, one split
        metrics: [mAP@0.5, mAP_avg]      # keys of a record's "metrics"
        paper_metrics: [mAP@0.5, mAP_avg]            # what the positions of a paper entry mean
        splits: {indices: [0]}           # optional per-table override of indices, or {first: n} (the first n
                                         # of the suite's); also seeds, hparams
        compare: {to: STALE, metric: mAP_avg}   # optional paired comparison with one row
        external: [{label: "{name}"}]    # optional: the rows a method scored from its prediction files takes
                                         # here (``python -m benchmark score --name NAME``), label templates
                                         # with {name}, and metrics_from as for rows
        analyses: false                  # task stad: an ablation read for its headline only; its jobs skip the
                                         # oracle-box and shortcut analyses (a job another table runs with
                                         # them is that job)
        rows:
          - {label: No mask, method: stale, variant: mask_none, paper: [table4_representation_masking, no_mask]}
          - {label: clean, method: stale, protocol: {external_classifier: stale_best_score}}
          - {label: STALE GT labels, method: stale, metrics_from: gt_labels/}   # an analysis of the same jobs
          - {label: no leak, method: stale, leaky_splits: exclude}   # only the jobs whose split separates no
                                         # double-labelled class pair (include, the default | exclude | only)
    figures:                             # optional, builders registered in benchmark.harness.report
      - {name: table1_bars, builder: metric_bars, table: table1, metric: mAP_avg, description: one line}
    claims:                              # optional: the paper's qualitative claims, tested in reports/<suite>/claims.md
      - id: t4_masking_helps             # unique; names the claim in claims.csv
        statement: removing the mask costs 14% avg mAP   # what the paper says, short
        where: "§4.2, Table 4"           # where the paper says it
        table: table4                    # the rows below are labels of this (enabled) table
        setting: "75/25"                 # default: the table's setting when it has only one
        metric: mAP_avg                  # default: the table's last metric
        a: MaskFormer q20                # a side: a row label, or {minus: [row, row]} = their per-split difference
        b: No mask
        direction: greater               # the paper says a > b (greater, the default) or a < b (less)
        note: optional caveat shown under the claims table
    profiles:                            # deep-merged over everything above (mappings merge, lists replace)
      smoke: {splits: {indices: [0]}, hparams: {epochs: 1}}

A training-free method (``Method.trains`` false) and a prediction file run on the table's first seed only; the
reports pair such a row with every seed of the others. A claim is tested on the (split, seed) pairs that have
both sides: Δ = a − b per pair, its mean and
Student-t 95% CI, a two-sided paired t-test, Holm's correction across every claim with a p-value. A
degradation claim (Table 3: the parallel design loses less from GT to predicted localisation) is
``a: {minus: [STALE GT, STALE predicted]}, b: {minus: [B-I GT, B-I predicted]}, direction: less``.

A ``paper`` entry is a key path into the paper reference file (an integer indexes a list); the strings
``{setting}`` and ``{dataset}`` in it are filled per cell. It gives the row's numbers in the order of
``paper_metrics``, or it is a list of key paths, one number per paper metric (a paper that prints its
metrics in separate lists, e.g. ``[[table2, Base, 2], [table2, Novel, 2]]``). A variant's overrides are checked against the method's
``Config`` when the method is registered (methods not registered yet are planned but not run).

Job identity: ``spec_hash`` = sha256 of the normalised spec (sorted JSON; the variant *name* is left
out, and the resolved config replaces the raw overrides, so one configuration under two names is
one job) + the data identity. ``key`` = sha256(spec_hash + code version)[:16], the job's folder
name. Reports look records up by ``spec_hash``, so they survive a code change; runs resume by
``key``, so a code change re-runs everything.

Code version (``code_version()``): sha256 over the path and bytes of every file under
``benchmark/`` and ``methods/`` as they are on disk, i.e. the git tree hash idea *including*
uncommitted edits (a dirty tree must not reuse results of the committed one). It works the same
for a git clone and an installed package. Left out, because they cannot change a number:
``benchmark/suites/`` (their content that matters is in every spec), ``benchmark/harness/report.py``, ``combined.py``,
``benchmark/evaluation/plots.py`` (tables and figures are drawn from the records) and
``benchmark/perf/``. ``ZSTAD_CODE_VERSION`` pins it (tests; deliberately reusing results).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import yaml

from benchmark.errors import InputError, read_text

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"
SETTINGS = ("75/25", "50/50", "closed", "stclip", "cross")  # stclip: ST-CLIP's label splits (task stad; indices 1-4);
# cross: a cross-dataset benchmark's one split (task stad, index 1: every class of one dataset -> those of another)
TASKS = ("tad", "stad")  # temporal (segments) | spatio-temporal (boxes: benchmark.harness.stad)
DATA_SOURCES = ("synthetic", "real")
SPLIT_LISTS = ("generated", "imported")
SLURM_KEYS = ("partition", "time_min", "gpus_per_job", "mem_gb", "cpus_per_task", "array_parallelism")
# The spec fields that never enter a key: names, not configuration.
NOT_IN_KEY = ("variant",)
# method name prefix of a method scored from its prediction files (benchmark.harness.external)
EXTERNAL = "external:"

_TOP_KEYS = ("name", "description", "paper_reference", "task", "dataset", "data", "splits", "seeds", "hparams",
             "protocol", "run", "methods", "tables", "figures", "claims", "report", "profiles")
_TABLE_KEYS = ("title", "mirrors", "description", "settings", "metrics", "paper_metrics", "rows", "splits",
               "seeds", "hparams", "compare", "cost", "enabled", "external", "analyses")
_ROW_KEYS = ("label", "method", "variant", "paper", "protocol", "metrics_from", "compare_to", "leaky_splits")
LEAKY_SPLITS = ("include", "exclude", "only")
_CLAIM_KEYS = ("id", "statement", "where", "table", "setting", "metric", "a", "b", "direction", "note")
DIRECTIONS = ("greater", "less")


class SuiteError(InputError):
    """A bad suite file; the message is one line naming the file and the key."""


@dataclass(frozen=True)
class Row:
    label: str
    method: str
    variant: str
    paper: tuple | None  # key path into the paper reference file
    protocol: dict  # overrides of the suite's protocol switches
    # read the job's metrics under this prefix (an analysis of the same jobs, e.g. "gt_labels/")
    metrics_from: str = ""
    compare_to: str | None = None  # this row's reference in the table's paired comparison (default: compare.to)
    leaky_splits: str = "include"  # exclude / only: the jobs whose split separates a double-labelled class pair


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    mirrors: str
    description: str
    settings: tuple[str, ...]
    metrics: tuple[str, ...]
    paper_metrics: tuple[str, ...]
    rows: tuple[Row, ...]
    indices: tuple[int, ...]
    seeds: tuple[int, ...]
    hparams: dict
    compare: dict | None  # {"to": row label, "metric": name}: paired comparison columns
    cost: bool = False  # columns of training and inference cost per job (benchmark.harness.compute)
    external: tuple[dict, ...] = ()  # row templates for methods scored from files: {"label": "... {name} ...", "metrics_from"}
    analyses: bool = True  # False (task stad): its jobs record the headline metrics only (see cells)


@dataclass(frozen=True)
class Claim:
    """The paper says ``a > b`` (direction "greater") or ``a < b`` ("less") on ``metric``."""
    id: str
    statement: str  # the paper's words, short
    where: str  # table and section of the paper
    table: str
    setting: str
    metric: str
    a: tuple[str, ...]  # one row label, or two: the per-split difference row[0] - row[1]
    b: tuple[str, ...]
    direction: str = "greater"
    note: str = ""


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    profile: str
    description: str
    dataset: str
    data: dict
    splits: dict
    hparams: dict
    protocol: dict
    run: dict
    report: dict  # metric_scale, digits
    methods: dict  # method -> variant -> overrides
    tables: tuple[Table, ...]
    figures: tuple[dict, ...]
    paper_reference: Path | None
    claims: tuple[Claim, ...]
    seeds: tuple[int, ...] = (0,)  # the suite's training seeds (tables may override)
    task: str = "tad"  # tad | stad

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)


@dataclass(frozen=True)
class Job:
    key: str
    spec_hash: str
    spec: dict
    data_identity: str
    code_version: str
    labels: tuple[str, ...]  # every "method/variant/setting/split/seed" that asks for this job
    available: bool  # is the method registered (can it run now)?

    @property
    def label(self) -> str:
        return self.labels[0]


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def suite_path(name_or_path: str | Path) -> Path:
    """``zs_activitynet`` -> ``benchmark/suites/zs_activitynet.yaml``; a path stays a path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise SuiteError(f"{p}: no such suite file")
        return p
    found = SUITES_DIR / f"{name_or_path}.yaml"
    if not found.is_file():
        known = ", ".join(sorted(q.stem for q in SUITES_DIR.glob("*.yaml"))) or "none"
        raise SuiteError(f"unknown suite {str(name_or_path)!r}; suites in {SUITES_DIR}: {known}")
    return found


def suite_name(name_or_path: str | Path) -> str:
    """The suite's name (its results folder) without validating it, e.g. before its data flags are known."""
    path = suite_path(name_or_path)
    try:
        raw = yaml.safe_load(read_text(path, SuiteError, "suite YAML"))
    except yaml.YAMLError:
        raw = None  # load_suite says what is wrong
    return str(raw.get("name", path.stem)) if isinstance(raw, dict) else path.stem


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: mappings merge key by key, everything else is replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def load_suite(name_or_path: str | Path, profile: str = "default", overrides: dict | None = None) -> Suite:
    """Read, merge ``profile`` then ``overrides`` (e.g. CLI data flags) over the suite, validate."""
    path = suite_path(name_or_path)
    try:
        raw = yaml.safe_load(read_text(path, SuiteError, "suite YAML"))
    except yaml.YAMLError as e:
        raise SuiteError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    check = _Checker(path)
    check.mapping(raw, "the file")
    check.keys(raw, _TOP_KEYS, "top level")
    profiles = raw.get("profiles") or {}
    check.mapping(profiles, "profiles")
    if profile not in profiles:
        raise SuiteError(f"{path}: profiles: no profile {profile!r} (profiles: {', '.join(profiles) or 'none'})")
    check.mapping(profiles[profile] or {}, f"profiles.{profile}")
    merged = deep_merge({k: v for k, v in raw.items() if k != "profiles"}, profiles[profile] or {})
    merged = deep_merge(merged, overrides or {})
    check.keys(merged, _TOP_KEYS, f"profiles.{profile}")
    return _build(merged, path, profile, check)


class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, msg: str):
        raise SuiteError(f"{self.path}: {key}: {msg}")

    def mapping(self, value, key: str) -> dict:
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {type(value).__name__}")
        return value

    def keys(self, value: dict, allowed, key: str):
        for k in value:
            if k not in allowed:
                self.fail(key, f"unknown key {k!r} (allowed: {', '.join(allowed)})")

    def str_list(self, value, key: str, choices=None) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.fail(key, f"expected a non-empty list of strings, got {value!r}")
        for v in value:
            if choices is not None and v not in choices:
                self.fail(key, f"{v!r} is not one of {', '.join(choices)}")
        return tuple(value)

    def int_list(self, value, key: str) -> tuple[int, ...]:
        if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            self.fail(key, f"expected a non-empty list of non-negative integers, got {value!r}")
        return tuple(value)

    def boolean(self, value, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {value!r}")
        return value

    def choice(self, value, key: str, choices) -> str:
        if value not in choices:
            self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value


def _build(m: dict, path: Path, profile: str, check: _Checker) -> Suite:
    for key in ("methods", "tables"):
        if key not in m:
            check.fail(key, "missing")
    dataset = m.get("dataset", "activitynet")
    if not isinstance(dataset, str):
        check.fail("dataset", f"expected a name, got {dataset!r}")
    data = _data(m, check)
    seeds = check.int_list(m.get("seeds", [0]), "seeds")
    hparams = check.mapping(m.get("hparams") or {}, "hparams")
    run = check.mapping(m.get("run") or {}, "run")
    check.keys(run, ("timeout_s", "slurm"), "run")
    check.keys(check.mapping(run.get("slurm") or {}, "run.slurm"), SLURM_KEYS, "run.slurm")
    report = check.mapping(m.get("report") or {}, "report")
    check.keys(report, ("metric_scale", "digits", "alpha"), "report")
    report = {"metric_scale": 1, "digits": 1, "alpha": 0.05, **report}
    if not isinstance(report["metric_scale"], (int, float)) or not isinstance(report["digits"], int):
        check.fail("report", f"metric_scale must be a number and digits an integer, got {report!r}")
    if not isinstance(report["alpha"], float) or not 0 < report["alpha"] < 1:
        check.fail("report.alpha", f"expected a number between 0 and 1, got {report['alpha']!r}")
    splits = _splits(m, check)
    methods = _methods(m, check)
    tables = tuple(_table(name, t, methods, splits, seeds, hparams, check)
                   for name, t in check.mapping(m["tables"], "tables").items()
                   if check.mapping(t, f"tables.{name}").get("enabled", True) is not False)
    task = check.choice(m.get("task", "tad"), "task", TASKS)
    for t in tables:
        if not t.analyses and task != "stad":
            check.fail(f"tables.{t.name}.analyses", "false is for task stad (a tad job records its analyses always)")
    figures = _figures(m, {t.name for t in tables}, check)
    claims = _claims(m, {t.name: t for t in tables}, check)
    ref = m.get("paper_reference")
    ref_path = (path.parent / ref) if ref else None
    if ref_path is not None and not ref_path.is_file():
        check.fail("paper_reference", f"no such file {ref_path}")
    return Suite(name=str(m.get("name", path.stem)), path=path, profile=profile,
                 description=str(m.get("description", "")), dataset=dataset, data=data, splits=splits,
                 hparams=hparams, protocol=check.mapping(m.get("protocol") or {}, "protocol"), run=run,
                 report=report, methods=methods, tables=tables, figures=figures, paper_reference=ref_path,
                 claims=claims, seeds=seeds, task=task)


def _data(m: dict, check: _Checker) -> dict:
    data = check.mapping(m.get("data") or {"source": "synthetic"}, "data")
    check.keys(data, ("source", "synthetic", "real"), "data")
    check.choice(data.get("source"), "data.source", DATA_SOURCES)
    check.mapping(data.get("synthetic") or {}, "data.synthetic")
    real = check.mapping(data.get("real") or {}, "data.real")
    check.keys(real, ("root", "annotations", "features", "video_info", "feature_format", "feature_fps", "text_encoder",
                      "external_scores", "class_scores", "person_boxes", "images"), "data.real")
    if data["source"] == "real" and not (real.get("root") or real.get("annotations")):
        check.fail("data.real", "real data needs a root (--data-root) or annotations and features (--annotations/--features)")
    return data


def _splits(m: dict, check: _Checker) -> dict:
    splits = check.mapping(m.get("splits") or {}, "splits")
    check.keys(splits, ("settings", "indices", "lists", "lists_dir", "seed"), "splits")
    splits = {"settings": ["75/25", "50/50"], "indices": list(range(10)), "lists": "generated", "seed": 0,
              "lists_dir": None, **splits}
    check.str_list(splits["settings"], "splits.settings", SETTINGS)
    check.int_list(splits["indices"], "splits.indices")
    check.choice(splits["lists"], "splits.lists", SPLIT_LISTS)
    if splits["lists"] == "imported" and not splits["lists_dir"]:
        check.fail("splits.lists_dir", "imported split lists need a folder (--split-lists)")
    return splits


def _methods(m: dict, check: _Checker) -> dict:
    """method -> variant -> overrides, with an implicit empty ``default`` variant."""
    methods = {}
    for name, entry in check.mapping(m["methods"], "methods").items():
        entry = check.mapping(entry or {}, f"methods.{name}")
        check.keys(entry, ("variants",), f"methods.{name}")
        variants = check.mapping(entry.get("variants") or {}, f"methods.{name}.variants")
        methods[name] = {"default": {}}
        for vname, overrides in variants.items():
            methods[name][vname] = check.mapping(overrides or {}, f"methods.{name}.variants.{vname}")
    return methods


def _paper_path(paper, where: str, check: "_Checker") -> tuple:
    """A key path (strings, and integers that index a list), or a list of them, one per paper metric."""
    def is_path(p) -> bool:
        return isinstance(p, list) and bool(p) and all(isinstance(k, str) or type(k) is int for k in p)

    if is_path(paper):
        return tuple(paper)
    if isinstance(paper, list) and paper and all(is_path(p) for p in paper):
        return tuple(tuple(p) for p in paper)
    check.fail(where, f"expected a key path (list of strings and list indices) or a list of them, got {paper!r}")


def _table(name: str, t: dict, methods: dict, splits: dict, seeds, hparams: dict, check: _Checker) -> Table:
    where = f"tables.{name}"
    check.keys(t, _TABLE_KEYS, where)
    metrics = check.str_list(t.get("metrics"), f"{where}.metrics")
    tsplits = check.mapping(t.get("splits") or {}, f"{where}.splits")
    check.keys(tsplits, ("indices", "first"), f"{where}.splits")
    indices = check.int_list(tsplits.get("indices", splits["indices"]), f"{where}.splits.indices")
    if "first" in tsplits:  # the first n of the indices (a profile's splits.indices then still applies)
        first = tsplits["first"]
        if not isinstance(first, int) or isinstance(first, bool) or first < 1:
            check.fail(f"{where}.splits.first", f"expected an integer >= 1, got {first!r}")
        indices = indices[:first]
    if not isinstance(t.get("rows"), list) or not t["rows"]:
        check.fail(f"{where}.rows", "expected a non-empty list of rows")
    rows = tuple(_row(f"{where}.rows[{i}]", r, methods, check) for i, r in enumerate(t["rows"]))
    if len({r.label for r in rows}) != len(rows):
        check.fail(f"{where}.rows", "row labels must be unique")
    compare = t.get("compare")
    if compare is not None:
        check.mapping(compare, f"{where}.compare")
        check.keys(compare, ("to", "metric"), f"{where}.compare")
        for ref, key in [(compare.get("to"), "compare.to")] + [(r.compare_to, f"rows.{r.label}.compare_to")
                                                               for r in rows if r.compare_to]:
            if ref not in {r.label for r in rows}:
                check.fail(f"{where}.{key}", f"{ref!r} is not a row label of the table")
        if compare.get("metric") not in metrics:
            check.fail(f"{where}.compare.metric", f"{compare.get('metric')!r} is not one of the table's metrics")
    external = t.get("external") or []
    if not isinstance(external, list):
        check.fail(f"{where}.external", f"expected a list of row templates, got {external!r}")
    for i, template in enumerate(external):
        check.keys(check.mapping(template, f"{where}.external[{i}]"), ("label", "metrics_from"), f"{where}.external[{i}]")
        if "{name}" not in str(template.get("label", "")):
            check.fail(f"{where}.external[{i}].label", f"expected a label with {{name}} in it, got {template.get('label')!r}")
    return Table(
        name=name, title=str(t.get("title", name)), mirrors=str(t.get("mirrors", "")),
        description=str(t.get("description", "")),
        settings=check.str_list(t.get("settings", splits["settings"]), f"{where}.settings", SETTINGS),
        metrics=metrics, paper_metrics=check.str_list(t.get("paper_metrics", list(metrics)), f"{where}.paper_metrics"),
        rows=rows, indices=tuple(indices),
        seeds=check.int_list(t.get("seeds", list(seeds)), f"{where}.seeds"),
        hparams=deep_merge(hparams, check.mapping(t.get("hparams") or {}, f"{where}.hparams")), compare=compare,
        cost=bool(t.get("cost", False)), external=tuple(external),
        analyses=check.boolean(t.get("analyses", True), f"{where}.analyses"))


def _row(where: str, r: dict, methods: dict, check: _Checker) -> Row:
    check.mapping(r, where)
    check.keys(r, _ROW_KEYS, where)
    method, variant = r.get("method"), r.get("variant", "default")
    if method not in methods:
        check.fail(f"{where}.method", f"{method!r} is not in methods (known: {', '.join(methods)})")
    if variant not in methods[method]:
        check.fail(f"{where}.variant", f"method {method!r} has no variant {variant!r} (variants: {', '.join(methods[method])})")
    paper = r.get("paper")
    if paper is not None:
        paper = _paper_path(paper, f"{where}.paper", check)
    prefix = r.get("metrics_from", "")
    if not isinstance(prefix, str):
        check.fail(f"{where}.metrics_from", f"expected a metric prefix such as 'gt_labels/', got {prefix!r}")
    return Row(label=str(r.get("label", f"{method}/{variant}")), method=method, variant=variant,
               paper=paper or None, protocol=check.mapping(r.get("protocol") or {}, f"{where}.protocol"),
               metrics_from=prefix, compare_to=r.get("compare_to"),
               leaky_splits=check.choice(r.get("leaky_splits", "include"), f"{where}.leaky_splits", LEAKY_SPLITS))


def _figures(m: dict, tables: set[str], check: _Checker) -> tuple[dict, ...]:
    figures = m.get("figures") or []
    if not isinstance(figures, list):
        check.fail("figures", "expected a list")
    for i, fig in enumerate(figures):
        check.mapping(fig, f"figures[{i}]")
        for key in ("name", "builder", "table"):
            if not isinstance(fig.get(key), str):
                check.fail(f"figures[{i}].{key}", "missing")
        if fig["table"] not in tables:
            check.fail(f"figures[{i}].table", f"no (enabled) table {fig['table']!r}")
    return tuple(figures)


def _claims(m: dict, tables: dict[str, Table], check: _Checker) -> tuple[Claim, ...]:
    claims = m.get("claims") or []
    if not isinstance(claims, list):
        check.fail("claims", "expected a list")
    out = []
    for i, c in enumerate(claims):
        where = f"claims[{i}]"
        check.mapping(c, where)
        check.keys(c, _CLAIM_KEYS, where)
        for key in ("id", "statement", "where", "table"):
            if not isinstance(c.get(key), str) or not c[key]:
                check.fail(f"{where}.{key}", "missing")
        table = tables.get(c["table"])
        if table is None:
            check.fail(f"{where}.table", f"no (enabled) table {c['table']!r}")
        if "setting" not in c and len(table.settings) > 1:
            check.fail(f"{where}.setting", f"missing (table {table.name} has settings {', '.join(table.settings)})")
        setting = check.choice(c.get("setting", table.settings[0]), f"{where}.setting", table.settings)
        metric = check.choice(c.get("metric", table.metrics[-1]), f"{where}.metric", table.metrics)
        sides = {side: _claim_side(c.get(side), table, f"{where}.{side}", check) for side in ("a", "b")}
        out.append(Claim(id=c["id"], statement=c["statement"], where=c["where"], table=table.name, setting=setting,
                         metric=metric, a=sides["a"], b=sides["b"],
                         direction=check.choice(c.get("direction", "greater"), f"{where}.direction", DIRECTIONS),
                         note=str(c.get("note") or "")))
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):
        check.fail("claims", f"ids must be unique, {sorted({i for i in ids if ids.count(i) > 1})} repeat")
    return tuple(out)


def _claim_side(side, table: Table, where: str, check: _Checker) -> tuple[str, ...]:
    """A row label -> (label,); ``{minus: [x, y]}`` -> (x, y), read as the per-split difference x - y."""
    if isinstance(side, dict):
        check.keys(side, ("minus",), where)
        labels = side.get("minus")
        if not isinstance(labels, list) or len(labels) != 2:
            check.fail(f"{where}.minus", f"expected two row labels, got {labels!r}")
    else:
        labels = [side]
    for label in labels:
        if label not in {r.label for r in table.rows}:
            check.fail(where, f"{label!r} is not a row label of table {table.name}")
    return tuple(labels)


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------

def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def job_spec(suite: Suite, table: Table, row: Row, setting: str, index: int, seed: int) -> dict:
    """The JSON-able description of one job: everything the runner needs, nothing about scheduling.

    A method scored from its prediction files (``external:<name>``, benchmark.harness.external) has no
    configuration or hyper-parameters of ours, and one file per split: its spec takes the suite's first
    training seed, whatever the table's, so that it pairs with our jobs of that seed."""
    from benchmark.harness.registry import config_dict, is_registered, make_config

    external = row.method.startswith(EXTERNAL)
    overrides = {} if external else suite.methods[row.method][row.variant]
    config = (config_dict(make_config(row.method, overrides, row.variant))
              if not external and is_registered(row.method) else None)  # (is_registered imports the methods)
    data = {"source": suite.data["source"], **(suite.data.get(suite.data["source"]) or {})}
    split = {"index": 0} if setting == "closed" else {
        "index": index, "lists": suite.splits["lists"], "seed": suite.splits["seed"],
        **({"lists_dir": str(suite.splits["lists_dir"])} if suite.splits["lists"] == "imported" else {})}
    task = {} if suite.task == "tad" else {"task": suite.task}  # absent for tad: its job keys stay as they were
    return {
        **task,
        "dataset": suite.dataset,
        "data": data,
        "setting": setting,
        "split": split,
        "method": row.method,
        "variant": row.variant,
        "overrides": overrides,
        "config": config,
        "seed": suite.seeds[0] if external else seed,
        "hparams": {} if external else table.hparams,
        "protocol": {**suite.protocol, **row.protocol},
    }


def key_material(spec: dict) -> dict:
    """The part of a spec that identifies the job (variant name out; resolved config over overrides)."""
    out = {k: v for k, v in spec.items() if k not in NOT_IN_KEY}
    if out.get("config") is not None:
        out.pop("overrides")
    return out


def spec_hash(spec: dict, data_identity: str) -> str:
    return sha256(canonical_json(key_material(spec)) + "\n" + data_identity)


def job_key(spec_hash_: str, code_version_: str) -> str:
    return sha256(f"{spec_hash_}\n{code_version_}")[:16]


def job_label(spec: dict, suite_protocol: dict) -> str:
    proto = "".join(f"+{k}={v}" for k, v in sorted(spec["protocol"].items()) if suite_protocol.get(k) != v)
    return (f"{spec['method']}/{spec['variant']}{proto}/{spec['setting']}/"
            f"split{spec['split']['index']}/seed{spec['seed']}")


def external_rows(table: Table, name: str) -> tuple[Row, ...]:
    """The rows of the method ``external:<name>`` in ``table`` (its ``external`` templates)."""
    return tuple(Row(label=t["label"].format(name=name), method=EXTERNAL + name, variant="default",
                     paper=("external", name, table.name, "{setting}"), protocol={},
                     metrics_from=t.get("metrics_from", "")) for t in table.external)


def external_spec(suite: Suite, name: str, setting: str, index: int) -> dict:
    """The job spec under which the prediction file of ``external:<name>`` for (setting, split) is scored."""
    table = next((t for t in suite.tables if t.external and setting in t.settings), None)
    if table is None:
        raise InputError(f"{suite.path}: no table takes scored predictions in setting {setting}")
    return job_spec(suite, table, external_rows(table, name)[0], setting, index, suite.seeds[0])


def seedless(method: str) -> bool:
    """A row run on one seed: a prediction file (one per split) or a training-free method (the same result
    whatever the seed; the reports pair it with every seed of the other rows)."""
    from benchmark.harness.registry import get_method, is_registered

    return method.startswith(EXTERNAL) or (is_registered(method) and not get_method(method).trains)


def cells(suite: Suite):
    """Every (table, row, setting, [spec, ...]) of the suite: the cells the report fills. A job of a table with
    ``analyses: false`` (an ablation read for its headline only) gets ``"analyses": false`` in its spec, unless
    another table runs the same job with analyses: then it is that job."""
    planned = []
    for table in suite.tables:
        for row in table.rows:
            for setting in table.settings:
                indices = (0,) if setting == "closed" else table.indices
                seeds = table.seeds[:1] if seedless(row.method) else table.seeds
                planned.append((table, row, setting, [job_spec(suite, table, row, setting, i, s) for i in indices for s in seeds]))
    analysed = {canonical_json(key_material(s)) for table, _, _, specs in planned if table.analyses for s in specs}
    for table, row, setting, specs in planned:
        if not table.analyses:
            specs = [s if canonical_json(key_material(s)) in analysed else {**s, "analyses": False} for s in specs]
        yield table, row, setting, specs


def plan(suite: Suite, code_version_: str | None = None) -> list[Job]:
    """The suite's deduplicated jobs, in table order."""
    from benchmark.harness.registry import is_registered

    version = code_version_ or code_version()
    jobs: dict[str, Job] = {}
    for _, _, _, specs in cells(suite):
        for spec in specs:
            identity = data_identity(spec)
            h = spec_hash(spec, identity)
            key = job_key(h, version)
            label = job_label(spec, suite.protocol)
            if key in jobs:
                if label not in jobs[key].labels:
                    jobs[key] = replace(jobs[key], labels=jobs[key].labels + (label,))
                continue
            jobs[key] = Job(key=key, spec_hash=h, spec=spec, data_identity=identity, code_version=version,
                            labels=(label,),
                            available=is_registered(spec["method"]))
    return list(jobs.values())


# ---------------------------------------------------------------------------------------------
# Identities
# ---------------------------------------------------------------------------------------------

def data_identity(spec: dict) -> str:
    """What the numbers depend on besides the spec's own words: the bytes of real inputs.

    Synthetic data is fully described by its generator parameters (and the generator code, which
    the code version covers). Real data: sha256 of the annotation files, the resolved feature
    path, and the imported split lists' bytes.
    """
    data, parts = spec["data"], []
    if data["source"] == "synthetic":
        parts.append("synthetic:" + canonical_json({k: v for k, v in data.items() if k != "source"}))
    else:
        for key in ("annotations", "video_info", "external_scores", "class_scores"):
            if data.get(key):
                parts.append(f"{key}={_file_digest(str(Path(data[key]).resolve()))}")
        for key in ("root", "features"):
            if data.get(key):
                root = Path(data[key]).resolve()
                parts.append(f"{key}={root}")
                if key == "root":
                    parts.append(f"root_files={_dir_digest(str(root), ('*.json', '*.csv', '*.npy'))}")
    if spec["split"].get("lists") == "imported":
        parts.append(f"lists={_dir_digest(str(Path(spec['split']['lists_dir']).resolve()), ('**/*.list', '**/*.json'))}")
    return "|".join(parts)


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns)


def _file_digest(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        return f"missing:{path}"
    return _cached_digest(path, _stat_key(p))


@lru_cache(maxsize=None)
def _cached_digest(path: str, _stat: tuple) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _dir_digest(root: str, patterns: tuple[str, ...]) -> str:
    r = Path(root)
    files = sorted({p for pat in patterns for p in r.glob(pat) if p.is_file()})
    return sha256("".join(f"{p.relative_to(r)}:{_file_digest(str(p))}\n" for p in files))[:16]


CODE_ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("benchmark", "methods")
CODE_EXCLUDED = ("benchmark/suites", "benchmark/harness/report.py", "benchmark/harness/combined.py",
                 "benchmark/evaluation/plots.py", "benchmark/perf")


def code_version(root: Path = CODE_ROOT) -> str:
    """See the module docstring. ``ZSTAD_CODE_VERSION`` pins it."""
    pinned = os.environ.get("ZSTAD_CODE_VERSION")
    if pinned:
        return pinned
    h = hashlib.sha256()
    for top in CODE_DIRS:
        for dirpath, dirnames, filenames in os.walk(root / top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
            for name in sorted(filenames):
                p = Path(dirpath) / name
                rel = p.relative_to(root).as_posix()
                if name.startswith(".") or name.endswith((".pyc", ".tmp")) or rel.startswith(CODE_EXCLUDED):
                    continue
                h.update(f"{rel}\n{_file_digest(str(p))}\n".encode())
    return "src:" + h.hexdigest()[:16]
