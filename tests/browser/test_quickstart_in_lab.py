"""Notebook 01 in a real browser, *while its run trains*: JupyterLab + headless Chromium.

This test also *executes* notebook 01 (at CI size, MGTOOLKIT_SMALL=1); 02–04 run in
test_notebooks_in_lab.py. Its run is made endless (patience and epoch cap 10⁶, injected after
the parameters cell, papermill style) so that only the Stop button ends it.
What it asserts is what the user sees in the page, read from the Bokeh models and the text:

- every cell completes while the run is still training (no cell waits for it);
- the loss plot's first points arrive within 2 s of the first batch event, and its data grows
  between two moments ≥ 3 s apart, both before the run has ended;
- Stop in the page ends the run at its next batch with a checkpoint, and the comparison with
  FEM appears (``monitor.on_finish``);
- Launch in the page starts a second run directory, and the monitor follows it;
- rank 1 of 2 raising after its first batch shows ``rank 1: <message>`` and *failed* in the
  composer and the monitor within 10 s;
- the dask dashboard link in the page answers 200 through JupyterLab's proxy;
- a composer edit redraws the diagram;
- saved, closed and reopened, the notebook shows the same text outputs and draws its figures;
- no console error, no failed request, no request to a host other than this machine.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nbformat
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

from mgtoolkit.cycles import schedule
from mgtoolkit.train import read_events
from mgtoolkit.widgets.composer import DIAGRAM_NAME
from mgtoolkit.widgets.monitor import LOSS_NAME

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "01_quickstart.ipynb"
FAULTS = Path(__file__).parents[1] / "faults.py"
#: Injected after the parameters cell: a run that only the Stop button ends.
ENDLESS = (
    "PATIENCE = 10**6  # injected by the browser test: only Stop ends the run\nMAX_EPOCHS = 10**6"
)
FAULT_MESSAGE = "injected failure after the first batch"  # tests/faults.py

#: The live loss plot's (iteration, loss) pairs with a finite loss, per line; null without a plot.
LOSS_DATA_JS = """
(name) => {
  const views = Object.values((window.Bokeh && window.Bokeh.index) || {});
  const docs = new Set(views.map((v) => v.model.document).filter((d) => d));
  let lines = null;
  for (const doc of docs) {
    for (const m of doc.all_models) {
      if (m.name !== name) continue;
      lines = lines || [];
      for (const r of m.renderers || []) {
        const src = r.data_source;
        if (!src || !src.data) continue;
        const data = src.data instanceof Map ? Object.fromEntries(src.data) : src.data;
        if (!data.loss) continue;
        const xs = Array.from(data.iteration), ys = Array.from(data.loss);
        const pts = xs.map((x, i) => [x, ys[i]]).filter((p) => Number.isFinite(p[1]));
        if (pts.length) lines.push(pts);
      }
    }
  }
  return lines;
}
"""

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


def events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    return read_events(path) if path.exists() else []


def loss_points(page) -> int:
    """Finite points of the live loss plot in the page (-1: no plot)."""
    lines = page.evaluate(LOSS_DATA_JS, LOSS_NAME)
    return -1 if lines is None else sum(len(line) for line in lines)


def texts(page, text: str) -> int:
    """How many elements show ``text`` (Playwright's text search pierces shadow roots)."""
    return page.get_by_text(text, exact=False).count()


def endless_notebook(dest: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(ENDLESS))
    nbformat.write(nb, dest)


#: The composer's and monitor's status lines in the page (for a failure's message).
STATUS_JS = """
() => document.body.innerText.split('\\n')
  .filter((l) => /half-v|launch|running|failed|stopped/i.test(l)).slice(-12)
"""


def launch_in_page(page, done, *, timeout: float, what: str, shot: Path) -> None:
    """Click Launch on cluster once the kernel is idle (what it was doing is drawn), and wait
    for ``done``; on failure say what the page shows."""
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
    page.get_by_role("button", name="Launch on cluster").click()
    try:
        wait_until(done, timeout=timeout, what=what)
    except AssertionError as exc:
        page.screenshot(path=shot, full_page=True)
        raise AssertionError(f"{exc}; the page shows: {page.evaluate(STATUS_JS)}") from None


def test_quickstart_is_live_in_jupyterlab(jupyter_lab, browser_page, tmp_path):
    page, problems = browser_page
    endless_notebook(jupyter_lab.root / NOTEBOOK.name)
    shutil.copy(FAULTS, jupyter_lab.root / FAULTS.name)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    runs = jupyter_lab.root / "quickstart-output" / "runs"
    first, second, third = runs / "half-v", runs / "half-v-2", runs / "half-v-3"
    timings = {}

    page.goto(f"{jupyter_lab.url}/lab/tree/{NOTEBOOK.name}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    t0 = time.monotonic()
    run_all_cells(page, timeout=300)
    timings["run all cells"] = time.monotonic() - t0
    # The cluster's dashboard opens through JupyterLab's proxy (the Client's link in the page).
    link = page.locator("a[href*='/proxy/'][href$='/status']").first.get_attribute("href")
    assert link.startswith("/proxy/"), link
    assert page.request.get(jupyter_lab.url + link).status == 200
    # No cell waited for the run: it is still training (it cannot end on its own).
    assert not any(e["type"] in ("run_end", "error") for e in events(first)), events(first)

    # The first points reach the page within 2 s of the first batch.
    seen: dict[str, float] = {}

    def first_points():
        now = time.monotonic()
        if "batch" not in seen and any(e["type"] == "batch_end" for e in events(first)):
            seen["batch"] = now
        if "page" not in seen and loss_points(page) > 0:
            seen["page"] = now
        return len(seen) == 2

    wait_until(first_points, timeout=120, what="first batch and first points in the page")
    timings["first points after first batch"] = seen["page"] - seen["batch"]
    assert seen["page"] - seen["batch"] <= 2.0, seen

    # The loss plot grows while the run trains: two reads ≥ 3 s apart, both before its end.
    n1, t1 = loss_points(page), time.monotonic()
    page.wait_for_timeout(3200)
    n2 = loss_points(page)
    assert time.monotonic() - t1 >= 3.0
    assert not any(e["type"] == "run_end" for e in events(first))  # read after the second look
    assert n2 > n1 > 0, (n1, n2)
    assert texts(page, "step 1/2 · level 2 (8²) · epoch") >= 1  # the progress line
    assert texts(page, "step ETA ≤") >= 1
    page.screenshot(path=shots / "01-training.png", full_page=True)

    # Stop in the page: the run ends at its next batch, with a checkpoint.
    page.get_by_role("button", name="Stop run").click()
    t_stop = time.monotonic()
    end = wait_until(
        lambda: [e for e in events(first) if e["type"] == "run_end"], timeout=30, what="run_end"
    )
    timings["stop → run_end"] = time.monotonic() - t_stop
    assert end[0]["reason"] == "stopped"
    assert (first / "checkpoints" / "latest.pt").exists()
    kinds = [e["type"] for e in events(first)]
    assert kinds.index("checkpoint", kinds.index("batch_end")) < kinds.index("run_end")
    wait_until(lambda: texts(page, "stopped on request") >= 1, timeout=10, what="stopped")
    # The composer's cost is also in time, from the run's own batches (all on level 2).
    assert texts(page, "per finest-level epoch, extrapolated from level 2 of the run") >= 1
    # The page holds every batch of the run, once, in order.
    losses = [e["loss"] for e in events(first) if e["type"] == "batch_end"]
    lines = page.evaluate(LOSS_DATA_JS, LOSS_NAME)
    assert len(lines) == 1 and [y for _, y in lines[0]] == losses  # level 2 only
    assert [x for x, _ in lines[0]] == list(range(1, len(losses) + 1))
    # The comparison with FEM appears once the run has ended (no cell waited for it).
    wait_until(
        lambda: texts(page, "mean relative L2 error") >= 1, timeout=90, what="the comparison"
    )
    page.screenshot(path=shots / "02-stopped-and-compared.png", full_page=True)

    # Launch again from the composer: a new run directory, and the monitor follows it.
    launch_in_page(
        page,
        lambda: texts(page, "launched new run half-v-2") >= 1,
        timeout=30,
        what="launch",
        shot=shots / "failed-launch-2.png",
    )
    wait_until(second.is_dir, timeout=30, what="the second run's directory")
    batches = wait_until(
        lambda: sum(e["type"] == "batch_end" for e in events(second)) >= 2,
        timeout=90,
        what="second run's batches",
    )
    del batches
    wait_until(lambda: loss_points(page) > 0, timeout=10, what="points of the second run")
    points = loss_points(page)
    assert points <= sum(e["type"] == "batch_end" for e in events(second)) + 1  # not run 1's
    wait_until(lambda: loss_points(page) > points, timeout=10, what="the second run's growth")
    page.get_by_role("button", name="Stop run").click()
    wait_until(
        lambda: any(e["type"] == "run_end" for e in events(second)), timeout=30, what="2nd stop"
    )
    page.screenshot(path=shots / "03-second-run.png", full_page=True)

    # Rank 1 of 2 raises after its first batch: both widgets name it within 10 s.
    marker = tmp_path / "fault-raised.txt"
    idle = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
    page.wait_for_selector(idle, timeout=90_000)  # the comparison of the second run is drawn
    cells = page.locator(".jp-NotebookPanel .jp-Cell")
    n_cells = cells.count()
    cells.last.locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # a new cell below (command mode)
    wait_until(lambda: cells.count() == n_cells + 1, timeout=10, what="a new cell")
    page.keyboard.press("Enter")  # edit it
    page.keyboard.insert_text(
        f"import faults; faults.fail_rank_after_first_batch(client, rank=1, marker={str(marker)!r})"
    )
    page.keyboard.press("Control+Enter")  # run in place (Shift+Enter adds a cell below)
    wait_until(lambda: page.evaluate(PROGRESS_JS)["done"], timeout=30, what="the fault cell to run")
    launch_in_page(
        page, marker.exists, timeout=120, what="rank 1 to raise", shot=shots / "failed-launch-3.png"
    )
    raised = float(marker.read_text())
    monitor_text = f"failed: rank 1: {FAULT_MESSAGE}"
    composer_text = f"half-v-3: failed — rank 1: {FAULT_MESSAGE}"
    wait_until(
        lambda: texts(page, monitor_text) >= 1 and texts(page, composer_text) >= 1,
        timeout=30,
        what="the failure in the monitor and the composer",
    )
    timings["rank 1 raised → shown"] = time.time() - raised
    assert time.time() - raised <= 10.0, timings
    assert third.is_dir()
    page.screenshot(path=shots / "04-rank-1-failed.png", full_page=True)

    # A composer edit redraws the diagram: half-V → V.
    before = page.evaluate(FIGURES_JS, DIAGRAM_NAME)
    levels = schedule("half-V", 2).levels
    assert any(f["title"] == f"half-V cycle: {' '.join(map(str, levels))}" for f in before)
    expected = "V cycle: " + " ".join(map(str, schedule("V", 2).levels))
    page.get_by_role("button", name="V", exact=True).first.click()
    page.wait_for_function(
        f"() => ({FIGURES_JS})({DIAGRAM_NAME!r}).some((f) => f.title === {expected!r})",
        timeout=30_000,
    )
    after = [f for f in page.evaluate(FIGURES_JS, DIAGRAM_NAME) if f["title"] == expected]
    assert len(schedule("V", 2).steps) in after[0]["points"]  # one marker per step
    page.wait_for_timeout(500)
    page.screenshot(path=shots / "05-after-composer-edit.png", full_page=True)

    # Saved, closed and reopened the next day: the text outputs and the figures as saved.
    quiet = Quiet(page)
    save_and_wait(page, jupyter_lab.root / NOTEBOOK.name)
    texts_run = page.evaluate(OUTPUT_TEXTS_JS)
    close_and_shut_down(page, jupyter_lab, NOTEBOOK.name, quiet)
    open_notebook(page, jupyter_lab, NOTEBOOK.name)
    page.wait_for_timeout(2000)
    page.screenshot(path=shots / "06-reopened.png", full_page=True)
    reopened = figures(page)
    print("reopened figures:", reopened)
    assert reopened and all(drawn for _, _, drawn in reopened), reopened
    assert page.evaluate(OUTPUT_TEXTS_JS) == texts_run
    assert page.evaluate(PROGRESS_JS)["error"] is None
    print(f"screenshots in {shots}; timings (s): {json.dumps(timings)}")

    assert problems.failed_requests == [], problems.failed_requests
    assert problems.external_requests == [], problems.external_requests
    assert problems.console_errors == [], problems.console_errors
