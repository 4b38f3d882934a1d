"""Notebooks 02, 03 and 04 in a real browser: opened, run, saved, closed and reopened in
JupyterLab (headless Chromium), as a user who comes back to a notebook the next day.

Each runs at CI size (MGTOOLKIT_SMALL=1; 02 compares half-V with base only, see INJECT): *Run
All Cells* from the menu, no cell error; Ctrl+S writes every cell's outputs to disk; *File →
Close and Shut Down Notebook* closes the tab and its kernel; the page is loaded again and the
notebook reopened from the file. What the user saw after the run must be there again, read from
the page: every text output, and every figure — the same Bokeh figures (title and the number of
points of each glyph; 03's live monitors as first drawn) drawn at a non-zero size. Across open,
run and reopen there is no console error, no failed request and no request to a host other
than this machine.

Notebook 03 uses the batch system it finds: where Slurm runs (CI starts a real single-node
Slurm), its worker job (two workers that are the ranks of one MPI world) and its sbatch job run
there, the page shows job ids and queue states while they start, the run launched from the
composer sums over MPI, and no job of the notebook is left in the queue afterwards.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from labpage import (
    OUTPUT_TEXTS_JS,
    PROGRESS_JS,
    Quiet,
    close_and_shut_down,
    figures,
    open_notebook,
    run_all_cells,
    save_and_wait,
    wait_until,
)

from mgtoolkit.train import read_events

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
#: Injected after the parameters cell. Notebook 02 compares one cycle with base here (the
#: headless test in tests/notebooks runs all of them): the same cells and figures, less time.
INJECT = {"02_cycles.ipynb": 'CYCLES = ["half-V"]  # injected by the browser test'}
#: Text a notebook must show (evidence that its main step ran, not only that nothing failed).
EXPECTED = {
    "04_fields_3d.ipynb": [
        "mean relative L2 error",
        "cells shown of",
        "out of range",
        "mgtoolkit fem solve",
    ],
}
#: Notebooks whose monitors are drawn before their runs start, to be watched live: JupyterLab
#: saves a widget as its cell first drew it (docs/user-guide/notebooks.md), so reopened they show
#: the figures they had then.
LIVE = {"03_hpc.ipynb"}


def saved_text(path: Path) -> str:
    """Every output of the saved notebook as text (stdout, plain text, HTML, Markdown)."""
    parts = []
    for cell in nbformat.read(path, as_version=4).cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(parts)


def check_hpc_run(text: str, out: Path) -> None:
    """What notebook 03 must have done on this machine's batch system (Slurm in CI)."""
    for expected in ["#SBATCH", "#PBS", "module load", "finished (schedule complete)", "released:"]:
        assert expected in text, f"03_hpc.ipynb: {expected!r} not in the outputs"
    assert "released: [(" in text and "'finished')]" in text
    if shutil.which("sinfo") is None and shutil.which("qstat") is None:
        assert "using: local (no Slurm or PBS here)" in text
        return
    assert shutil.which("sinfo"), "this test runs where Slurm is (CI): PBS is checked as text"
    assert "using: slurm (detected)" in text
    # job ids and queue state were shown while waiting for the workers
    assert re.search(r"\d/2 workers · slurm: job \d+ (PENDING|RUNNING|CONFIGURING)", text), text
    assert re.search(r"submitted batch job \d+", text)
    line = re.search(r"jobs of this notebook: ([\d, ]+) ->", text)
    assert line, text
    ids = [i.strip() for i in line.group(1).split(",")]
    assert len(ids) == 2, ids  # one worker job of 2 MPI ranks, one batch job
    # the composer's run trained on the worker job's MPI ranks, summing over MPI
    events = read_events(out / "runs" / "notebook" / "events.jsonl")
    assert (events[0]["world_size"], events[0]["transport"]) == (2, "mpi"), events[0]
    # the batch job trained (its run directory has the events the monitor followed), each field
    # split in 2 slabs across its 2 ranks
    events = read_events(out / "runs" / "batch" / "events.jsonl")
    assert [e["reason"] for e in events if e["type"] == "run_end"] == ["schedule complete"]
    starts = [e for e in events if e["type"] == "step_start"]
    assert starts and all(e["spatial"] == 2 for e in starts), starts
    queued = subprocess.run(
        ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not set(ids) & set(queued), f"jobs still queued after the notebook: {queued}"


@pytest.mark.parametrize("name", ["02_cycles.ipynb", "03_hpc.ipynb", "04_fields_3d.ipynb"])
def test_notebook_opens_runs_and_reopens(name, jupyter_lab, browser_page, tmp_path):
    page, problems = browser_page
    quiet = Quiet(page)
    path = jupyter_lab.root / name
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if name in INJECT:  # papermill style, after the parameters cell
        at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        nb.cells.insert(at + 1, nbformat.v4.new_code_cell(INJECT[name]))
    nbformat.write(nb, path)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    timings = {}
    t0 = time.monotonic()

    open_notebook(page, jupyter_lab, name)
    timings["open"] = time.monotonic() - t0
    t1 = time.monotonic()
    run_all_cells(page, timeout=420)
    timings["run all cells"] = time.monotonic() - t1
    page.wait_for_timeout(1000)  # the last figures are drawn
    page.screenshot(path=shots / f"{name}-1-run.png", full_page=True)
    texts_run, figures_run = page.evaluate(OUTPUT_TEXTS_JS), figures(page)
    assert figures_run, "no figure in the page after the run"
    assert all(drawn for _, _, drawn in figures_run), figures_run
    save_and_wait(page, path)
    text = saved_text(path)
    for expected in EXPECTED.get(name, []):
        assert expected in text, f"{name}: {expected!r} not in the saved outputs"
    if name == "03_hpc.ipynb":
        check_hpc_run(text, jupyter_lab.root / "hpc-output")

    t2 = time.monotonic()
    close_and_shut_down(page, jupyter_lab, name, quiet)
    open_notebook(page, jupyter_lab, name)  # the page loaded again, the notebook from its file
    timings["reopen"] = time.monotonic() - t2
    if name in LIVE:  # figures drawn again, as first drawn (their number and data not compared)
        page.wait_for_timeout(3000)
        reopened = figures(page)
        print(f"{name} reopened: {reopened}; after the run: {figures_run}")
        assert reopened and all(drawn for _, _, drawn in reopened), reopened
        assert len(reopened) == len(figures_run), reopened
    else:
        wait_until(
            lambda: figures(page) == figures_run,
            timeout=30,
            what=f"the same figures drawn again: {figures_run}",
        )
    page.wait_for_timeout(1000)
    page.screenshot(path=shots / f"{name}-2-reopened.png", full_page=True)
    assert page.evaluate(OUTPUT_TEXTS_JS) == texts_run
    assert page.evaluate(PROGRESS_JS)["error"] is None
    timings["total"] = time.monotonic() - t0
    print(f"{name}: screenshots in {shots}; timings (s): {json.dumps(timings)}")

    assert problems.failed_requests == [], problems.failed_requests
    assert problems.external_requests == [], problems.external_requests
    assert problems.console_errors == [], problems.console_errors
