"""The ``mgtoolkit`` command line (also ``python -m mgtoolkit``).

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds its
parser(s) with ``set_defaults(run=callable)``. Modules import heavy libraries inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["build_parser", "describe_error", "main"]

#: Modules under ``mgtoolkit.cli`` that contribute sub-commands, in help order.
COMMAND_MODULES = ("demo", "data", "fem", "train", "infer", "models", "scaling")


def build_parser() -> argparse.ArgumentParser:
    from mgtoolkit import __version__

    parser = argparse.ArgumentParser(
        prog="mgtoolkit",
        description="Multigrid neural solvers for -div(nu grad u) = 0, with a FEM reference.",
    )
    parser.add_argument("--version", action="version", version=f"mgtoolkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
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
    if args.debug:
        return int(args.run(args) or 0)
    try:
        result = args.run(args)
    except KeyboardInterrupt:
        print(
            "mgtoolkit: interrupted; finished work is kept — rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:  # every error the user can meet ends as one line
        code, message = describe_error(exc)
        print(f"mgtoolkit: error: {message}", file=sys.stderr)
        return code
    return int(result or 0)


#: Longest error message printed (user values inside are cut, never echoed whole).
MAX_MESSAGE = 600


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 15] + " …[truncated]"


def describe_error(exc: BaseException) -> tuple[int, str]:
    """``(exit code, one-line message)`` for an error that ended a command."""
    import errno

    cause, depth = exc, 0
    while cause is not None and not isinstance(cause, OSError) and depth < 20:
        cause, depth = cause.__cause__ or cause.__context__, depth + 1
    if cause is not exc and isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
        exc = cause  # e.g. a dask task that filled the disk: say so, not "task failed"
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | FileExistsError):
        where = exc.filename or ""
        where = f" {where}" if where else ""
        if exc.errno == errno.ENOSPC:
            return 1, _one_line(
                f"no space left on the device writing{where}; free some space or write to "
                "another directory (--out / --run-dir), then rerun the same command to resume"
            )
        if exc.errno == errno.EDQUOT:
            return 1, _one_line(
                f"disk quota exceeded writing{where}; free some space or write elsewhere"
            )
        if isinstance(exc, PermissionError):
            return 1, _one_line(
                f"permission denied:{where or ' ' + str(exc)}; choose a path you may write "
                "(--out / --run-dir) or ask its owner for access"
            )
        if exc.errno == errno.EROFS:
            return 1, _one_line(
                f"read-only file system:{where}; choose a writable output path (--out / --run-dir)"
            )
        if isinstance(exc, ConnectionError | TimeoutError) or "connect" in str(exc).lower():
            return 1, _one_line(
                f"cannot reach the dask scheduler ({exc}); check the --scheduler address and that "
                "the scheduler is running, or leave --scheduler out for a local cluster"
            )
        return 1, _one_line(f"{exc.strerror or exc}{where and ':' + where}")
    if isinstance(exc, ValueError | FileNotFoundError | FileExistsError):
        return 2, _one_line(exc)
    if isinstance(exc, MemoryError):
        return 1, "out of memory; reduce the size (resolution, batch, tile) or see `mgtoolkit plan`"
    if isinstance(exc, RuntimeError | FloatingPointError):
        return 1, _one_line(exc)
    return 1, _one_line(
        f"{type(exc).__name__}: {exc} (unexpected; rerun with `mgtoolkit --debug ...` for the "
        "traceback and report it)"
    )
