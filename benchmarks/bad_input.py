"""Run the bad-input suite (``tests/badinput``) and count how its cases end.

Every case feeds the real CLI (in-process through ``mgtoolkit.cli.main``, a few as real
subprocesses) or the API a bad input on real files and stores. A case that fails says why in
its first word (see ``tests/badinput/badcases.py``): ``TRACEBACK`` (an exception escaped),
``SILENT`` (the bad input was accepted), ``HANG`` (ran past its time limit) or ``VAGUE`` (no
single error line saying what it should). Prints the number of cases and of each outcome; the
target is 0 tracebacks, 0 silent acceptances and 0 hangs. Exits 1 when any case failed.

    .venv/bin/python benchmarks/bad_input.py            # the whole suite (~3 min on 2 cores)
    .venv/bin/python benchmarks/bad_input.py -k configs # a subset, as pytest -k
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("TRACEBACK", "SILENT", "HANG", "VAGUE")


class Counter:
    """A pytest plugin that sorts each case's outcome."""

    def __init__(self) -> None:
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.failures: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            if report.passed:
                self.outcomes["passed"] += 1
            elif report.skipped:
                self.outcomes["skipped"] += 1
            else:
                text = str(report.longrepr)
                kind = next((k for k in KINDS if f"{k}:" in text), "other failure")
                self.outcomes[kind] += 1
                self.failures.append((report.nodeid, kind))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default=None, help="only cases matching (as pytest -k)")
    args = parser.parse_args()
    counter = Counter()
    argv = [str(ROOT / "tests" / "badinput"), "-q", "-p", "no:cacheprovider", "--no-header"]
    if args.k:
        argv += ["-k", args.k]
    t0 = time.perf_counter()
    pytest.main(argv, plugins=[counter])
    seconds = time.perf_counter() - t0
    o = counter.outcomes
    cases = sum(o.values())
    print()
    print(f"bad-input cases: {cases} in {seconds:.0f} s")
    print(f"  one-line error (as required): {o['passed']}")
    print(f"  skipped (needs root or another user here): {o['skipped']}")
    for kind in (*KINDS, "other failure"):
        print(f"  {kind.lower()}: {o[kind]}")
    for nodeid, kind in counter.failures:
        print(f"    {kind}: {nodeid}")
    return 1 if counter.failures else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
