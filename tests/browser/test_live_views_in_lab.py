"""Live views that change on their own, displayed by "Run All" in JupyterLab (headless Chromium).

Six views, each changing every 20 ms from a periodic callback from the moment it is displayed —
its text, the rows of a figure, and every fifth change a *new* figure (new models) — the way the
run monitor changes while a run trains. Without waiting for the page
(:func:`mgtoolkit.widgets._view.live_layout`), panel's comm loses or reorders such changes while
the kernel is busy with the following cells and while the page builds the output: the page
logs ``reference … isn't known`` or ``s is not iterable`` and stops following. Asserted on
what the page holds after the changes stop: each view's last text and last figure with all
its rows, and no console error.
"""

from __future__ import annotations

import nbformat
from labpage import FIGURES_JS, run_all_cells, wait_until

VIEWS = 6
CHANGES = 60  # per view; a new figure every fifth change

SETUP = f"""
import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

from mgtoolkit.widgets import extension
from mgtoolkit.widgets._view import LiveText, Slot, live_layout, live_update

extension()


def live_view(name):
    text, slot = LiveText("0 changes"), Slot()
    layout = live_layout(text.pane, slot.layout)
    state = {{"changes": 0}}

    def change():
        if not layout.drawn or state["changes"] == {CHANGES}:
            return
        state["changes"] = k = state["changes"] + 1
        if k % 5 == 1:  # new models
            fig = figure(title=f"{{name}} figure {{k // 5}}", width=260, height=160)
            state["source"] = ColumnDataSource({{"x": [], "y": []}})
            fig.line("x", "y", source=state["source"])
            slot.show(pn.pane.Bokeh(fig))
        else:  # new rows in the figure the page has
            source = state["source"]
            with live_update(layout, source):
                source.stream({{"x": [float(k)], "y": [float(k % 7)]}})
        text.set(f"{{k}} changes")

    pn.state.add_periodic_callback(change, period=20)
    return layout
"""

TEXTS_JS = """
() => {
  const out = [];
  for (const doc of (window.Bokeh && window.Bokeh.documents) || []) {
    for (const model of doc.all_models) {
      if (model.type === "Div" && /changes$/.test(model.text)) out.push(model.text);
    }
  }
  return out;
}
"""


def test_live_views_reach_the_page_whole(jupyter_lab, browser_page):
    page, problems = browser_page
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP)]
    nb.cells += [nbformat.v4.new_code_cell(f"live_view('view {i}')") for i in range(VIEWS)]
    nbformat.write(nb, jupyter_lab.root / "live.ipynb")

    page.goto(f"{jupyter_lab.url}/lab/tree/live.ipynb")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    run_all_cells(page, timeout=120)

    done = [f"{CHANGES} changes"] * VIEWS
    wait_until(lambda: page.evaluate(TEXTS_JS) == done, timeout=60, what="every view's last text")
    last = (CHANGES - 1) // 5  # the last figure, with the rows streamed after it
    rows = CHANGES - (5 * last + 1)
    shown = {f["title"]: f["points"] for f in page.evaluate(FIGURES_JS)}
    assert shown == {f"view {i} figure {last}": [rows] for i in range(VIEWS)}, shown
    assert problems.console_errors == [], problems.console_errors
    assert problems.failed_requests == [] and problems.external_requests == []
