"""Notebook 01 in a real browser: JupyterLab + headless Chromium, no console errors.

This test also *executes* notebook 01 (at CI size, MGTOOLKIT_SMALL=1) — the headless notebook
tests in tests/notebooks cover 02–04.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from mgtoolkit.cycles import schedule
from mgtoolkit.train import read_events
from mgtoolkit.widgets.composer import DIAGRAM_NAME
from mgtoolkit.widgets.monitor import LOSS_NAME

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "01_quickstart.ipynb"

#: Figures with a given bokeh name in every panel document of the page: their title and the
#: number of data points of each glyph renderer.
FIGURES_JS = """
(name) => {
  const views = Object.values((window.Bokeh && window.Bokeh.index) || {});
  const docs = new Set(views.map((v) => v.model.document).filter((d) => d));
  const out = [];
  for (const doc of docs) {
    for (const m of doc.all_models) {
      if (m.name !== name) continue;
      const points = [];
      for (const r of m.renderers || []) {
        if (!r.data_source || !r.data_source.data) continue;
        const data = r.data_source.data instanceof Map
          ? Object.fromEntries(r.data_source.data) : r.data_source.data;
        const cols = Object.keys(data);
        points.push(cols.length ? Array.from(data[cols[0]]).length : 0);
      }
      out.push({title: m.title ? m.title.text : null, points});
    }
  }
  return out;
}
"""

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


def test_quickstart_runs_in_jupyterlab(jupyter_lab, browser_page, tmp_path):
    page, problems = browser_page
    shutil.copy(NOTEBOOK, jupyter_lab.root / NOTEBOOK.name)
    shots = tmp_path / "screenshots"
    shots.mkdir()

    page.goto(f"{jupyter_lab.url}/lab/tree/{NOTEBOOK.name}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    run_all_cells(page, timeout=420)  # ~1 min when idle; a loaded 2-core CI runner is slower
    page.wait_for_timeout(1500)  # last comm messages
    page.screenshot(path=shots / "01-after-run-all.png", full_page=True)

    # The live monitor's loss plot holds every batch of the run (NaN gaps between steps).
    batches = [
        e
        for e in read_events(
            jupyter_lab.root / "quickstart-output" / "runs" / "half-v" / "events.jsonl"
        )
        if e["type"] == "batch_end"
    ]
    assert batches, "the run wrote no batch events"
    loss = page.evaluate(FIGURES_JS, LOSS_NAME)
    assert loss, "no loss plot in the page"
    assert max(sum(f["points"]) for f in loss) >= len(batches), loss
    # ... and its status line shows the run's end, not an intermediate state.
    assert page.get_by_text("finished (schedule complete)").count() >= 2  # monitor + print

    # A composer edit redraws the diagram: half-V → V.
    before = page.evaluate(FIGURES_JS, DIAGRAM_NAME)
    levels = schedule("half-V", 2).levels
    assert any(f["title"] == f"half-V cycle: {' '.join(map(str, levels))}" for f in before)
    expected = "V cycle: " + " ".join(map(str, schedule("V", 2).levels))
    assert not any(f["title"] == expected for f in before)
    page.get_by_role("button", name="V", exact=True).first.click()
    page.wait_for_function(
        f"() => ({FIGURES_JS})({DIAGRAM_NAME!r}).some((f) => f.title === {expected!r})",
        timeout=30_000,
    )
    after = [f for f in page.evaluate(FIGURES_JS, DIAGRAM_NAME) if f["title"] == expected]
    assert len(schedule("V", 2).steps) in after[0]["points"]  # one marker per step
    page.wait_for_timeout(500)
    page.screenshot(path=shots / "02-after-composer-edit.png", full_page=True)
    print(f"screenshots in {shots}")

    assert problems.failed_requests == [], problems.failed_requests
    assert problems.console_errors == [], problems.console_errors
