"""Cycle composer: state → the same Schedule as mgtoolkit.cycles; diagram; launch errors."""

from __future__ import annotations

import holoviews as hv
import pytest

from mgtoolkit.cycles import CYCLE_NAMES, EarlyStopping, FixedEpochs, Schedule, schedule
from mgtoolkit.widgets import CycleComposer, check_cluster, cycle_diagram, diagram_data
from mgtoolkit.widgets.composer import DIAGRAM_NAME, parse_layouts, parse_sequence

RULES = dict(epochs=3, patience=4, min_rel_improvement=0.01, max_epochs=17)


@pytest.mark.parametrize("name", CYCLE_NAMES)
@pytest.mark.parametrize("levels", [1, 2, 4])
def test_named_cycles_equal_the_api(name, levels):
    c = CycleComposer(cycle=name, levels=levels, **RULES)
    assert c.schedule() == schedule(name, levels, **RULES)


def test_custom_sequence_and_step_rules_equal_the_api():
    c = CycleComposer(levels=3, cycle="custom", sequence="3, 2 1-2 1", **RULES)
    c.set_rule(0, FixedEpochs(9))
    c.set_rule(-1, EarlyStopping(2, 0.0, 40))
    expected = Schedule.from_levels(
        [3, 2, 1, 2, 1],
        **RULES,
        overrides={0: FixedEpochs(9), 4: EarlyStopping(2, 0.0, 40)},
    )
    assert c.schedule() == expected
    # The optimizer settings travel with the cycle into the training config.
    c.param.update(optimizer="lbfgs", lr=0.5, batch_size=8)
    assert (c.optim_config().name, c.optim_config().lr, c.optim_config().batch_size) == (
        "lbfgs",
        0.5,
        8,
    )


def test_changing_the_sequence_clears_step_rules():
    c = CycleComposer(levels=3, cycle="V")
    c.set_rule(2, FixedEpochs(1))
    assert c.schedule().steps[2].rule == FixedEpochs(1)
    c.cycle = "W"
    assert c.overrides == {}
    assert c.schedule() == schedule("W", 3)


@pytest.mark.parametrize(
    "text, levels, words",
    [
        ("1 2 5", 3, ["level 5", "1..3"]),
        ("0 1", 2, ["level 0", "1..2"]),
        ("3 two 1", 3, ["'two'", "not a level number"]),
        ("  ", 3, ["empty", "3 2 1"]),
    ],
)
def test_invalid_custom_sequences_name_the_problem(text, levels, words):
    with pytest.raises(ValueError) as err:
        parse_sequence(text, levels=levels)
    for w in words:
        assert w in str(err.value)
    c = CycleComposer(levels=levels, cycle="custom", sequence=text)
    with pytest.raises(ValueError):
        c.schedule()


def test_step_rule_index_out_of_range():
    c = CycleComposer(levels=2, cycle="V")  # 3 steps
    with pytest.raises(ValueError, match="out of range: the cycle has 3 steps"):
        c.set_rule(3, FixedEpochs(1))


def test_diagram_data_and_rendered_figure():
    s = schedule("F", 3)
    data = diagram_data(s, current=4)
    assert data["level"] == list(s.levels)
    assert data["kind"] == [
        "fixed" if isinstance(st.rule, FixedEpochs) else "early stopping" for st in s.steps
    ]
    assert data["current"].count(True) == 1 and data["current"][4]
    fig = hv.render(cycle_diagram(s, current=4, resolution=64), backend="bokeh")
    assert fig.name == DIAGRAM_NAME
    assert fig.y_range.start > fig.y_range.end  # inverted: level 1 (finest) at the top
    ticks = fig.yaxis[0].major_label_overrides
    assert ticks[1] == "1 (64²)" and ticks[3] == "3 (16²)"
    # Every step is drawn once as a marker (squares + circles), in step order.
    steps = sorted(
        (x, y)
        for r in fig.renderers
        if r.glyph.__class__.__name__ == "Scatter" and r.glyph.size == 13
        for x, y in zip(r.data_source.data["step"], r.data_source.data["level"], strict=True)
    )
    assert steps == list(enumerate(s.levels, start=1))


def test_named_cycle_diagrams_in_one_layout():
    """Notebook 02 shows the named cycles side by side: an hv.Layout of diagrams renders."""
    diagrams = [cycle_diagram(schedule(n, 3), resolution=16, width=330) for n in CYCLE_NAMES]
    fig = hv.render(hv.Layout(diagrams).cols(2), backend="bokeh")
    names = [m.name for m in fig.select({"name": DIAGRAM_NAME})]
    assert len(names) == len(CYCLE_NAMES)


def test_cost_text_reports_the_schedule_cost():
    c = CycleComposer(levels=3, cycle="half-V", dim=3, **RULES)
    expected = schedule("half-V", 3, **RULES).cost(3)
    assert f"≤ {expected:.3g} finest-level epochs (3D" in c.cost_text()


def test_cost_in_time_from_a_runs_own_batches(store2d, tmp_path):
    """The run's measured seconds per finest epoch, and mid-run an extrapolation from the
    coarse level, against the epochs' own wall times in the same run."""
    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.train import DataConfig, read_events, train

    c = CycleComposer(levels=2, cycle="half-V", epochs=3, patience=3, max_epochs=3, batch_size=1)
    config = c.train_config(
        store=store2d,
        model=UNetConfig(dim=2, depth=1, base_filters=4),
        data=DataConfig(store=str(store2d), val_samples=1),
        validate_every=0,
    )
    train(config, tmp_path / "run", progress=False)
    events = read_events(tmp_path / "run" / "events.jsonl")
    first_fine = next(
        i for i, e in enumerate(events) if e["type"] == "batch_end" and e["level"] == 1
    )
    assert c.measure_time(events[:first_fine]) > 0  # mid-run, before the finest level
    assert c.epoch_seconds_source == "extrapolated from level 2 of the run"
    seconds = c.measure_time(events)
    assert c.epoch_seconds_source == "measured on the run"
    train_samples = events[0]["train_samples"]
    fine_epochs = [
        train_samples / e["samples_per_s"]
        for e in events
        if e["type"] == "epoch_end" and e["level"] == 1
    ]
    assert 0.5 * min(fine_epochs) <= seconds <= 2 * max(fine_epochs)
    total = schedule("half-V", 2, epochs=3, patience=3, max_epochs=3).cost(2) * seconds
    from mgtoolkit.widgets._view import duration

    assert f"≤ {duration(total)} of training" in c.cost_text()
    assert "measured on the run" in c.cost_text()


def test_cost_in_time_from_the_planner(store2d, dask_client):
    """The planner's estimate for the cluster's workers, shown in the view's cost line.

    (In a notebook the view asks the planner in the background; the browser test of notebook
    01 sees the time in the page.)"""
    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.plan import training_estimate
    from mgtoolkit.train import DataConfig

    c = CycleComposer(levels=2, cycle="V", batch_size=2)
    model = UNetConfig(dim=2, depth=1, base_filters=4)
    layout = c.view(model=model)
    diagram, cost = layout[1][1][0], layout[1][2].object  # the diagram pane, the cost Div
    assert "of training" not in cost.text
    with pytest.raises(ValueError, match="none is left to train on"):  # 6 samples, 8 held out
        c.estimate_time(store=store2d, model=model, ranks=2)
    data = DataConfig(store=str(store2d), val_samples=1)
    seconds = c.estimate_time(store=store2d, model=model, ranks=2, data=data)
    assert c.epoch_seconds_source == "planner estimate, 2 rank(s)"
    per_batch = training_estimate(model, resolution=16, batch=2, ranks=2).seconds
    assert seconds == pytest.approx(per_batch * 3)  # 5 training samples: 3 batches of ≤ 2
    assert "of training" in cost.text and "planner estimate, 2 rank(s)" in cost.text
    # The time changes the cost line in place; the diagram (its models in the page) stays.
    assert layout[1][1][0] is diagram and layout[1][2].object is cost
    # Fields split over the 2 ranks: a batch of 1 is planned as two slabs of one field.
    split = CycleComposer(levels=2, cycle="V", batch_size=1, spatial=2)
    seconds = split.estimate_time(store=store2d, model=model, ranks=2, data=data)
    per_batch = training_estimate(model, resolution=16, batch=1, ranks=2, spatial=2).seconds
    assert seconds == pytest.approx(per_batch * 5)


def test_view_redraws_on_edit():
    c = CycleComposer(levels=3, cycle="V")
    layout = c.view()
    message, diagram = layout[1][0], layout[1][1]  # then the cost and the rule editor
    before = diagram[0].object
    c.cycle = "W"
    assert diagram[0].object is not before
    title = diagram[0].object.opts.get().kwargs["title"]
    assert title == "W cycle: " + " ".join(map(str, schedule("W", 3).levels))
    assert len(message) == 0
    # Bad input shows the message instead of failing.
    c.param.update(cycle="custom", sequence="1 9")
    assert "level 9" in message[0].object
    assert len(diagram) == 0 and layout[1][2].object.text == ""  # no stale diagram or cost
    c.sequence = "2 1"
    assert len(message) == 0 and len(diagram) == 1


def test_train_config_uses_the_store_and_checks_levels(store2d):
    c = CycleComposer(levels=2, cycle="V", batch_size=4)
    cfg = c.train_config(store=store2d, seed=3)
    assert cfg.cycle.build() == c.schedule()
    assert cfg.model.dim == 2 and cfg.optim.batch_size == 4 and cfg.seed == 3
    c.levels = 3  # the store has only 2 levels
    with pytest.raises(ValueError, match=r"only levels 1\.\.2 are available"):
        c.train_config(store=store2d)


def test_launch_without_a_cluster_is_refused(store2d, tmp_path):
    c = CycleComposer(levels=2, cycle="V")
    with pytest.raises(ValueError, match=r"no cluster connected.*local_cluster"):
        c.launch(client=None, store=store2d, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_unreachable_cluster_is_reported():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
    )
    client = Client(cluster)
    check_cluster(client)  # connected: no error
    client.close()
    cluster.close()
    with pytest.raises(ConnectionError, match="not connected to a cluster"):
        check_cluster(client)


def test_launch_streams_to_the_monitor_and_stops(store2d, tmp_path, dask_client):
    """Launch button path on a real LocalCluster: events stream in, the stop button stops."""
    import time

    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.train import DataConfig, read_events
    from mgtoolkit.widgets import RunMonitor

    c = CycleComposer(levels=2, cycle="V", epochs=1, batch_size=2)
    c.set_rule(0, FixedEpochs(10**6))  # a run that only the stop button ends
    monitor = RunMonitor().watch(c)
    run_dir = tmp_path / "launched"
    model = UNetConfig(dim=2, depth=1, base_filters=2, convs_per_block=1)
    data = DataConfig(store=str(store2d), val_samples=2)
    # One rank: a stop that lands while a peer waits in a collective is the launcher's concern.
    run = c.launch(
        client=dask_client,
        store=store2d,
        run_dir=run_dir,
        ranks=1,
        model=model,
        data=data,
        device="cpu",
    )
    assert monitor.handle is run and c.status == "launched launched on 1 rank(s)"
    deadline = time.monotonic() + 120
    while monitor.iteration < 3:  # events arrive through the handle while the run trains
        assert time.monotonic() < deadline, monitor.status
        monitor.update()
        if monitor.finished:
            run.result()  # raises the run's error
        time.sleep(0.1)
    assert monitor.schedule == c.schedule()
    monitor.stop()
    monitor.wait(timeout=60, poll_s=0.1)
    assert monitor.stopped and monitor.error is None and run.status == "stopped"
    events = read_events(run_dir / "events.jsonl")
    assert 3 <= sum(e["type"] == "batch_end" for e in events) < 10**6
    assert not any(e.get("reason") == "schedule complete" for e in events)
    assert (run_dir / "checkpoints" / "latest.pt").exists()


def test_a_failing_rank_is_named_and_a_relaunch_is_a_new_run(store2d, tmp_path, dask_client):
    """Rank 1 of 2 raises after its first batch: composer and monitor say `rank 1: ...` and
    failed within 10 s, the other rank is ended, and the next launch gets a new directory."""
    import time

    import faults  # tests/faults.py

    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.train import DataConfig
    from mgtoolkit.widgets import RunMonitor

    c = CycleComposer(levels=2, cycle="V", epochs=1, batch_size=2)
    c.set_rule(0, FixedEpochs(10**6))
    monitor = RunMonitor().watch(c)
    settings = dict(
        client=dask_client,
        store=store2d,
        run_dir=tmp_path / "run",
        model=UNetConfig(dim=2, depth=1, base_filters=2, convs_per_block=1),
        data=DataConfig(store=str(store2d), val_samples=2),
        device="cpu",
    )
    marker = tmp_path / "raised"
    faults.fail_rank_after_first_batch(dask_client, rank=1, marker=str(marker))
    run = c.launch(**settings)
    assert len(run.workers) == 2 and c.run_dir == str(tmp_path / "run")
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert time.monotonic() < deadline, monitor.status
        monitor.update()
        time.sleep(0.1)
    raised = float(marker.read_text())
    while monitor.error is None:
        assert time.time() - raised < 10, monitor.status
        monitor.update()
        time.sleep(0.1)
    expected = f"rank 1: {faults.MESSAGE} (RuntimeError)"
    assert monitor.status == f"failed: {expected}" and monitor.finished
    assert run.status == "failed" and c.run_status().endswith(f"run: failed — {expected}")
    deadline = time.monotonic() + 60
    while not all(f.done() for f in run.futures):  # rank 0 is interrupted, not left waiting
        assert time.monotonic() < deadline, run.futures
        time.sleep(0.2)

    # Relaunch: a new run directory; resuming the failed one is the explicit choice.
    run2 = c.launch(**settings)
    assert c.run_dir == str(tmp_path / "run-2") and "new run run-2" in c.status
    assert monitor.handle is run2 and monitor.error is None  # the monitor follows the new run
    while monitor.iteration < 1:
        assert time.monotonic() < deadline + 60, monitor.status
        monitor.update()
        time.sleep(0.1)
    with pytest.raises(ValueError, match="still running"):
        c.launch(**settings)
    monitor.stop()
    monitor.wait(timeout=60, poll_s=0.1)
    assert monitor.stopped and (tmp_path / "run-2" / "checkpoints" / "latest.pt").exists()
    with pytest.raises(ValueError, match="nothing to resume"):
        c.launch(**settings, resume=True)  # the failed run wrote no checkpoint
    settings["run_dir"] = tmp_path / "run-2"
    c.launch(**settings, resume=True)  # the stopped run, from its checkpoint
    assert c.run_dir == str(tmp_path / "run-2") and c.status.startswith("resuming run-2")
    deadline = time.monotonic() + 120
    while not any(e["type"] == "batch_end" for e in monitor.events):
        assert time.monotonic() < deadline, monitor.status
        monitor.update()
        time.sleep(0.1)
    assert any(e["type"] == "run_start" and e["resumed"] for e in monitor.events)
    monitor.stop()
    monitor.wait(timeout=60, poll_s=0.1)
    assert monitor.stopped


# ---------------------------------------------------------------- spatial layouts


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("3", "is not a layout: write level=ranks"),
        ("3=0", "is not a layout"),
        ("x=2", "is not a layout"),
        ("4=1", "levels 1..3"),
    ],
)
def test_invalid_layouts_name_the_problem(text, words):
    with pytest.raises(ValueError, match=words):
        parse_layouts(text, levels=3)


def test_layouts_reach_the_config_the_diagram_and_the_cost(store2d):
    c = CycleComposer(levels=2, cycle="half-V", resolution=16, spatial=2, layouts="2=1")
    assert parse_layouts(" 2=1, 1=4 ", levels=2) == {2: 1, 1: 4}
    assert c.layout() == {1: 2, 2: 1}
    cfg = c.train_config(store=store2d)
    assert (cfg.parallel.spatial, cfg.parallel.levels) == (2, {"2": 1})
    assert [cfg.parallel.spatial_at(lv) for lv in (1, 2)] == [2, 1]
    fig = hv.render(c.diagram(), backend="bokeh")
    ticks = fig.yaxis[0].major_label_overrides
    assert ticks[1] == "1 (16², 2 slabs)" and ticks[2] == "2 (8²)"
    assert c.cost_text().endswith("ranks per field: level 1: 2, level 2: 1")
    c.spatial = 1  # data parallelism only: nothing about slabs
    ticks = hv.render(c.diagram(), backend="bokeh").yaxis[0].major_label_overrides
    assert "slabs" not in str(ticks)
    assert "ranks per field" not in c.cost_text()
    # a layout for a level the cycle does not train (a custom sequence skipping level 2)
    c.param.update(levels=3, cycle="custom", sequence="3 1", layouts="2=1")
    with pytest.raises(ValueError, match="level 2, which this cycle does not train: give "
                       "layouts for levels 1, 3"):  # fmt: skip
        c.parallel_config()


def test_view_shows_a_bad_layout_and_redraws_on_a_good_one():
    c = CycleComposer(levels=2, cycle="V", resolution=16)
    layout = c.view()
    message, diagram = layout[1][0], layout[1][1]
    c.layouts = "2=x"
    assert "is not a layout" in message[0].object and len(diagram) == 0
    c.param.update(layouts="2=1", spatial=2)
    assert len(message) == 0
    ticks = hv.render(diagram[0].object, backend="bokeh").yaxis[0].major_label_overrides
    assert ticks[1] == "1 (16², 2 slabs)"


def test_launch_splits_fields_as_the_layouts_say(store2d, tmp_path, dask_client):
    """A real launch on 2 LocalCluster ranks: level 1 in 2 slabs, level 2 data-parallel."""
    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.train import DataConfig, read_events
    from mgtoolkit.widgets import RunMonitor

    c = CycleComposer(levels=2, cycle="V", epochs=1, max_epochs=1, batch_size=4, spatial=3)
    settings = dict(
        client=dask_client,
        store=store2d,
        model=UNetConfig(dim=2, depth=2, base_filters=2, convs_per_block=1),
        data=DataConfig(store=str(store2d), val_samples=4),
        device="cpu",
    )
    with pytest.raises(ValueError, match=r"3 ranks per field do not divide the 2 ranks of this "
                       r"launch: choose ranks per field .* from 1, 2"):  # fmt: skip
        c.launch(run_dir=tmp_path / "refused", ranks=2, **settings)
    assert not (tmp_path / "refused").exists()
    c.param.update(spatial=2, layouts="2=1")
    monitor = RunMonitor().watch(c)
    run = c.launch(run_dir=tmp_path / "slabs", ranks=2, **settings)
    assert monitor.spatial == {1: 2, 2: 1}  # the monitor's diagram labels the slabs too
    assert run.result(timeout=300)["reason"] == "schedule complete"
    run.close()
    events = read_events(tmp_path / "slabs" / "events.jsonl")
    steps = [e for e in events if e["type"] == "step_start"]
    assert [(e["level"], e["spatial"]) for e in steps] == [(1, 2), (2, 1), (1, 2)]
