"""The live training monitor: per-level loss curves, validation error, throughput, stop.

:class:`RunMonitor` consumes the trainer's event dicts (:mod:`mgtoolkit.train.events`) from any
number of sources — as a listener (``monitor(event)``, safe from any thread: it only enqueues),
from a launched run's handle (:meth:`RunMonitor.attach`), or by following a batch run's
``<run_dir>/events.jsonl`` (:meth:`RunMonitor.follow`). :meth:`RunMonitor.update` drains
everything on the calling (notebook) thread into plain lists; the panel view redraws from them on
a periodic callback of the idle kernel. Nothing in a notebook needs to wait for a run: while a
cell runs, the kernel handles no button click and runs no periodic callback, so a cell that
waits freezes the plots and the Stop button (:meth:`RunMonitor.wait` is for scripts).

The live view is built once from bokeh models; each redraw appends the new points to their
data sources and replaces text in place (no pane is replaced while a run trains).

The x axis of the curves is the *iteration*: the running count of training batches over the
whole run, so steps on different levels follow one another left to right.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import param

from mgtoolkit.rundir import STOP_FILE, RunDir, request_stop
from mgtoolkit.widgets._view import (
    LiveText,
    Slot,
    duration,
    holoviews,
    level_color,
    live_layout,
    live_update,
    named,
)

__all__ = ["STOP_FILE", "EventFollower", "RunMonitor", "request_stop"]

#: Bokeh figure names (the browser test looks them up).
LOSS_NAME = "mgtoolkit-loss-curves"
VALIDATION_NAME = "mgtoolkit-validation"
#: Levels the live loss plot has a curve for (the composer allows 1..12).
MAX_LEVELS = 12


class EventFollower:
    """Read the events appended to an ``events.jsonl`` since the last call (like ``tail -f``).

    A line still being written (no newline yet) is kept for the next call; the file may not
    exist yet (the run has not started).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict]:
        """The complete new events, oldest first."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" after a complete last line
        out = []
        for line in lines:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn line from a crashed writer
        return out


class RunMonitor(param.Parameterized):
    """Collects one run's events and draws them.

    Attributes (plain lists, updated by :meth:`update`)
    ----------------------------------------------------
    losses : dict level -> (iterations, losses)
        Batch losses per level (``batch_end`` events); a NaN separates the steps of one level
        so that the plot does not join them.
    boundaries : list of (iteration, step, level)
        Where each step started.
    validations : list of dict
        ``iteration`` plus the validation event's fields (``val_rel_l2``, ...).
    """

    status = param.String(default="waiting for the run to start")
    current_step = param.Integer(default=None, allow_None=True, doc="0-based running step.")
    samples_per_s = param.Number(default=None, allow_None=True)
    finished = param.Boolean(default=False, doc="run_end or error seen.")
    version = param.Integer(default=0, doc="Bumped whenever new events were processed.")

    def __init__(self, *, schedule=None, run_dir: str | Path | None = None, **params):
        super().__init__(**params)
        self._clear(schedule=schedule, run_dir=run_dir)

    def _clear(self, *, schedule, run_dir) -> None:
        self._finish_called = False
        self.generation = getattr(self, "generation", -1) + 1  # one per followed run
        self.schedule = schedule
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._queue: collections.deque[dict] = collections.deque()
        self._followers: list[EventFollower] = []
        self.handle = None
        self.dim = 2
        self.events: list[dict] = []
        self.losses: dict[int, tuple[list[int], list[float]]] = {}
        self.boundaries: list[tuple[int, int, int]] = []
        self.validations: list[dict] = []
        self.level_n: dict[int, int] = {}
        self.resolution: int | None = None  # finest cells per side, for the diagram's labels
        self.spatial: dict[int, int] = {}  # ranks per field on each level, for the labels
        self.stopped = False
        self._handle_seen = 0
        self.iteration = 0
        self.error: str | None = None
        self.steps_done: list[dict] = []  # step_end events
        self._progress: dict = {}  # the running step: epoch, batches, batch times

    def _finish_callbacks(self):
        return self.__dict__.setdefault("_on_finish", [])

    # ------------------------------------------------------------------ sources
    def __call__(self, event: dict) -> None:
        """Listener interface: enqueue ``event`` (any thread); :meth:`update` processes it."""
        self._queue.append(event)

    def follow(self, run_dir: str | Path) -> RunMonitor:
        """Follow the run writing ``<run_dir>/events.jsonl`` (e.g. a batch job); returns self."""
        self.run_dir = Path(run_dir)
        self._followers.append(EventFollower(RunDir(self.run_dir).events))
        self._restart_refresh()
        return self

    def on_finish(self, callback) -> RunMonitor:
        """Call ``callback(monitor)`` on the notebook thread once each run has ended (finished,
        stopped or failed) — e.g. to predict and compare without a cell that waits; returns
        self. Called from :meth:`update` (the view's periodic refresh)."""
        self._finish_callbacks().append(callback)
        return self

    def attach(self, handle, *, run_dir: str | Path | None = None) -> RunMonitor:
        """Receive the events a launched run streams to the notebook; returns self.

        ``handle`` is the :class:`mgtoolkit.launch.run.Run` that :meth:`CycleComposer.launch`
        (or :func:`~mgtoolkit.launch.run.train_on_cluster`) returns: its ``events`` list
        grows as rank 0 emits, ``status`` tells a lost or failed run, ``stop()`` stops it.
        ``run_dir`` (the run's directory) lets the monitor read the exact cycle from its
        ``config.toml``.
        """
        self.handle = handle
        self._handle_seen = 0
        run_dir = run_dir if run_dir is not None else getattr(handle, "run_dir", None)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._restart_refresh()
        return self

    def watch(self, composer) -> RunMonitor:
        """Attach automatically to every run the composer's launch button starts."""

        def on_launch(event):
            if event.new is not None:
                self.reset()
                # What the diagram needs is known now: it is drawn before the run starts,
                # while the kernel is not yet competing with the ranks for the CPU.
                self.schedule = composer.schedule()
                self.dim, self.resolution = composer.dim, composer.resolution
                self.spatial = composer.layout()
                self.attach(event.new, run_dir=composer.run_dir)

        composer.param.watch(on_launch, "handle")
        return self

    def reset(self) -> None:
        """Forget all events and sources (before following another run)."""
        self._clear(schedule=None, run_dir=None)
        self.param.update(
            status="waiting for the run to start",
            current_step=None,
            samples_per_s=None,
            finished=False,
            version=self.version + 1,
        )

    # ------------------------------------------------------------------ processing
    def update(self) -> int:
        """Process every pending event (call on the notebook thread); returns how many."""
        for follower in self._followers:
            self._queue.extend(follower.poll())
        if self.handle is not None:
            # Run.events is appended by the client's IO thread; read past what we have seen.
            new = self.handle.events[self._handle_seen :]
            self._handle_seen += len(new)
            self._queue.extend(new)
        count = 0
        while self._queue:
            self._ingest(self._queue.popleft())
            count += 1
        status = getattr(self.handle, "status", None)
        failure = getattr(self.handle, "failure", None)
        if failure is not None and self.error != failure:
            # The first rank that raised (any rank, not only rank 0 that emits events); a
            # peer's later error event (a broken collective) is a consequence, not the cause.
            self.finished, self.error = True, failure
            self.status = f"failed: {failure}"
            count += 1
        elif not self.finished and not self._queue and status in ("failed", "lost", "stopped"):
            # A dead worker or a crash can end a run without a final event.
            self.finished = True
            self.stopped = status == "stopped"
            self.status = f"run {status}"
            if status != "stopped":
                self.error = f"the run {status}"
            count += 1
        if count:
            self.version += 1
        if self.finished and not getattr(self, "_finish_called", False):
            self._finish_called = True
            for callback in self._finish_callbacks():
                try:
                    callback(self)
                except Exception as exc:  # shown, not raised into the periodic refresh
                    import warnings

                    self.status += f" (on_finish {callback!r} failed: {exc!r})"
                    warnings.warn(f"on_finish callback {callback!r} failed: {exc!r}", stacklevel=2)
        return count

    def _ingest(self, ev: dict) -> None:
        self.events.append(ev)
        kind = ev.get("type")
        if kind == "run_start":
            self.dim = int(ev.get("dim", self.dim))
            if ev.get("n"):
                self.resolution = int(ev["n"])
            self._schedule_from(ev)
            self.status = f"run {ev.get('run')} started: {ev.get('steps')} steps"
        elif kind == "step_start":
            step, level = int(ev["step"]), int(ev["level"])
            self.current_step = step
            if "n" in ev:
                self.level_n[level] = int(ev["n"])
            self.boundaries.append((self.iteration, step, level))
            self._progress = {"step": step, "level": level, "times": []}
            if level in self.losses and self.losses[level][0]:
                xs, ys = self.losses[level]  # a gap: the level's earlier step is not joined
                xs.append(self.iteration + 0.5)
                ys.append(float("nan"))
            self.status = f"step {step + 1}: level {level} ({ev.get('rule', '')})"
        elif kind == "epoch_start":
            self._progress.update(epoch=int(ev["epoch"]), batches=ev.get("batches"))
        elif kind == "step_end":
            self.steps_done.append(ev)
            self._progress = {}
        elif kind == "batch_end":
            self._progress.update(epoch=int(ev["epoch"]), batch=int(ev["batch"]))
            self._progress.setdefault("times", []).append(float(ev.get("time", 0.0)))
            self.iteration += 1
            xs, ys = self.losses.setdefault(int(ev["level"]), ([], []))
            xs.append(self.iteration)
            ys.append(float(ev["loss"]))
            if ev.get("samples_per_s") is not None:
                self.samples_per_s = float(ev["samples_per_s"])
        elif kind == "validation":
            self.validations.append({"iteration": self.iteration, **ev})
        elif kind == "run_end":
            self.finished = True
            self.stopped = ev.get("reason") == "stopped"  # the trainer honoured a stop request
            self.current_step = None
            wall = f"{ev.get('wall_s', 0):.1f} s training"
            self.status = (
                f"stopped on request after {wall} (resume it from its last checkpoint)"
                if self.stopped
                else f"finished ({ev.get('reason')}) after {wall}"
            )
        elif kind == "error" and ev.get("error_type") == "RunStopped":
            # A stop that had to interrupt the ranks (no batch boundary in time): not a failure.
            self.finished = self.stopped = True
            self.status = "stopped on request (the last checkpoint can be resumed)"
        elif kind == "error":
            # Only rank 0 emits events; an attached handle names the rank that failed first.
            self.finished = True
            self.error = f"rank 0: {ev.get('message')} ({ev.get('error_type')})"
            self.status = f"failed: {self.error}"

    def _schedule_from(self, ev: dict) -> None:
        if self.schedule is not None:
            return
        config = RunDir(self.run_dir).config if self.run_dir is not None else None
        if config is not None and config.exists():
            from mgtoolkit.train import load_config

            loaded = load_config(config)
            self.schedule = loaded.cycle.build()
            self.spatial = {lv: loaded.parallel.spatial_at(lv) for lv in self.schedule.levels}
        elif ev.get("levels"):
            from mgtoolkit.cycles import Schedule

            self.schedule = Schedule.from_levels(list(ev["levels"]), name=str(ev.get("run")))

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the run to stop.

        A launched run (:meth:`attach`) stops through its handle
        (:meth:`mgtoolkit.launch.Run.stop`: at the next batch boundary, with a checkpoint; the
        run ends "stopped"). A followed batch run gets ``<run_dir>/STOP``
        (:func:`request_stop`), which the trainer honours in the same way.
        """
        if self.handle is not None and hasattr(self.handle, "stop"):
            self.handle.stop()
        elif self.run_dir is not None:
            request_stop(self.run_dir)
        else:
            raise ValueError("no run to stop: attach() a launched run or follow() a run directory")
        self.status = "stop requested"

    def wait(self, *, timeout: float | None = None, poll_s: float = 0.5, gone=None) -> RunMonitor:
        """Block until the run ends, then draw its final state; returns self.

        For live curves do not block: launch the run and let the cell finish — the view
        refreshes every second while the kernel is idle.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most.
        poll_s : float
            Seconds between polls.
        gone : callable, optional
            For a followed batch run: returns True once the job has ended (e.g.
            ``lambda: proc.poll() is not None``), so that a job that died before writing its
            final event is reported instead of waited for.

        Raises
        ------
        TimeoutError
            The run did not end within ``timeout`` seconds.
        Exception
            The run failed: the handle's own exception when attached to a launched run
            (e.g. ``WorkerLost``), else a RuntimeError with the run's error message.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # No redraw while the cell blocks: each redraw of a busy kernel becomes another
            # output of the running cell, and JupyterLab stops rendering them after 50.
            # The view draws the final state below; live curves stream while the kernel idles.
            self.update()
            if self.finished:
                break
            if gone is not None and gone():
                self.update()  # the job's last lines
                if not self.finished:
                    self.finished = True
                    self.error = "the job ended without a run_end event (see its log)"
                    self.status = f"failed: {self.error}"
                    self.version += 1
                    self._redraw()
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the run did not finish within {timeout:g} s: {self.status}")
            time.sleep(poll_s)
        self._redraw()
        while getattr(self.handle, "status", None) == "running":
            # The final event can arrive before the ranks' tasks have returned.
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the run's tasks did not end within {timeout:g} s")
            time.sleep(min(poll_s, 0.1))
        if self.error is not None:
            if self.handle is not None:
                self.handle.result()  # re-raises the run's own exception
            raise RuntimeError(f"the training run failed: {self.error}")
        return self

    def compare(self, run_dirs, *, x: str = "wall"):
        """This run overlaid with other runs (their run directories): per-level epoch loss and
        validation error against wall time or finest-level epochs
        (:class:`~mgtoolkit.widgets.compare.RunComparison`; ``.view()`` shows it)."""
        from mgtoolkit.widgets.compare import RunComparison

        dirs = [Path(p) for p in ([run_dirs] if isinstance(run_dirs, str | Path) else run_dirs)]
        if self.run_dir is not None and self.run_dir not in dirs:
            dirs.insert(0, self.run_dir)
        return RunComparison(dirs, x=x)

    # ------------------------------------------------------------------ plots
    def _label(self, level: int) -> str:
        n = self.level_n.get(level)
        return f"level {level}" + (f" (n={n})" if n else "")

    def loss_plot(self, *, width: int = 620, height: int = 320):
        """Batch loss per level (one colour per level, log scale), step starts dashed."""
        hv = holoviews()

        curves = {
            self._label(lv): hv.Curve((xs, ys), "iteration", "loss").opts(
                color=level_color(lv), line_width=1.5, tools=["hover"]
            )
            for lv, (xs, ys) in sorted(self.losses.items())
        }
        overlay = (
            hv.NdOverlay(curves, kdims="level")
            if curves
            else hv.NdOverlay(
                {"no data yet": hv.Curve(([], []), "iteration", "loss")}, kdims="level"
            )
        )
        lines = [
            hv.VLine(x).opts(color="#777777", line_dash="dashed", line_width=1)
            for x, _, _ in self.boundaries
        ]
        return hv.Overlay([overlay, *lines]).opts(
            width=width,
            height=height,
            logy=True,
            title="training loss J per batch (dashed: step starts)",
            legend_position="right",
            show_grid=True,
            hooks=[named(LOSS_NAME)],
        )

    def validation_plot(self, *, width: int = 620, height: int = 240):
        """Finest-level validation error vs FEM (relative L2, energy gap), log scale."""
        hv = holoviews()

        layers = []
        metrics = (
            ("val_rel_l2", "rel. L2 error", "#000000"),
            ("val_energy_gap", "energy gap", "#882255"),
        )
        for key, label, color in metrics:
            pts = [(v["iteration"], v[key]) for v in self.validations if v.get(key) is not None]
            pts = [(x, y) for x, y in pts if y > 0]  # log scale
            if pts:
                layers.append(
                    hv.Curve(pts, "iteration", "error", label=label).opts(
                        color=color, tools=["hover"]
                    )
                )
                layers.append(
                    hv.Scatter(pts, "iteration", "error", label=label).opts(color=color, size=5)
                )
        if not layers:
            layers.append(hv.Curve(([], []), "iteration", "error", label="no validation yet"))
        return hv.Overlay(layers).opts(
            width=width,
            height=height,
            logy=True,
            title="validation on the finest level vs FEM",
            legend_position="top_right",
            show_grid=True,
            hooks=[named(VALIDATION_NAME)],
        )

    def summary(self) -> str:
        """One status line: step, samples/s, last validation."""
        parts = [self.status]
        if self.samples_per_s is not None:
            parts.append(f"{self.samples_per_s:.1f} samples/s")
        if self.validations:
            v = self.validations[-1]
            if v.get("val_rel_l2") is not None:
                parts.append(f"val rel. L2 {v['val_rel_l2']:.3g}")
            if v.get("val_energy_gap") is not None:
                parts.append(f"energy gap {v['val_energy_gap']:.3g}")
        return " · ".join(parts)

    def progress_text(self) -> str:
        """One line per step: the finished steps (epochs, time) and the running one (epoch,
        batch, seconds per batch, time left in the step — "≤" for early-stopping steps, whose
        epoch count is a cap)."""
        lines = []
        total = len(self.schedule.steps) if self.schedule is not None else None
        of = f"/{total}" if total else ""
        for ev in self.steps_done:
            lines.append(
                f"step {ev['step'] + 1}{of} · level {ev['level']} ({self._size(ev['level'])}) · "
                f"done: {ev.get('epochs')} epochs in {duration(ev.get('wall_s') or 0.0)}"
            )
        p = self._progress
        if p.get("step") is not None:
            k, level = p["step"], p["level"]
            parts = [f"step {k + 1}{of} · level {level} ({self._size(level)})"]
            rule = self.schedule.steps[k].rule if total and k < total else None
            early = rule is not None and not hasattr(rule, "epochs")
            cap = rule.max_epochs if rule is not None else None
            epoch, batches, batch = p.get("epoch"), p.get("batches"), p.get("batch")
            if epoch is not None:
                parts.append(
                    f"epoch {epoch + 1}" + (f"/{'≤' if early else ''}{cap}" if cap else "")
                )
            if batch is not None and batches:
                parts.append(f"batch {batch + 1}/{batches}")
            times = p.get("times", [])
            if self.finished:  # stopped or failed within the step
                parts.append("stopped" if self.stopped else "ended")
            elif len(times) >= 2:
                per_batch = (times[-1] - times[0]) / (len(times) - 1)
                parts.append(f"{per_batch:.2g} s/batch")
                if cap and batches and epoch is not None and batch is not None:
                    left = (cap - epoch - 1) * batches + (batches - batch - 1)
                    eta = duration(max(left, 0) * per_batch)
                    parts.append(f"step ETA {'≤ ' if early else ''}{eta}")
            lines.append(" · ".join(parts))
        return "\n".join(lines) if lines else "no step has started yet"

    def _size(self, level: int) -> str:
        n = self.level_n.get(level)
        return f"{n}{'²' if self.dim == 2 else '³'}" if n else "?"

    def view(self, *, period_ms: int = 500):
        """The monitor as a panel layout, refreshed every ``period_ms`` while the kernel idles.

        The refresh stops when the run ends and restarts when another run attaches
        (:meth:`attach`, :meth:`watch`, :meth:`follow`).
        """
        import panel as pn

        self._live = _LiveFigures()
        self._summary_text = LiveText(self.summary())
        self._progress_text = LiveText(self.progress_text(), styles={"color": "#555555"})
        self._diagram_slot = Slot()
        self._show_diagram()
        self._drawn = None
        stop = pn.widgets.Button(label="Stop run", button_type="danger", width=120)

        def on_stop(_):
            try:
                self.stop()
            except (ValueError, FileNotFoundError) as exc:
                self.status = str(exc)
            self._summary_text.set(self.summary())

        stop.on_click(on_stop)
        self._layout = live_layout(
            pn.Row(stop, self._summary_text.pane, sizing_mode="stretch_width"),
            self._progress_text.pane,
            pn.Row(
                pn.pane.Bokeh(self._live.loss, sizing_mode="stretch_width", min_width=360),
                self._diagram_slot.layout,
                sizing_mode="stretch_width",
            ),
            pn.pane.Bokeh(self._live.validation, sizing_mode="stretch_width", min_width=360),
            sizing_mode="stretch_width",
        )
        self._redraw()

        def tick():
            self.update()
            self._redraw()
            if self.finished and self._layout.drawn and self._callback is not None:
                self._callback.stop()  # the final state has been drawn

        self._callback = pn.state.add_periodic_callback(tick, period=period_ms, start=True)
        return self._layout

    def _restart_refresh(self) -> None:
        callback = getattr(self, "_callback", None)
        if callback is not None and not callback.running:
            callback.start()

    def _diagram_inputs(self) -> tuple:
        """What the drawn diagram depends on (the running step moves in place)."""
        return id(self.schedule), self.resolution, self.dim, tuple(sorted(self.spatial.items()))

    def _show_diagram(self) -> None:
        """Draw the cycle diagram (a holoviews render: once per run, not once per step)."""
        self._diagram_key = self._diagram_inputs()
        import panel as pn

        from mgtoolkit.widgets.composer import RUNNING_NAME, cycle_diagram

        hv = holoviews()
        if self.schedule is None:
            diagram = hv.Curve([]).opts(width=420, height=260, title="cycle: waiting for run_start")
        else:
            diagram = cycle_diagram(
                self.schedule,
                current=self.current_step,
                resolution=self.resolution,
                dim=self.dim,
                spatial=self.spatial,
                width=420,
            )
        figure = hv.render(diagram, backend="bokeh")
        self._running = figure.select_one({"name": RUNNING_NAME})
        self._running_step = self.current_step
        self._diagram_slot.show(pn.pane.Bokeh(figure))

    def _mark_running(self) -> None:
        """Move the running step's ring in place (the figure's data, not a new figure)."""
        ring = self._running
        if ring is None or self._running_step == self.current_step:
            return
        self._running_step = step = self.current_step
        steps = [] if step is None or step >= len(self.schedule.levels) else [step]
        with live_update(self._layout, ring.data_source):
            ring.data_source.data = {
                ring.glyph.x: [i + 1 for i in steps],
                ring.glyph.y: [self.schedule.levels[i] for i in steps],
            }

    def _redraw(self) -> None:
        live = getattr(self, "_live", None)
        if live is None or self._drawn == self.version or not self._layout.drawn:
            return  # no view, nothing new, or a page still drawing it (see live_layout)
        self._drawn = self.version
        with live_update(self._layout, live.loss):
            live.show(self)
        if self._diagram_key != self._diagram_inputs():
            self._show_diagram()  # a new run (or its schedule learnt from its events)
        self._mark_running()
        self._summary_text.set(self.summary())
        self._progress_text.set(self.progress_text())


class _LiveFigures:
    """The monitor's loss and validation figures, built once; redraws only append data.

    One line per possible level (hidden from the legend until the level has points) and one
    vertical span per step start, so that the structure never changes while a run trains.
    """

    def __init__(self):
        from bokeh.core.properties import value
        from bokeh.models import ColumnDataSource, HoverTool, Legend, LegendItem
        from bokeh.plotting import figure

        tools = "pan,wheel_zoom,box_zoom,reset,save"
        self.loss = figure(
            name=LOSS_NAME,
            title="training loss J per batch (dashed: step starts)",
            y_axis_type="log",
            x_axis_label="iteration",
            y_axis_label="loss",
            height=320,
            sizing_mode="stretch_width",
            tools=tools,
        )
        self.level_sources, items = {}, []
        for lv in range(1, MAX_LEVELS + 1):
            src = ColumnDataSource({"iteration": [], "loss": []})
            r = self.loss.line("iteration", "loss", source=src, color=level_color(lv), width=1.5)
            self.level_sources[lv] = src
            label = value(f"level {lv}")
            items.append(LegendItem(label=label, renderers=[r], visible=False))
        self.legend_items = dict(zip(range(1, MAX_LEVELS + 1), items, strict=True))
        self.loss.add_layout(Legend(items=items, location="top_right"), "right")
        self.bounds = ColumnDataSource({"x": []})
        self.loss.vspan(x="x", source=self.bounds, line_color="#777777", line_dash="dashed")
        self.loss.add_tools(HoverTool(tooltips=[("iteration", "@iteration"), ("J", "@loss")]))

        self.validation = figure(
            name=VALIDATION_NAME,
            title="validation on the finest level vs FEM",
            y_axis_type="log",
            x_axis_label="iteration",
            y_axis_label="error",
            height=240,
            sizing_mode="stretch_width",
            tools=tools,
        )
        self.metric_sources = {}
        for key, label, color in (
            ("val_rel_l2", "rel. L2 error", "#000000"),
            ("val_energy_gap", "energy gap", "#882255"),
        ):
            src = ColumnDataSource({"iteration": [], "error": []})
            self.validation.line("iteration", "error", source=src, color=color, legend_label=label)
            self.validation.scatter(
                "iteration", "error", source=src, color=color, size=5, legend_label=label
            )
            self.metric_sources[key] = src
        self.validation.legend.location = "top_right"
        self.validation.add_tools(HoverTool(tooltips=[("iteration", "@iteration"), ("", "@error")]))
        self._sent: dict = {}

    def _append(self, key, source, columns: dict[str, list]) -> None:
        """Replace the source's rows when there are more (or another run's).

        Whole columns, not ``source.stream``: a few thousand points a second are cheap, and
        the page then always holds exactly the monitor's lists.
        """
        n = len(next(iter(columns.values())))
        if self._sent.get(key) != n:
            source.data = {c: list(v) for c, v in columns.items()}
            self._sent[key] = n

    def show(self, monitor: RunMonitor) -> None:
        from bokeh.core.properties import value

        if self._sent.get("generation") != monitor.generation:
            self._sent = {"generation": monitor.generation}  # another run: start over
        for lv, src in self.level_sources.items():
            xs, ys = monitor.losses.get(lv, ([], []))
            self._append(("level", lv), src, {"iteration": xs, "loss": ys})
            item = self.legend_items[lv]
            visible = bool(xs)
            label = monitor._label(lv)
            if item.visible != visible:
                item.visible = visible
            if self._sent.get(("label", lv)) != label:
                self._sent["label", lv] = label
                item.label = value(label)  # a plain string would name a data column
        self._append("bounds", self.bounds, {"x": [x for x, _, _ in monitor.boundaries]})
        for key, src in self.metric_sources.items():
            pts = [(v["iteration"], v[key]) for v in monitor.validations if v.get(key)]
            pts = [(x, y) for x, y in pts if y > 0]  # log scale
            self._append(key, src, {"iteration": [x for x, _ in pts], "error": [y for _, y in pts]})
