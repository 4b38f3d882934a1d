"""How long a notebook takes, cell by cell, at its full size (or at CI size with --small).

The notebook runs in a real kernel (nbclient) in a temporary directory. Notebooks that launch
a run and return at once (01) are followed by one more cell, ``--then``, that waits for the
run to end as a user would by watching; its time counts. Prints one line per cell and the
total, with the machine and its load, for the notebook's stated time and docs/performance.md.

    python benchmarks/notebooks.py notebooks/01_quickstart.ipynb
    python benchmarks/notebooks.py notebooks/01_quickstart.ipynb --small
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

#: What follows each notebook: wait for its run and print what the user reads at the end.
THEN = {
    "01_quickstart.ipynb": (
        "monitor.wait()\nprint(monitor.progress_text())\nprint(monitor.summary())\n"
        "print(comparison.objects[0].object)"
    ),
}


def cell_seconds(cell) -> float:
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = dt.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def text_of(cell) -> str:
    parts = [o.get("text", "") for o in cell.get("outputs", [])]
    parts += [str(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", [])]
    return "".join(parts).strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--small", action="store_true", help="CI size (MGTOOLKIT_SMALL=1)")
    parser.add_argument("--then", help="code run after the last cell (default: per notebook)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)

    if args.small:
        os.environ["MGTOOLKIT_SMALL"] = "1"
    else:
        os.environ.pop("MGTOOLKIT_SMALL", None)
    nb = nbformat.read(args.notebook, as_version=4)
    then = args.then if args.then is not None else THEN.get(args.notebook.name)
    if then:
        nb.cells.append(nbformat.v4.new_code_cell(then))
    load = os.getloadavg()[0]
    print(
        f"# {args.notebook.name} at {'CI' if args.small else 'full'} size, "
        f"{dt.date.today()}, {platform.machine()} {os.cpu_count()} cores, load avg {load:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        client = NotebookClient(
            nb, timeout=args.timeout, kernel_name="python3", resources={"metadata": {"path": tmp}}
        )
        start = time.perf_counter()
        client.execute()
        total = time.perf_counter() - start
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        first = cell.source.strip().splitlines()[0][:60] if cell.source.strip() else ""
        print(f"  cell {i:2d}  {cell_seconds(cell):8.1f} s  {first}")
    if then:
        print("  the last cell printed:")
        print("\n".join("    " + line for line in text_of(nb.cells[-1]).splitlines()))
    print(
        f"total {total:.0f} s ({total / 60:.1f} min), kernel start included; "
        f"load avg after {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
