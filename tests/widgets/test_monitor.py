"""Live monitor: follows a real training run's events.jsonl while it trains."""

from __future__ import annotations

import json
import math
import threading

import pytest

from mgtoolkit.widgets import EventFollower, RunMonitor, request_stop
from mgtoolkit.widgets.monitor import LOSS_NAME, STOP_FILE


def tiny_config(store):
    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.train import CycleConfig, DataConfig, OptimConfig, TrainConfig

    return TrainConfig(
        data=DataConfig(store=str(store), val_samples=2),
        model=UNetConfig(dim=2, depth=1, base_filters=2, convs_per_block=1),
        cycle=CycleConfig(name="V", levels=2, epochs=1, patience=1, max_epochs=2),
        optim=OptimConfig(batch_size=2),
        device="cpu",
    )


@pytest.fixture(scope="module")
def followed_run(store2d, tmp_path_factory):
    """A real run trained in a thread while a monitor follows its run directory."""
    from mgtoolkit.train import read_events, train

    run_dir = tmp_path_factory.mktemp("runs") / "v2"
    config = tiny_config(store2d)
    monitor = RunMonitor().follow(run_dir)
    errors = []

    def work():
        try:
            train(config, run_dir, progress=False)
        except Exception as exc:  # reported by the test below
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    seen_while_running = 0
    while thread.is_alive():
        seen_while_running += monitor.update()
        thread.join(0.05)
    monitor.wait(timeout=30, poll_s=0.05)
    assert not errors, errors
    return monitor, read_events(run_dir / "events.jsonl"), config, seen_while_running


def test_monitor_holds_every_event_of_the_run(followed_run):
    monitor, events, config, seen_while_running = followed_run
    assert monitor.finished and monitor.error is None
    assert seen_while_running > 0  # events arrived while the run was still training
    assert [e["type"] for e in monitor.events] == [e["type"] for e in events]
    assert monitor.schedule == config.cycle.build()  # read from the run's config.toml


def test_loss_curves_per_level_and_step_boundaries(followed_run):
    monitor, events, _config, _ = followed_run
    batches = [e for e in events if e["type"] == "batch_end"]
    for level in {e["level"] for e in batches}:
        _xs, ys = monitor.losses[level]
        finite = [y for y in ys if not math.isnan(y)]
        assert finite == [e["loss"] for e in batches if e["level"] == level]
    # V over 2 levels trains level 1 twice: its two steps are separated by one gap.
    assert sum(math.isnan(y) for y in monitor.losses[1][1]) == 1
    starts = [(e["step"], e["level"]) for e in events if e["type"] == "step_start"]
    assert [(s, lv) for _, s, lv in monitor.boundaries] == starts
    assert len(monitor.validations) == sum(e["type"] == "validation" for e in events)
    assert monitor.samples_per_s == batches[-1]["samples_per_s"]


def test_plots_render_with_data(followed_run):
    import holoviews as hv

    monitor, _events, _, _ = followed_run
    fig = hv.render(monitor.loss_plot(), backend="bokeh")
    assert fig.name == LOSS_NAME
    assert fig.y_scale.__class__.__name__ == "LogScale"
    lines = [r for r in fig.renderers if type(getattr(r, "glyph", None)).__name__ == "Line"]
    n_points = sum(len(r.data_source.data["loss"]) for r in lines)
    assert n_points == sum(len(xs) for xs, _ in monitor.losses.values())
    colors = {r.glyph.line_color for r in lines}
    assert len(colors) == len(monitor.losses)  # one colour per level
    hv.render(monitor.validation_plot(), backend="bokeh")
    assert "samples/s" in monitor.summary()


def test_view_draws_the_diagram_once_and_moves_the_running_ring(followed_run):
    """Replaying the run's events into a displayed view: one diagram figure for the whole
    run, whose ring marks the running step (schedule position and level) at every step."""
    _, events, config, _ = followed_run
    schedule = config.cycle.build()
    m = RunMonitor()
    m.view().get_root()  # displayed: a bokeh document holds its models
    figures, rings = [m._diagram_slot.layout.objects[0].object], []
    for ev in events:
        m(ev)
        m.update()
        m._redraw()
        figure = m._diagram_slot.layout.objects[0].object
        if not any(f is figure for f in figures):
            figures.append(figure)
        if ev["type"] == "step_start":
            data = m._running.data_source.data
            rings.append((list(data["step"]), list(data["level"])))
    assert len(figures) == 2  # "waiting for run_start", then the run's diagram
    assert rings == [([k + 1], [lv]) for k, lv in enumerate(schedule.levels)]
    assert len(m._running.data_source.data["step"]) == 0  # run_end: no step runs


def test_listener_from_other_threads(followed_run):
    _, events, _, _ = followed_run
    m = RunMonitor()
    threads = [threading.Thread(target=lambda e=e: m(e)) for e in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.update() == len(events) and m.finished


def test_follower_keeps_a_partial_line(tmp_path):
    path = tmp_path / "events.jsonl"
    f = EventFollower(path)
    assert f.poll() == []  # no file yet
    line = json.dumps({"type": "run_start", "time": 0.0, "run": "r"})
    path.write_text(line[:10])
    assert f.poll() == []
    with open(path, "a") as fh:
        fh.write(line[10:] + "\n")
    assert f.poll() == [json.loads(line)]
    assert f.poll() == []


def test_error_event_and_timeout(tmp_path):
    m = RunMonitor()
    with pytest.raises(TimeoutError, match="did not finish"):
        m.wait(timeout=0.1, poll_s=0.02)
    m(
        {
            "type": "error",
            "time": 0.0,
            "run": "r",
            "message": "out of memory",
            "error_type": "RuntimeError",
        }
    )
    with pytest.raises(RuntimeError, match="out of memory"):
        m.wait(timeout=1)


def test_stop_requests(tmp_path):
    with pytest.raises(ValueError, match="no run to stop"):
        RunMonitor().stop()
    with pytest.raises(FileNotFoundError, match="no run directory"):
        request_stop(tmp_path / "missing")
    RunMonitor().follow(tmp_path).stop()
    assert (tmp_path / STOP_FILE).exists()


def test_a_dead_batch_job_is_reported(tmp_path):
    """A followed job that dies before its final event ends the wait with its reason."""
    import subprocess
    import sys

    job = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    m = RunMonitor().follow(tmp_path)
    with pytest.raises(RuntimeError, match="ended without a run_end event"):
        m.wait(timeout=30, poll_s=0.05, gone=lambda: job.poll() is not None)
    assert m.finished and job.returncode == 3


def test_dashboard_link_through_jupyter(monkeypatch):
    """In a Jupyter kernel every cluster's dashboard link goes through JupyterLab's proxy."""
    import dask
    from distributed import LocalCluster

    from mgtoolkit.widgets._view import dashboard_link_through_jupyter

    assert dashboard_link_through_jupyter({}) is None  # not in Jupyter: left alone
    env = {"JPY_PARENT_PID": "1", "JUPYTERHUB_SERVICE_PREFIX": "/user/ada/"}
    with dask.config.set(
        {"distributed.dashboard.link": dask.config.get("distributed.dashboard.link")}
    ):
        assert dashboard_link_through_jupyter(env) == "/user/ada/proxy/{port}/status"
        with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as cluster:
            port = cluster.scheduler.http_server.port
            assert cluster.dashboard_link == f"/user/ada/proxy/{port}/status"
        assert dashboard_link_through_jupyter({"JPY_PARENT_PID": "1"}) == "/proxy/{port}/status"
