"""What the browser tests do in JupyterLab's page: run cells, save, close and reopen a notebook,
and read back what the page shows (cell outputs' text, Bokeh figures, cell progress)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import nbformat

PROGRESS_JS = """
() => {
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
  const outputs = [...document.querySelectorAll('.jp-OutputArea-output')];
  const error = outputs.map((o) => o.innerText).find((t) => t.includes('Traceback (most recent'));
  return {
    done: prompts.length > 0 && prompts.every((p) => /\\[\\d+\\]/.test(p.textContent)),
    busy: prompts.filter((p) => p.textContent.includes('*')).length,
    error: error || null,
  };
}
"""


def run_all_cells(page, *, timeout: float) -> None:
    """Run every cell through the Run menu and wait until each has an execution count."""
    page.locator(".jp-NotebookPanel .jp-Cell").first.click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    deadline = time.monotonic() + timeout
    while True:
        state = page.evaluate(PROGRESS_JS)
        assert state["error"] is None, f"a cell failed in JupyterLab:\n{state['error']}"
        if state["done"]:
            return
        assert time.monotonic() < deadline, f"cells still running after {timeout:g} s: {state}"
        time.sleep(1.0)


def wait_until(predicate, *, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(poll)


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


def save_and_wait(page, path: Path) -> None:
    """Ctrl+S (command mode), then wait until the file on disk holds every cell's outputs as
    the page shows them."""
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
