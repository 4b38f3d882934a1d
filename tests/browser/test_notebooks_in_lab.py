"""Notebooks 02, 03 and 04 in a real browser: opened, run, saved, closed and reopened in
JupyterLab (headless Chromium), as a user who comes back to a notebook the next day.

Notebooks 02 and 04 run at CI size (MGTOOLKIT_SMALL=1; 02 compares half-V with base only, see
INJECT): *Run All Cells* from the menu, no cell error; Ctrl+S writes every cell's outputs to
disk; *File → Close and Shut Down Notebook* closes the tab and its kernel; the page is loaded
again and the notebook reopened from the file. What the user saw after the run must be there
again, read from the page: every text output, and every figure — the same Bokeh figures (title
and the number of points of each glyph) drawn at a non-zero size. Across open, run and reopen
there is no console error, no failed request and no request to a host other than this machine.

Notebook 03 submits Slurm jobs (workers, then a batch job) and runs in tests/notebooks against
the real Slurm; here it is only opened, closed and reopened (no console error, no request leaving
localhost), which keeps these tests inside CI's time budget for the browser.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from test_quickstart_in_lab import PROGRESS_JS, run_all_cells, wait_until

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
#: Injected after the parameters cell. Notebook 02 compares one cycle with base here (the
#: headless test in tests/notebooks runs all of them): the same cells and figures, less time.
INJECT = {"02_cycles.ipynb": 'CYCLES = ["half-V"]  # injected by the browser test'}

#: Every Bokeh figure the page draws: walk the view tree of each root view (every panel output
#: has its own) and report each plot's title, its number of points per glyph renderer, and the
#: size its element takes in the page (0 × 0: the model exists, nothing is drawn).
FIGURES_JS = """
() => {
  const out = [];
  const seen = new Set();
  const walk = (view) => {
    if (!view || seen.has(view)) return;
    seen.add(view);
    const m = view.model;
    if (m && m.renderers !== undefined && m.x_range !== undefined) {
      const points = [];
      for (const r of m.renderers) {
        const src = r.data_source;
        if (!src || !src.data) continue;
        const data = src.data instanceof Map ? Object.fromEntries(src.data) : src.data;
        const cols = Object.keys(data);
        points.push(cols.length ? Array.from(data[cols[0]]).length : 0);
      }
      const box = view.el.getBoundingClientRect();
      out.push({
        title: m.title && m.title.text !== undefined ? m.title.text : "",
        points,
        drawn: box.width > 0 && box.height > 0,
      });
    }
    const kids = typeof view.children === "function" ? [...view.children()] : [];
    for (const kid of kids) walk(kid);
  };
  for (const view of Object.values((window.Bokeh && window.Bokeh.index) || {})) walk(view);
  return out;
}
"""

#: The text the page shows in each cell's outputs (stdout, plain-text results, Markdown).
OUTPUT_TEXTS_JS = """
() => [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')].map((cell) =>
  [...cell.querySelectorAll('.jp-OutputArea-output')]
    .filter((o) => ['text/plain', 'application/vnd.jupyter.stdout'].includes(o.dataset.mimeType))
    .map((o) => o.innerText.trim()))
"""


def figures(page) -> list[tuple[str, tuple[int, ...], bool]]:
    return sorted((f["title"], tuple(f["points"]), f["drawn"]) for f in page.evaluate(FIGURES_JS))


def open_notebook(page, lab, name: str) -> None:
    """Open ``name`` and wait until every cell is in the page and the kernel is idle."""
    cells = len(nbformat.read(lab.root / name, as_version=4).cells)
    page.goto(f"{lab.url}/lab/tree/{name}")
    page.wait_for_function(
        f"() => document.querySelectorAll('.jp-NotebookPanel .jp-Cell').length === {cells}",
        timeout=60_000,
    )
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)


def close_and_shut_down(page, lab, name: str, quiet: Quiet) -> None:
    """File → Close and Shut Down Notebook: the tab and its kernel are gone."""
    page.get_by_role("menuitem", name="File", exact=True).click()
    page.get_by_role("menuitem", name="Close and Shut Down Notebook").click()
    page.locator(".jp-Dialog .jp-mod-accept").click()  # "Shut down the notebook?"
    page.wait_for_selector(".jp-NotebookPanel", state="detached", timeout=30_000)

    def no_kernel():
        with urllib.request.urlopen(f"{lab.url}/api/kernels") as r:
            return json.load(r) == []

    wait_until(no_kernel, timeout=30, what=f"the kernel of {name} shut down")
    quiet.wait()  # then the caller loads the page again (a navigation aborts what is in flight)


def saved_outputs(path: Path) -> list[int]:
    """Per code cell of the file on disk: its number of outputs (-1: not executed); [] while
    the file is being written."""
    try:
        nb = nbformat.read(path, as_version=4)
    except (nbformat.reader.NotJSONError, json.JSONDecodeError):
        return []
    cells = [c for c in nb.cells if c.cell_type == "code"]
    return [len(c.outputs) if c.execution_count else -1 for c in cells]


#: Per code cell in the page: its number of outputs.
PAGE_OUTPUTS_JS = """
() => [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')].map(
  (cell) => cell.querySelectorAll('.jp-OutputArea-child').length)
"""


class Quiet:
    """Tracks the page's HTTP requests in flight, to load the page again only when none is (a
    navigation cancels what is in flight: aborted requests, and JupyterLab logs errors about
    them). A request without an end event after ``stale`` seconds is not waited for (Playwright
    reports no end for a few of JupyterLab's polls; a navigation does not abort them)."""

    def __init__(self, page, stale: float = 5.0):
        self.pending: dict = {}
        self.stale = stale
        page.on("request", lambda r: self.pending.setdefault(r, time.monotonic()))
        page.on("requestfinished", lambda r: self.pending.pop(r, None))
        page.on("requestfailed", lambda r: self.pending.pop(r, None))

    def wait(self, seconds: float = 1.0) -> None:
        """Until no request younger than ``stale`` has been in flight for ``seconds``."""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < seconds:
            now = time.monotonic()
            if any(now - t < self.stale for t in list(self.pending.values())):
                quiet_since = now
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("name", "run"),
    [("02_cycles.ipynb", True), ("04_fields_3d.ipynb", True), ("03_hpc.ipynb", False)],
)
def test_notebook_opens_runs_and_reopens(name, run, jupyter_lab, browser_page, tmp_path):
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
    if run:
        t1 = time.monotonic()
        run_all_cells(page, timeout=300)
        timings["run all cells"] = time.monotonic() - t1
        page.wait_for_timeout(1000)  # the last figures are drawn
        page.screenshot(path=shots / f"{name}-1-run.png", full_page=True)
        texts_run, figures_run = page.evaluate(OUTPUT_TEXTS_JS), figures(page)
        assert figures_run, "no figure in the page after the run"
        assert all(drawn for _, _, drawn in figures_run), figures_run
        # Ctrl+S (command mode) writes every cell's outputs to the file.
        page.locator(".jp-NotebookPanel .jp-Cell").first.locator(".jp-InputPrompt").click()
        page.keyboard.press("Escape")
        page.keyboard.press("Control+s")
        shown = page.evaluate(PAGE_OUTPUTS_JS)
        assert sum(shown) > 0, shown

        def saved():  # every cell ran, and each cell with outputs in the page has them on disk
            n = saved_outputs(path)
            return len(n) == len(shown) and all(
                k >= 0 and (k > 0 or not v) for k, v in zip(n, shown, strict=True)
            )

        wait_until(saved, timeout=30, what=f"every cell run, outputs as shown ({shown}), in {path}")
    else:
        # Read it a moment: JupyterLab's debugger restores its state over the kernel's websocket
        # after opening; shutting the kernel down within a second cancels that request and
        # JupyterLab logs "Could not restore the debugger state" (seen here, not a user's pace).
        page.wait_for_timeout(3000)
        quiet.wait()
        texts_run, figures_run = page.evaluate(OUTPUT_TEXTS_JS), figures(page)

    t2 = time.monotonic()
    close_and_shut_down(page, jupyter_lab, name, quiet)
    open_notebook(page, jupyter_lab, name)  # the page loaded again, the notebook from its file
    timings["reopen"] = time.monotonic() - t2
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
