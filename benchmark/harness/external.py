"""Methods we do not run: their prediction files scored under a suite's protocol (``score``), and our
methods' predictions written out in the same layout (``export``).

A predictions folder holds one file per (setting, class split) of the suite::

    DIR/75_25/split_0.json    DIR/75_25/split_1.csv  ...
    DIR/50_50/split_0.json    ...
    DIR/closed/split_0.json   (the closed-set table, if the method has one)

each an ActivityNet submission (``.json``) or a CSV with the columns ``video-id, t-start, t-end,
label, score`` in any order (benchmark.evaluation.predictions). The splits are the suite's, as its
profile and split flags resolve them (``--split-lists`` for the published ones): split_3 of 75_25 is
the fourth 75/25 split. The suite's tables say which settings and splits take scored predictions
(their ``external`` row templates).

``score`` evaluates each file exactly as the suite evaluates its own jobs of that split
(scoring.score_detections on the split's test view: its unseen classes, scored videos, tIoU set and
protocol switches; DETAD's summaries, which only the figures of rows named in the suite read, with
``--diagnostics``). Predictions on videos outside the split's scored set, or labelled with a class
outside its test classes, are left out of the metric and counted in the record and the report. Each
file becomes the record of a job ``external:<name>/default/<setting>/split<i>/seed<s>`` in the
suite's store (provenance: the file's path, sha256, size, format, the command, the time), which
``report`` turns into rows of the tables that take them, with the paired tests against every method.
A bad file stops the command before any record is written.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml
from joblib import Parallel, delayed

from benchmark.errors import InputError, read_text
from benchmark.evaluation.predictions import FORMATS, prediction_format, read_prediction_columns, write_predictions
from benchmark.harness.scoring import (class_scores_for, data_facts, external_scores_for, job_notes, job_test_view, open_dataset,
                                       score_detections, split_facts)
from benchmark.harness.store import Store, build_record, collect_provenance, now, read_predictions
from benchmark.harness.suite import (EXTERNAL, Suite, cells, code_version, data_identity, external_spec, job_key, job_label,
                                     spec_hash)

SETTING_DIRS = {"75/25": "75_25", "50/50": "50_50", "closed": "closed"}
SPLIT_FILE = re.compile(r"split_(\d+)\.(json|csv)")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._+()-]*")
LAYOUT = "DIR/<75_25|50_50|closed>/split_<index>.<json|csv>"


class ScoreError(InputError):
    """A bad predictions folder or file for ``score``; one line naming it."""


def score_targets(suite: Suite, settings=None) -> list[tuple[str, int]]:
    """The (setting, split index) pairs for which the suite's tables take scored predictions, in table order."""
    targets = {}
    for table in suite.tables:
        for setting in table.settings if table.external else ():
            for index in (0,) if setting == "closed" else table.indices:
                targets[(setting, index)] = None
    if settings:
        unknown = [s for s in settings if s not in {setting for setting, _ in targets}]
        if unknown:
            raise ScoreError(f"--settings {' '.join(settings)}: {', '.join(unknown)} not among the settings that take "
                             f"scored predictions in {suite.path.name} ({', '.join(dict.fromkeys(s for s, _ in targets))})")
        return [t for t in targets if t[0] in settings]
    return list(targets)


def find_files(directory: Path, targets: list[tuple[str, int]], partial: bool) -> dict[tuple[str, int], Path]:
    """The file of each target in ``directory`` (module doc's layout); a wrong layout, two files for one
    split or (without ``partial``) a missing split is a one-line :class:`ScoreError`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ScoreError(f"{directory}: no such directory (expected the layout {LAYOUT})")
    by_dir = {folder: setting for setting, folder in SETTING_DIRS.items()}
    found: dict[tuple[str, int], Path] = {}
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.name not in by_dir or not entry.is_dir():
            raise ScoreError(f"{entry}: not a setting folder (expected {', '.join(by_dir)}; layout {LAYOUT})")
        for file in sorted(entry.iterdir()):
            match = SPLIT_FILE.fullmatch(file.name)
            if file.name.startswith("."):
                continue
            if match is None or not file.is_file():
                raise ScoreError(f"{file}: not a split file (expected split_<index>.json or split_<index>.csv)")
            key = (by_dir[entry.name], int(match.group(1)))
            if key in found:
                raise ScoreError(f"{file}: a second file for {key[0]} split {key[1]} (and {found[key].name})")
            found[key] = file
    missing = [t for t in targets if t not in found]
    if missing and (not partial or len(missing) == len(targets)):
        setting, index = missing[0]
        raise ScoreError(f"{directory / SETTING_DIRS[setting]}/split_{index}.json (or .csv): missing, the suite's "
                         f"{setting} split {index}; {len(missing)} of the {len(targets)} split files are missing"
                         + ("" if partial else " (--partial scores the others)"))
    extra = sorted(k for k in found if k not in targets)
    if extra:
        warnings.warn(f"{directory}: {len(extra)} file(s) for splits this suite and profile do not score, left out: "
                      f"{', '.join(str(found[k].relative_to(directory)) for k in extra[:4])}")
    return {t: found[t] for t in targets if t in found}


def read_paper_numbers(path: Path, suite: Suite) -> dict:
    """``{table: {setting: {metric: number}}}`` from a YAML or JSON file, checked against the suite's tables."""
    try:
        raw = yaml.safe_load(read_text(path, ScoreError, "YAML or JSON file"))
    except yaml.YAMLError as e:
        raise ScoreError(f"{path}: not valid YAML or JSON: {' '.join(str(e).split())}") from None
    tables = {t.name: t for t in suite.tables if t.external}
    if not isinstance(raw, dict) or not raw:
        raise ScoreError(f"{path}: expected {{table: {{setting: {{metric: number}}}}}}, e.g. "
                         f"{{{next(iter(tables), 'table1')}: {{'75/25': {{mAP_avg: 12.3}}}}}}")
    for name, by_setting in raw.items():
        table = tables.get(name)
        if table is None:
            raise ScoreError(f"{path}: table {name!r} takes no scored predictions (tables that do: {', '.join(tables)})")
        for setting, values in (by_setting or {}).items() if isinstance(by_setting, dict) else [(None, by_setting)]:
            if setting not in table.settings:
                raise ScoreError(f"{path}: {name}: setting {setting!r} is not one of {', '.join(table.settings)}")
            if not isinstance(values, dict):
                raise ScoreError(f"{path}: {name}.{setting}: expected {{metric: number}}, got {values!r}")
            for metric, value in values.items():
                if metric not in table.paper_metrics:
                    raise ScoreError(f"{path}: {name}.{setting}: metric {metric!r} is not one of {', '.join(table.paper_metrics)}")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                    raise ScoreError(f"{path}: {name}.{setting}.{metric}: expected a number, got {value!r}")
    return raw


def file_facts(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path.resolve()), "sha256": digest.hexdigest(), "bytes": path.stat().st_size,
            "format": prediction_format(path)}


def score_file(path: Path, annotations, test, protocol: dict, external: dict | None, diagnostics: bool,
               class_scores: dict | None = None) -> dict:
    """One file scored on one split's test view (scoring.score_detections), with what was left out
    and the warnings it raised (a worker process cannot print them). ``annotations``: those of the
    scored videos (ids resolve against them; a prediction elsewhere is left out whatever its id)."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read = read_prediction_columns(path, annotations, classes=annotations.classes)
    in_videos = np.isin(read.videos, [v.id for v in test.videos])[read.video_code]
    in_classes = np.isin(read.labels, np.asarray(test.classes, dtype=str))[read.label_code]
    kept = np.flatnonzero(in_videos & in_classes)
    # in descending score order (stable: ties keep file order, the order every evaluation step ranks by, so the
    # numbers are those of file order), which makes every later sort by score a pass over sorted data
    kept = kept[np.argsort(-read.score[kept], kind="stable")]
    scored = score_detections(test, read.table(kept), protocol, external, diagnostics, class_scores)
    scored["counts"] = {"predictions": len(read), "outside_scored_videos": int((~in_videos).sum()),
                        "outside_test_classes": int((in_videos & ~in_classes).sum())}
    scored["warnings"] = [str(w.message) for w in caught]
    scored["file"] = file_facts(path)
    scored["seconds"] = time.perf_counter() - start
    return scored


def score(suite: Suite, name: str, directory: Path, results_dir: Path, partial: bool = False, settings=None,
          paper_numbers: Path | None = None, diagnostics: bool = False) -> list[dict]:
    """Score a predictions folder as the method ``external:<name>``; returns the records written.
    ``diagnostics``: DETAD's summaries too (what the figures of named rows read; no table does)."""
    if not NAME.fullmatch(name):
        raise ScoreError(f"--name {name!r}: letters, digits, spaces and ._+()- only, starting with a letter or digit")
    papers = read_paper_numbers(paper_numbers, suite) if paper_numbers else None
    files = find_files(directory, score_targets(suite, settings), partial)
    facts = data_facts(suite, features=suite.data["source"] == "synthetic")
    dataset = open_dataset(facts, features=suite.data["source"] == "synthetic")
    if facts["source"] == "synthetic":
        from benchmark.harness.runner import ensure_external_scores  # trains it (torch) if no run has yet

        ensure_external_scores(dataset, facts)  # the label-fusion audit's classifier, as a run makes it
    start_time, jobs = now(), []

    def tasks():  # a generator: the workers start on the first files while the next splits' views are made
        for (setting, index), path in files.items():
            spec = external_spec(suite, name, setting, index)
            split, test = job_test_view(dataset, spec)
            jobs.append((spec, split, test))
            yield delayed(score_file)(path, replace(dataset.annotations, videos={v.id: v for v in test.videos}), test,
                                      spec["protocol"], external_scores_for(facts, dataset, test), diagnostics,
                                      class_scores=class_scores_for(facts, test))

    # every file first, on every core (one file a process): a bad one stops the command before any record
    results = Parallel(n_jobs=min(len(files), len(os.sched_getaffinity(0))))(tasks())
    for result in results:
        for message in result["warnings"]:
            warnings.warn(message)
    return write_records(suite, name, [(*job, result) for job, result in zip(jobs, results)], results_dir, facts,
                         papers, start_time)


def write_records(suite: Suite, name: str, scored: list, results_dir: Path, facts: dict, papers: dict | None,
                  start_time: str) -> list[dict]:
    store, version, provenance = Store(results_dir, suite.name), code_version(), collect_provenance()
    records = []
    with store.lock():
        for spec, split, test, result in scored:
            identity = data_identity(spec)
            h = spec_hash(spec, identity)
            key = job_key(h, version)
            payload = {"suite": suite.name, "key": key, "spec_hash": h, "code_version": version, "data_identity": identity,
                       "labels": [job_label(spec, suite.protocol)], "spec": spec, "provenance": provenance}
            extra = {"notes": job_notes(facts, test) + result["notes"], "synthetic": facts["source"] == "synthetic",
                     "split": split_facts(split, test), "test_videos": len(test.videos), "eval_meta": result["eval_meta"],
                     "diagnostics": result["diagnostics"], "scored": result["counts"], "paper_numbers": papers}
            store.prepare(key, spec)
            record = build_record(payload, "ok", result={"metrics": result["metrics"], "per_class": result["per_class"],
                                                         "extra": extra},
                                  timings={"eval": result["seconds"]},
                                  runtime={"start_time": start_time, "end_time": now(), "prediction_file": result["file"],
                                           "command": " ".join(sys.argv)})
            store.write_record(key, record)
            records.append(record)
    return records


def export(suite: Suite, method: str, variant: str, out: Path, fmt: str, results_dir: Path) -> list[Path]:
    """Write the predictions of our method/variant (the suite's protocol, its first seed) in the layout
    ``score`` reads; returns the files written. Jobs without an ok record are left out, with a warning."""
    from benchmark.harness.report import newest
    from benchmark.harness.store import load_records

    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    ok = newest(load_records(suite.name, results_dir), "ok")
    wanted, written, missing = {}, [], []
    for table, row, setting, specs in cells(suite):
        if row.method == method and row.variant == variant and not row.protocol:
            for spec in specs:
                if spec["seed"] == specs[0]["seed"]:
                    wanted.setdefault((setting, spec["split"]["index"]), spec)
    if not wanted:
        known = sorted({f"{row.method}/{row.variant}" for _, row, _, _ in cells(suite) if not row.method.startswith(EXTERNAL)})
        raise InputError(f"--method {method}/{variant}: no row of {suite.path.name} runs it (methods: {', '.join(known)})")
    for (setting, index), spec in wanted.items():
        record = ok.get(spec_hash(spec, data_identity(spec)))
        if record is None or not record.get("predictions"):
            missing.append(f"{setting} split {index}")
            continue
        detections = read_predictions(Store(results_dir, suite.name).job_dir(record["key"]))
        written.append(write_predictions(Path(out) / SETTING_DIRS[setting] / f"split_{index}.{fmt}", detections))
    if not written:
        raise InputError(f"{method}/{variant}: no finished job in results/{suite.name}/ (run the suite first)")
    if missing:
        warnings.warn(f"{method}/{variant}: {len(missing)} job(s) without an ok record, not exported: {', '.join(missing)}")
    return written

