"""The ``mgtoolkit`` command line (also ``python -m mgtoolkit``).

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds its
parser(s) with ``set_defaults(run=callable)``. Modules import heavy libraries inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["build_parser", "main"]

#: Modules under ``mgtoolkit.cli`` that contribute sub-commands, in help order.
COMMAND_MODULES = ("demo", "data", "fem", "train", "infer", "scaling")


def build_parser() -> argparse.ArgumentParser:
    from mgtoolkit import __version__

    parser = argparse.ArgumentParser(
        prog="mgtoolkit",
        description="Multigrid neural solvers for -div(nu grad u) = 0, with a FEM reference.",
    )
    parser.add_argument("--version", action="version", version=f"mgtoolkit {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"mgtoolkit.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        result = args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        # Bad input: say what is wrong and how to fix it, without a traceback.
        print(f"mgtoolkit: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)
