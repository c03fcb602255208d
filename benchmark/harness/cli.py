"""Harness commands: ``run`` (plan, run, report), ``report``, ``list-methods``.

``python -m benchmark run --suite zs_activitynet --profile smoke`` (or ``python run_all.py ...``,
which takes the same core flags). Heavy imports happen inside the handlers, so ``--help`` is fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from benchmark.errors import InputError

DEFAULT_PREPARE = "benchmark.harness.runner:prepare_data"
# One single-threaded job per core is fastest for the small default models; the cap keeps a big
# machine from holding dozens of copies of a real dataset in memory at once.
MAX_DEFAULT_WORKERS = 4
DEFAULT_WORKERS = min(MAX_DEFAULT_WORKERS, len(os.sched_getaffinity(0)))
RUNS_DIR = "_runs"  # results/<suite>/_runs/<profile>.json: the suite overrides of the last run


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of run_all.py (the issue's list), shared with ``run``."""
    p.add_argument("--suite", required=True, help="suite name in benchmark/suites/ or a path to a suite YAML")
    p.add_argument("--profile", default="default", help="smoke | default | paper (profiles of the suite; default: default)")
    p.add_argument("--data-root", type=Path, help="real data: a folder with the annotations and features")
    p.add_argument("--annotations", type=Path, help="real data: annotation file (with --features)")
    p.add_argument("--features", type=Path, help="real data: feature folder or HDF5 file (with --annotations)")
    p.add_argument("--split-lists", type=Path, help="import the class splits from these published lists")
    p.add_argument("--clip-model", default="ViT-B-16",
                   help="real data: open_clip model name or model-config JSON of the text tower (default ViT-B-16)")
    p.add_argument("--clip-pretrained", default="openai",
                   help="real data: open_clip pretrained tag or local checkpoint file (default openai)")
    p.add_argument("--gpus", help="GPU ids, e.g. 0,1,2,3 (default: all visible; 'none' = CPU)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help=f"CPU only: parallel jobs, torch threads = cores // N (default: the usable cores, at most "
                        f"{MAX_DEFAULT_WORKERS}, here {DEFAULT_WORKERS}); on GPUs, one job per id")
    p.add_argument("--backend", choices=("local", "slurm"), default="local")
    p.add_argument("--dry-run", action="store_true", help="print the job table with what is cached, run nothing")
    p.add_argument("--force", action="store_true", help="re-run the selected jobs even if finished")
    p.add_argument("--only", metavar="PATTERN", help="only jobs whose method/variant/setting/splitI/seedS matches this glob (or key prefix)")
    p.add_argument("--retry-failed", action="store_true", help="re-run failed and timed-out jobs")


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
                              description="Rebuild reports/<suite>/ from results/<suite>/*/record.json.")
    p.add_argument("--suite", required=True, help="suite name in benchmark/suites/ or a path to a suite YAML")
    p.add_argument("--profile", help="default: the profile of the suite's last run")
    add_store_arguments(p)
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("list-methods", help="registered methods, their hooks and config defaults",
                              description="List the methods found in methods/ with their capabilities and defaults.")
    p.set_defaults(func=cmd_list_methods)


def suite_overrides(args) -> dict:
    """The data flags as a suite override (deep-merged after the profile)."""
    over: dict = {}
    if (args.annotations is None) != (args.features is None) and args.data_root is None:
        raise InputError("--annotations and --features go together (or give --data-root)")
    real = {k: str(v.resolve()) for k, v in (("root", args.data_root), ("annotations", args.annotations),
                                            ("features", args.features)) if v is not None}
    if real:
        real["text_encoder"] = {"model": args.clip_model, "pretrained": args.clip_pretrained}
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
    """Plan, run, report; the exit code is non-zero if a job failed or timed out."""
    from benchmark.harness.scheduler import (DEFAULT_RUNNER, LocalExecutor, SlurmExecutor, Summary, job_table,
                                             select, visible_gpus)
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

    if args.dry_run:
        print(job_table(selection(), store))
        return 0
    with store.lock():
        sel = selection()
        atomic_write_json(store.dir / RUNS_DIR / f"{args.profile}.json",
                          {"profile": args.profile, "overrides": overrides, "argv": sys.argv, "time": now()})
        summary = Summary()
        if sel.todo:
            runtime = {"data": load_function(prepare)(suite, args.profile, args)}
            gpus = [] if args.gpus in ("none", "cpu", "") else (args.gpus.split(",") if args.gpus else visible_gpus())
            if args.backend == "slurm":
                cfg = {**(suite.run.get("slurm") or {}), **{k: v for k, v in (slurm or {}).items() if v is not None}}
                executor = SlurmExecutor(store.dir / "_submitit", runner=runner, **cfg)
            else:
                executor = LocalExecutor(workers=args.workers, gpus=gpus, runner=runner,
                                         timeout_s=timeout or suite.run.get("timeout_s"))
            summary = executor.run(sel.todo, store, collect_provenance(), runtime, summary)
        summary.add_cached(sel.cached, store)
        summary.counts["unavailable"] = len(sel.unavailable)
        print(summary.render())
    if report:
        from benchmark.harness.report import build_reports

        paths = build_reports(suite, results_dir, reports_dir)
        print(f"reports: {paths[-1].parent}/ ({len(paths)} files)")
    return summary.exit_code


def cmd_run(args) -> int:
    slurm = {"partition": args.partition, "time_min": args.time_min, "gpus_per_job": args.gpus_per_job,
             "mem_gb": args.mem_gb, "cluster": args.submitit_cluster}
    return run_suite(args, runner=args.runner, results_dir=args.results_dir, reports_dir=args.reports_dir,
                     prepare=args.prepare, timeout=args.timeout, report=not args.no_report, slurm=slurm)


def cmd_report(args) -> int:
    """Rebuild with the profile and data flags of the suite's last run (results/<suite>/_runs/)."""
    from benchmark.harness.report import build_reports
    from benchmark.harness.store import Store, read_json
    from benchmark.harness.suite import load_suite, suite_name

    runs = Store(args.results_dir, suite_name(args.suite)).dir / RUNS_DIR
    last = {p.stem: read_json(p) for p in runs.glob("*.json")}
    profile = args.profile or max(last, key=lambda k: last[k]["time"], default="default")
    overrides = last[profile]["overrides"] if profile in last else {}
    paths = build_reports(load_suite(args.suite, profile, overrides), args.results_dir, args.reports_dir)
    print(f"reports ({profile}): {paths[-1].parent}/ ({len(paths)} files)")
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
    try:
        return args.func(args) or 0
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
