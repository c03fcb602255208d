"""Plan, run and report a suite: ``python run_all.py --suite zs_activitynet [--profile smoke|default|paper]``.

Without data flags the suite's embedded synthetic benchmark is generated once (cached) and used;
``--data-root DIR`` or ``--annotations F --features DIR`` switch to real data, ``--split-lists DIR``
to the published class splits. Finished jobs are skipped (``--force``, ``--only``, ``--retry-failed``
change that); ``--dry-run`` makes every check of a run, prints the job table and runs nothing.
Results go to ``results/<suite>/``, tables and figures to ``reports/<suite>/``. The exit code is 1
if any job failed or timed out, 2 on bad input (one line, before any job starts).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.errors import run_command
from benchmark.harness.cli import add_run_arguments, add_store_arguments, run_suite

ROOT = Path(__file__).resolve().parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="run_all.py", description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    add_store_arguments(parser, root=ROOT)
    args = parser.parse_args(argv)
    return run_command(run_suite, args, results_dir=args.results_dir, reports_dir=args.reports_dir)


if __name__ == "__main__":
    sys.exit(main())
