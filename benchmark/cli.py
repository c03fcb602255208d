"""``python -m benchmark <command>``: one entry point; each role registers its own commands.

Command modules import their heavy dependencies (torch, open_clip) inside the handlers, so that
``--help`` or ``evaluate`` never pays for them.
"""
from __future__ import annotations

import argparse
import importlib

from benchmark.errors import run_command

# Each module defines register(subparsers) and sets `func` on its parsers.
COMMAND_MODULES = ("benchmark.data.cli", "benchmark.evaluation.cli", "benchmark.harness.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)
