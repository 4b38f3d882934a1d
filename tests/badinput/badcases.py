"""Helpers of the bad-input suite (a module of its own: ``conftest`` is ambiguous to import).

The bad-input suite: every case runs the real CLI (``mgtoolkit.cli.main``, in-process) or the
real API on real files and stores, and must end in a one-line error naming the fix.

A case fails with a message that starts with the class of failure, so that
``benchmarks/bad_input.py`` can count them: ``TRACEBACK`` (an exception escaped), ``SILENT``
(exit code 0 or no error: bad input accepted), ``HANG`` (ran past its time limit), ``VAGUE``
(the message is missing, not one line, or does not say what it should).
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest

from mgtoolkit.cli import main

#: Seconds an in-process case may take before it counts as a hang.
CASE_SECONDS = 60


class Hang(BaseException):  # not an Exception: the CLI's handler must not turn it into a message
    pass


def _alarm(signum, frame):
    raise Hang


def run_cli(argv: list[str], *, seconds: int = CASE_SECONDS) -> int:
    """Run ``mgtoolkit argv`` in-process; an escaping exception or a hang fails the case."""
    argv = [str(a) for a in argv]
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        return main(argv)
    except SystemExit as exc:  # argparse
        return exc.code if isinstance(exc.code, int) else 1
    except Hang:
        pytest.fail(f"HANG: mgtoolkit {' '.join(argv)[:200]} ran over {seconds} s")
    except BaseException as exc:
        pytest.fail(
            f"TRACEBACK: mgtoolkit {' '.join(argv)[:200]} raised {type(exc).__name__}: {exc}"
        )
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def check_error(rc: int, err: str, match: str | None, what: str) -> str:
    """Assert one ``error:`` line matching ``match``, no traceback, exit code ≠ 0; return it."""
    if "Traceback" in err:
        pytest.fail(f"TRACEBACK: {what}: {err[-2000:]}")
    if rc == 0:
        pytest.fail(f"SILENT: {what} was accepted (exit 0); stderr: {err[-500:]}")
    lines = [line for line in err.splitlines() if "error:" in line]
    if len(lines) != 1:
        pytest.fail(f"VAGUE: {what}: expected one error line, got {len(lines)}: {err[-1000:]}")
    line = lines[0]
    if len(line) > 800:
        pytest.fail(f"VAGUE: {what}: error line of {len(line)} characters")
    if match is not None and not re.search(match, line):
        pytest.fail(f"VAGUE: {what}: {line!r} does not match {match!r}")
    return line


def expect_error(capsys, argv: list, match: str | None = None, *, seconds: int = CASE_SECONDS):
    """Run the CLI and require a one-line error matching ``match``; return the error line."""
    capsys.readouterr()
    rc = run_cli(argv, seconds=seconds)
    err = capsys.readouterr().err
    return check_error(rc, err, match, "mgtoolkit " + " ".join(map(str, argv))[:200])


def expect_api_error(fn, match: str, *, types=(ValueError,)):
    """Call ``fn()`` and require one of ``types`` whose message matches ``match``."""
    try:
        fn()
    except types as exc:
        text = str(exc)
        if "\n" in text.strip() or len(text) > 800:
            pytest.fail(f"VAGUE: message not one short line: {text[:300]!r}")
        if not re.search(match, text):
            pytest.fail(f"VAGUE: {text!r} does not match {match!r}")
        return exc
    except Exception as exc:
        pytest.fail(f"TRACEBACK: raised {type(exc).__name__}: {exc}")
    pytest.fail("SILENT: accepted")


def shard_file(store: Path, level: int = 1, variable: str = "nu", index: int = 0) -> Path:
    return store / f"level{level}" / variable / "c" / str(index) / "0" / "0"


def truncate(path: Path, keep: int = 100) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


python = sys.executable
