"""Comparing runs: curves read back from the Bokeh models equal the runs' events.jsonl."""

from __future__ import annotations

import numpy as np
import pytest

from mgtoolkit.widgets import RunMonitor, compare_runs
from mgtoolkit.widgets.compare import COMPARE_NAME


@pytest.fixture(scope="module")
def two_runs(store2d, tmp_path_factory):
    """Two real runs on the same store: a V cycle and training on the finest level only."""
    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.train import CycleConfig, DataConfig, OptimConfig, TrainConfig, train

    root = tmp_path_factory.mktemp("compare")
    dirs = []
    for name in ("V", "base"):
        config = TrainConfig(
            data=DataConfig(store=str(store2d), val_samples=2),
            model=UNetConfig(dim=2, depth=1, base_filters=2, convs_per_block=1),
            cycle=CycleConfig(name=name, levels=2, epochs=1, patience=1, max_epochs=2),
            optim=OptimConfig(batch_size=2),
            device="cpu",
        )
        train(config, root / name.lower(), progress=False)
        dirs.append(root / name.lower())
    return dirs


def expected(run_dir):
    """Per-level (cumulative wall, cumulative finest-level epochs, loss) from the raw events."""
    from mgtoolkit.train import read_events

    out, wall, cost = {}, 0.0, 0.0
    for ev in read_events(run_dir / "events.jsonl"):
        if ev["type"] == "epoch_end":
            wall += ev["wall_s"]
            cost += 4.0 ** -(ev["level"] - 1)  # 2D: a level-2 epoch is a quarter of a level-1 one
            out.setdefault(ev["level"], []).append((wall, cost, ev["loss"]))
    return out


def drawn_lines(plot):
    """(legend label, xs, ys) of every line in the rendered Bokeh figure."""
    import holoviews as hv
    from bokeh.models import GlyphRenderer, Line, Scatter

    fig = hv.render(plot, backend="bokeh")
    assert fig.name == COMPARE_NAME
    labels = {}
    for item in fig.legend[0].items:
        for r in item.renderers:
            labels[r.id] = item.label["value"]
    out = []
    for r in fig.select({"type": GlyphRenderer}):
        if isinstance(r.glyph, Line | Scatter):
            data = r.data_source.data
            xs, ys = (np.asarray(data[k]) for k in list(data)[:2])
            out.append((labels.get(r.id), xs, ys))
    return out


@pytest.mark.parametrize("x", ["wall", "epochs"])
def test_overlay_matches_the_events(two_runs, x):
    comparison = compare_runs(two_runs, x=x)
    lines = {label: (xs, ys) for label, xs, ys in drawn_lines(comparison.loss_plot())}
    column = 0 if x == "wall" else 1
    want = {}
    for run_dir in two_runs:
        for level, rows in expected(run_dir).items():
            want[f"{run_dir.name} · level {level}"] = rows
    assert set(lines) == set(want)  # v · level 1, v · level 2, base · level 1
    for label, rows in want.items():
        xs, ys = lines[label]
        np.testing.assert_allclose(xs, [r[column] for r in rows], rtol=1e-12)
        np.testing.assert_allclose(ys, [r[2] for r in rows], rtol=1e-12)
    text = comparison.summary()
    assert "v: val_rel_l2" in text and "base: val_rel_l2" in text and "(finished)" in text


def test_monitor_compare_and_view(two_runs):
    monitor = RunMonitor().follow(two_runs[0])
    comparison = monitor.compare(two_runs[1])
    assert [r.name for r in comparison.runs] == ["v", "base"]
    base = comparison.runs[1]
    assert list(base.levels) == [1]  # trained on the finest level only
    # the finest-level-epoch cost of a base run is its number of epochs
    assert base.levels[1]["epochs"] == [1.0 + i for i in range(len(base.levels[1]["loss"]))]
    comparison.view()
    comparison.parts["switch"].value = "epochs"
    assert comparison.x == "epochs"
    with pytest.raises(FileNotFoundError, match=r"events\.jsonl"):
        compare_runs([two_runs[0].parent / "nothing"])
