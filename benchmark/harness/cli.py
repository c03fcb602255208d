"""Harness commands: ``run`` (plan, run, report), ``report``, ``score`` and ``export`` (prediction files of
methods we do not run, and of ours), ``list-methods``.

``python -m benchmark run --suite zs_activitynet --profile smoke`` (or ``python run_all.py ...``,
which takes the same core flags). Heavy imports happen inside the handlers, so ``--help`` is fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import sys
from pathlib import Path

from benchmark.errors import InputError, run_command

DEFAULT_PREPARE = "benchmark.harness.runner:prepare_data"
# One single-threaded job per core is fastest for the small default models; the cap keeps a big
# machine from holding dozens of copies of a real dataset in memory at once.
MAX_DEFAULT_WORKERS = 4
DEFAULT_WORKERS = min(MAX_DEFAULT_WORKERS, len(os.sched_getaffinity(0)))
RUNS_DIR = "_runs"  # results/<suite>/_runs/<profile>.json: the suite overrides of the last run


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of run_all.py (the issue's list), shared with ``run``."""
    add_data_arguments(p)
    p.add_argument("--gpus", help="GPU ids, e.g. 0,1,2,3 (default: all visible; 'none' = CPU)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help=f"CPU only: parallel jobs, torch threads = cores // N (default: the usable cores, at most "
                        f"{MAX_DEFAULT_WORKERS}, here {DEFAULT_WORKERS}); on GPUs, one job per id")
    p.add_argument("--backend", choices=("local", "slurm"), default="local")
    p.add_argument("--dry-run", action="store_true", help="make every check a run makes (data, features, text tower, GPUs, workers, SLURM), "
                        "print the job table with what is cached, run nothing")
    p.add_argument("--force", action="store_true", help="re-run the selected jobs even if finished")
    p.add_argument("--only", metavar="PATTERN", help="only jobs whose method/variant/setting/splitI/seedS matches this glob (or key prefix)")
    p.add_argument("--retry-failed", action="store_true", help="re-run failed and timed-out jobs")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The suite, its profile and the data flags: what identifies the jobs (``run``, ``score``)."""
    p.add_argument("--suite", required=True, help="suite name in benchmark/suites/ or a path to a suite YAML")
    p.add_argument("--profile", default="default", help="smoke | default | paper (profiles of the suite; default: default)")
    p.add_argument("--data-root", type=Path, help="real data: a folder with the annotations and features")
    p.add_argument("--annotations", type=Path, help="real data: annotation file (with --features)")
    p.add_argument("--features", type=Path, help="real data: feature folder or HDF5 file (with --annotations)")
    p.add_argument("--feature-fps", type=float, help="real data whose annotations give no durations (G-TAD's "
                   "thumos_gt.json): feature rows per second; each duration is taken as T_raw / this")
    p.add_argument("--external-scores", type=Path, help="real data: the external video classifier of the label-fusion "
                   "audit rows (stale_best_score.json, or THUMOS14's uNet_test.npy); default: the file under --data-root")
    p.add_argument("--person-boxes", type=Path, help="real box-level data: the person detections (ST-CLIP's JSON layout)")
    p.add_argument("--person-box-images", type=Path, help="real box-level data: the GT JSON whose images the person "
                   "boxes' image ids name (ST-CLIP's jhmdb_test_gt_min.json)")
    p.add_argument("--split-lists", type=Path, help="import the class splits from these published lists")
    p.add_argument("--clip-model", default="ViT-B-16",
                   help="real data: open_clip model name or model-config JSON of the text tower (default ViT-B-16)")
    p.add_argument("--clip-pretrained", default="openai",
                   help="real data: open_clip pretrained tag or local checkpoint file (default openai)")


def add_store_arguments(p: argparse.ArgumentParser, root: Path = Path(".")) -> None:
    p.add_argument("--results-dir", type=Path, default=root / "results", help="results store (default: results/)")
    p.add_argument("--reports-dir", type=Path, default=root / "reports", help="reports (default: reports/)")


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="plan, run (resuming) and report a suite",
                              description="Plan a suite's jobs, run those not finished yet, rebuild its reports.")
    add_run_arguments(p)
    add_store_arguments(p)
    p.add_argument("--timeout", type=float, help="per-job timeout in seconds (default: the suite's run.timeout_s)")
    p.add_argument("--runner", default=None, help="job runner module:function (default: benchmark.harness.runner:run_job)")
    p.add_argument("--prepare", default=DEFAULT_PREPARE, help="data preparation module:function")
    p.add_argument("--no-report", action="store_true", help="do not rebuild the reports at the end")
    slurm = p.add_argument_group("slurm (also from the suite's run.slurm)")
    slurm.add_argument("--partition")
    slurm.add_argument("--time-min", type=int, help="time limit per job, minutes")
    slurm.add_argument("--gpus-per-job", type=int)
    slurm.add_argument("--mem-gb", type=float)
    slurm.add_argument("--submitit-cluster", default="slurm", choices=("slurm", "local", "debug"),
                       help="submitit backend: 'local' runs the array on this machine (testing)")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("report", help="rebuild a suite's tables and figures from its records",
                              description="Rebuild reports/<suite>/ from results/<suite>/*/record.json; with --suites "
                                          "and --table, one table of several suites side by side in "
                                          "reports/<table>_<suite1>+<suite2>/.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--suite", help="suite name in benchmark/suites/ or a path to a suite YAML")
    which.add_argument("--suites", nargs="+", metavar="SUITE", help="several suites, one table (--table) side by side")
    p.add_argument("--table", help="with --suites: the table named so, or so_* (e.g. table1 -> table1_zero_shot), in each suite")
    p.add_argument("--profile", help="default: the profile of the suite's (each suite's) last run")
    add_store_arguments(p)
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser(
        "score", help="score a method's own prediction files under a suite's protocol, as rows of its tables",
        description="Evaluate one prediction file per (setting, class split) exactly as the suite evaluates its own "
                    "jobs of that split, and store the results as the method external:NAME, which `report` puts into "
                    "the suite's tables with paired tests against every method. Layout: DIR/75_25/split_0.json (or "
                    ".csv: video-id,t-start,t-end,label,score), DIR/50_50/..., DIR/closed/split_0.json.")
    add_data_arguments(p)
    p.add_argument("--name", required=True, help="the method's name in the tables (recorded as external:NAME)")
    p.add_argument("--predictions", required=True, type=Path, metavar="DIR", help="the folder of prediction files")
    p.add_argument("--paper-numbers", type=Path, metavar="FILE",
                   help="YAML/JSON {table: {setting: {metric: number}}}: what a paper published for it (paper columns)")
    p.add_argument("--partial", action="store_true", help="score the files present; a missing split leaves n < planned")
    p.add_argument("--diagnostics", action="store_true", help="DETAD's summaries too, as our jobs record them (the input of "
                   "the false-positive and sensitivity figures, for rows named there; no table reads them)")
    p.add_argument("--settings", nargs="+", metavar="SETTING", help="only these settings, e.g. 75/25 50/50 (default: all the "
                   "suite's tables take)")
    add_store_arguments(p)
    p.add_argument("--no-report", action="store_true", help="do not rebuild the suite's reports")
    p.set_defaults(func=cmd_score)

    p = subparsers.add_parser(
        "export", help="write one of our methods' predictions in the layout `score` reads",
        description="Write the predictions of a method (and variant) of the suite's last run, one file per (setting, "
                    "class split), under the suite's protocol and first seed: OUT/75_25/split_0.json ... (or .csv).")
    p.add_argument("--suite", required=True, help="suite name in benchmark/suites/ or a path to a suite YAML")
    p.add_argument("--profile", help="default: the profile of the suite's last run")
    p.add_argument("--method", required=True, metavar="METHOD[/VARIANT]", help="e.g. stale or stale/mask_none")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--format", choices=("json", "csv"), default="json")
    add_store_arguments(p)
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("list-methods", help="registered methods, their hooks and config defaults",
                              description="List the methods found in methods/ with their capabilities and defaults.")
    p.set_defaults(func=cmd_list_methods)


def suite_overrides(args, features_required: bool = True) -> dict:
    """The data flags as a suite override (deep-merged after the profile). Scoring prediction files
    needs no features: ``features_required=False`` takes ``--annotations`` alone."""
    over: dict = {}
    if args.data_root is None and (args.features is not None or features_required) and \
            (args.annotations is None) != (args.features is None):
        raise InputError("--annotations and --features go together (or give --data-root)")
    real = {k: str(v.resolve()) for k, v in (("root", args.data_root), ("annotations", args.annotations),
                                            ("features", args.features)) if v is not None}
    if args.external_scores is not None:
        if not real:
            raise InputError("--external-scores goes with real data (--data-root, or --annotations and --features)")
        real["external_scores"] = str(args.external_scores.resolve())
    for key, flag in (("person_boxes", "person_boxes"), ("images", "person_box_images")):
        if getattr(args, flag, None) is not None:
            if not real:
                raise InputError(f"--{flag.replace('_', '-')} goes with real data (--data-root, or --annotations and --features)")
            real[key] = str(getattr(args, flag).resolve())
    if args.feature_fps is not None and not real:
        raise InputError("--feature-fps goes with real data (--data-root, or --annotations and --features)")
    if real:
        real["text_encoder"] = {"model": args.clip_model, "pretrained": args.clip_pretrained}
        if args.feature_fps is not None:
            real["feature_fps"] = args.feature_fps
        over["data"] = {"source": "real", "real": real}
    if args.split_lists is not None:
        over["splits"] = {"lists": "imported", "lists_dir": str(args.split_lists.resolve())}
    return over


def load_function(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def run_suite(args, runner: str | None = None, results_dir: Path = Path("results"),
              reports_dir: Path = Path("reports"), prepare: str = DEFAULT_PREPARE, timeout: float | None = None,
              report: bool = True, slurm: dict | None = None) -> int:
    """Plan, check, run, report; the exit code is non-zero if a job failed or timed out.

    ``--dry-run`` makes every check a run makes (:func:`check_run`), stops the same way on a bad
    input, prints the job table and runs nothing.
    """
    from benchmark.harness.scheduler import DEFAULT_RUNNER, Summary, job_table, select
    from benchmark.harness.store import Store, atomic_write_json, collect_provenance, now
    from benchmark.harness.suite import load_suite, plan

    runner = runner or DEFAULT_RUNNER
    importlib.import_module(runner.partition(":")[0])  # methods the runner's module registers are plannable
    overrides = suite_overrides(args)
    suite = load_suite(args.suite, args.profile, overrides)
    jobs = plan(suite)
    store = Store(results_dir, suite.name)

    def selection():
        sel = select(jobs, store, args.only, args.force, args.retry_failed)
        missing = sorted({j.spec["method"] for j in sel.unavailable})
        print(f"{suite.name} ({args.profile}): {len(jobs)} jobs; {len(sel.todo)} to run, {len(sel.cached)} cached, "
              f"{len(sel.unavailable)} waiting for unregistered methods ({', '.join(missing) or '-'})"
              + (f", {len(sel.filtered)} left out by --only" if sel.filtered else ""))
        return sel

    runtime, make_executor = check_run(args, suite, runner, prepare, timeout, slurm)
    if args.dry_run:
        print(job_table(selection(), store))
        return 0
    with store.lock():
        sel = selection()
        atomic_write_json(store.dir / RUNS_DIR / f"{args.profile}.json",
                          {"profile": args.profile, "overrides": overrides, "argv": sys.argv, "time": now()})
        summary = Summary()
        if sel.todo:
            summary = make_executor(store).run(sel.todo, store, collect_provenance(), runtime, summary)
        summary.add_cached(sel.cached, store)
        summary.counts["unavailable"] = len(sel.unavailable)
        print(summary.render())
    if report:
        from benchmark.harness.report import build_reports

        paths = build_reports(suite, results_dir, reports_dir)
        print(f"reports: {paths[-1].parent}/ ({len(paths)} files)")
    return summary.exit_code


def check_run(args, suite, runner: str, prepare: str, timeout: float | None, slurm: dict | None):
    """Every check of a run before its first job, the same for ``--dry-run`` and a real run.

    Executor settings first (GPU ids, worker count, timeout, SLURM settings: cheap), then the data
    (``prepare``: split lists, annotations, features, text tower; see ``runner.prepare_data``).
    Returns the jobs' runtime facts and a function that makes the executor for a store. A failed
    check raises a one-line :class:`InputError`; nothing has run and nothing was written but caches.
    """
    from benchmark.harness.scheduler import LocalExecutor, SlurmExecutor

    if timeout is not None and timeout <= 0:
        raise InputError(f"--timeout must be positive, got {timeout:g}")
    timeout = timeout or suite.run.get("timeout_s")
    if args.backend == "slurm":
        settings = slurm_settings({**(suite.run.get("slurm") or {}),
                                   **{k: v for k, v in (slurm or {}).items() if v is not None}})

        def make_executor(store):
            return SlurmExecutor(store.dir / "_submitit", runner=runner, **settings)
    else:
        gpus = gpu_ids(args.gpus)
        if not gpus and args.workers < 1:
            raise InputError(f"--workers must be >= 1, got {args.workers}")

        def make_executor(store):
            return LocalExecutor(workers=args.workers, gpus=gpus, runner=runner, timeout_s=timeout)
    runtime = {"data": load_function(prepare)(suite, args.profile, args)}
    return runtime, make_executor


def gpu_ids(text: str | None) -> list[str]:
    """``--gpus``: device ids or GPU/MIG UUIDs (as CUDA_VISIBLE_DEVICES takes them); none = CPU.

    Without the flag: every GPU the machine shows. Where ``nvidia-smi`` lists GPUs, the ids must be
    among them.
    """
    from benchmark.harness.scheduler import nvidia_smi_gpus, visible_gpus

    if text is None:
        return visible_gpus()
    if text.strip() in ("none", "cpu", ""):
        return []
    ids = [g.strip() for g in text.split(",")]
    bad = [g for g in ids if not re.fullmatch(r"\d+|(GPU|MIG)-[0-9A-Za-z/-]+", g)]
    if bad:
        raise InputError(f"--gpus {text}: not a GPU id or UUID: {', '.join(map(repr, bad))} (e.g. --gpus 0,1,2,3; "
                         f"--gpus none runs on CPU)")
    if len(set(ids)) < len(ids):
        raise InputError(f"--gpus {text}: an id repeats")
    present = nvidia_smi_gpus()
    absent = [g for g in ids if present and g.isdigit() and g not in present]
    if absent:
        raise InputError(f"--gpus {text}: no GPU {', '.join(absent)} on this machine (nvidia-smi lists {', '.join(present)})")
    return ids


SLURM_SETTINGS = {"partition": (str, None), "time_min": (int, 1), "gpus_per_job": (int, 0), "mem_gb": (float, 0.001),
                  "cpus_per_task": (int, 1), "array_parallelism": (int, 1), "cluster": (str, None)}


def slurm_settings(cfg: dict) -> dict:
    """The SLURM executor's settings (suite ``run.slurm`` + flags), checked: known keys, types, ranges,
    and ``sbatch`` on the PATH when the cluster is SLURM itself."""
    out = {}
    for key, value in cfg.items():
        if key not in SLURM_SETTINGS:
            raise InputError(f"slurm setting {key!r} is unknown (known: {', '.join(SLURM_SETTINGS)})")
        kind, low = SLURM_SETTINGS[key]
        if value is None:
            continue
        if kind is str:
            if not isinstance(value, str) or not value:
                raise InputError(f"slurm setting {key}: expected a name, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or kind is int and value != int(value) \
                or value < low:
            raise InputError(f"slurm setting {key}: expected {'an integer' if kind is int else 'a number'} "
                             f">= {low:g}, got {value!r}")
        out[key] = value
    if out.get("cluster", "slurm") == "slurm" and shutil.which("sbatch") is None:
        raise InputError("--backend slurm: sbatch is not on the PATH (run it on a SLURM login node, "
                         "or --submitit-cluster local to test the path on this machine)")
    return out


def cmd_run(args) -> int:
    slurm = {"partition": args.partition, "time_min": args.time_min, "gpus_per_job": args.gpus_per_job,
             "mem_gb": args.mem_gb, "cluster": args.submitit_cluster}
    return run_suite(args, runner=args.runner, results_dir=args.results_dir, reports_dir=args.reports_dir,
                     prepare=args.prepare, timeout=args.timeout, report=not args.no_report, slurm=slurm)


def last_run_suite(name_or_path: str, profile: str | None, results_dir: Path):
    """The suite with the profile (default: that of its last run) and data flags of its last run (results/<suite>/_runs/)."""
    from benchmark.harness.store import Store, read_json
    from benchmark.harness.suite import load_suite, suite_name

    runs = Store(results_dir, suite_name(name_or_path)).dir / RUNS_DIR
    last = {p.stem: read_json(p) for p in runs.glob("*.json")}
    profile = profile or max(last, key=lambda k: last[k]["time"], default="default")
    return load_suite(name_or_path, profile, last[profile]["overrides"] if profile in last else {})


def cmd_report(args) -> int:
    """Rebuild as each suite's last run would (:func:`last_run_suite`): all its reports, or one table of several."""
    if args.suites:
        from benchmark.harness.combined import build_combined

        if not args.table:
            raise InputError("report --suites needs --table (a table name or its prefix, e.g. --table table1)")
        suites = [last_run_suite(s, args.profile, args.results_dir) for s in args.suites]
        paths = build_combined(suites, args.table, args.results_dir, args.reports_dir)
        print(f"report ({', '.join(f'{s.name} {s.profile}' for s in suites)}): {paths[-1].parent}/")
        return 0
    if args.table:
        raise InputError("--table goes with --suites; report --suite rebuilds every table of the suite")
    from benchmark.harness.report import build_reports

    suite = last_run_suite(args.suite, args.profile, args.results_dir)
    paths = build_reports(suite, args.results_dir, args.reports_dir)
    print(f"reports ({suite.profile}): {paths[-1].parent}/ ({len(paths)} files)")
    return 0


def cmd_score(args) -> int:
    from benchmark.harness.external import score
    from benchmark.harness.suite import load_suite

    suite = load_suite(args.suite, args.profile, suite_overrides(args, features_required=False))
    records = score(suite, args.name, args.predictions, args.results_dir, partial=args.partial, settings=args.settings,
                    paper_numbers=args.paper_numbers, diagnostics=args.diagnostics)
    for rec in records:
        counts, metrics = rec["extra"]["scored"], rec["metrics"]
        left = counts["outside_scored_videos"] + counts["outside_test_classes"]
        print(f"{rec['labels'][0]}: mAP_avg {100 * metrics['mAP_avg']:.2f} ({counts['predictions']} predictions, "
              f"{left} left out: {counts['outside_scored_videos']} outside the scored videos, "
              f"{counts['outside_test_classes']} outside the test classes)")
    print(f"{len(records)} records of external:{args.name} in {args.results_dir / suite.name}/")
    if not args.no_report:
        from benchmark.harness.report import build_reports

        paths = build_reports(last_run_suite(args.suite, args.profile, args.results_dir), args.results_dir, args.reports_dir)
        print(f"reports: {paths[-1].parent}/ ({len(paths)} files)")
    return 0


def cmd_export(args) -> int:
    from benchmark.harness.external import export

    suite = last_run_suite(args.suite, args.profile, args.results_dir)
    method, _, variant = args.method.partition("/")
    paths = export(suite, method, variant or "default", args.out, args.format, args.results_dir)
    print(f"{len(paths)} files of {method}/{variant or 'default'} ({suite.name}, profile {suite.profile}) in {args.out}/")
    return 0


def cmd_list_methods(args) -> int:
    import dataclasses

    from tabulate import tabulate

    from benchmark.harness.registry import list_methods

    rows = []
    for name, cls in list_methods().items():
        defaults = ", ".join(f"{f.name}={getattr(cls.Config(), f.name)!r}" for f in dataclasses.fields(cls.Config))
        rows.append([name, f"{cls.__module__}.{cls.__qualname__}", ", ".join(sorted(cls.capabilities())) or "-", defaults])
    print(tabulate(rows, headers=["method", "class", "hooks", "config defaults"], maxcolwidths=[None, None, None, 80])
          if rows else "no methods registered in methods/")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.harness.cli", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
