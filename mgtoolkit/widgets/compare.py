"""Several runs side by side: per-level loss curves and validation error against wall time or
against the cost in finest-level epochs (the paper's Table-1 view), from their run directories.

Everything is read from each run's ``events.jsonl``:

- ``epoch_end`` events give each level's epoch loss and the epoch's training time (``wall_s``);
- the cost of an epoch on level ℓ is ``2**(-dim·(ℓ-1))`` finest-level epochs
  (:func:`mgtoolkit.cycles.epoch_cost`), as in the cycle composer's estimate;
- ``validation`` events give the finest-level error at that moment (``wall_s`` = training time
  so far).

To look at the same curves in TensorBoard, export the events with
:func:`mgtoolkit.train.export_tensorboard` (``mgtoolkit export-tensorboard``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import param

from mgtoolkit.cycles import epoch_cost
from mgtoolkit.rundir import RunDir
from mgtoolkit.widgets._view import holoviews, named

__all__ = ["COMPARE_NAME", "RunComparison", "RunCurves", "compare_runs", "run_curves"]

#: Bokeh figure name of the loss comparison (tests and users find it in the page).
COMPARE_NAME = "mgtoolkit-run-comparison"

#: One colour per run (Okabe–Ito, other order than the level colours); dash per level.
RUN_COLORS = ("#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
LEVEL_DASH = ("solid", "dashed", "dotted", "dotdash", "dashdot")

X_LABELS = {"wall": "training time (s)", "epochs": "cost (finest-level epochs)"}


@dataclass
class RunCurves:
    """One run's curves. ``levels[ℓ]`` and ``validation`` hold equal-length lists under
    ``"wall"`` (training seconds so far), ``"epochs"`` (finest-level epochs so far) and the
    value (``"loss"``; the validation fields, e.g. ``"val_rel_l2"``)."""

    name: str
    run_dir: Path
    dim: int = 2
    levels: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    validation: dict[str, list[float]] = field(default_factory=dict)
    finished: bool = False


def run_curves(run_dir: str | Path, *, name: str | None = None) -> RunCurves:
    """Read one run directory's ``events.jsonl`` into :class:`RunCurves`."""
    from mgtoolkit.train.events import read_events

    run_dir = Path(run_dir)
    path = RunDir(run_dir).events
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no events.jsonl: is it a run directory?")
    curves = RunCurves(name=name or run_dir.name, run_dir=run_dir)
    wall = cost = 0.0
    for ev in read_events(path):
        kind = ev.get("type")
        if kind == "run_start":
            curves.dim = int(ev.get("dim", curves.dim))
        elif kind == "epoch_end":
            level = int(ev["level"])
            wall += float(ev.get("wall_s", 0.0))
            cost += epoch_cost(level, curves.dim)
            series = curves.levels.setdefault(level, {"wall": [], "epochs": [], "loss": []})
            series["wall"].append(wall)
            series["epochs"].append(cost)
            series["loss"].append(float(ev["loss"]))
        elif kind == "validation":
            v = curves.validation
            v.setdefault("wall", []).append(float(ev.get("wall_s", wall)))
            v.setdefault("epochs", []).append(cost)
            for key, value in ev.items():
                if key.startswith("val_") and value is not None:
                    v.setdefault(key, []).append(float(value))
        elif kind == "run_end":
            curves.finished = True
    return curves


def _names(run_dirs: list[Path]) -> list[str]:
    names = [p.name for p in run_dirs]
    if len(set(names)) < len(names):  # same leaf names: add the parent folder
        names = [f"{p.parent.name}/{p.name}" for p in run_dirs]
    return names


class RunComparison(param.Parameterized):
    """Overlay several runs: per-level epoch loss and the validation error, against wall time
    or finest-level epochs (switch with :attr:`x`).

    Parameters
    ----------
    run_dirs : list of path-like
        Run directories (finished or still running: :meth:`reload` reads them again).
    """

    x = param.Selector(default="wall", objects=list(X_LABELS), doc="Horizontal axis.")
    metric = param.String(default="val_rel_l2", doc="Validation field of the lower plot.")

    def __init__(self, run_dirs, **params):
        super().__init__(**params)
        self.run_dirs = [Path(p) for p in run_dirs]
        if not self.run_dirs:
            raise ValueError("compare at least one run directory")
        self.reload()

    def reload(self) -> RunComparison:
        """Read every run's events again (runs still training grow); returns self."""
        self.runs = [
            run_curves(p, name=n) for p, n in zip(self.run_dirs, _names(self.run_dirs), strict=True)
        ]
        return self

    def loss_plot(self, *, width: int = 620, height: int = 320):
        """Epoch loss per run (colour) and level (dash), log scale."""
        hv = holoviews()
        curves = []
        for i, run in enumerate(self.runs):
            for level, s in sorted(run.levels.items()):
                curves.append(
                    hv.Curve(
                        (s[self.x], s["loss"]),
                        X_LABELS[self.x],
                        "epoch loss",
                        label=f"{run.name} · level {level}",
                    ).opts(
                        color=RUN_COLORS[i % len(RUN_COLORS)],
                        line_dash=LEVEL_DASH[(level - 1) % len(LEVEL_DASH)],
                        line_width=2,
                    )
                )
        if not curves:
            return hv.Text(0, 0, "no epoch has ended yet in these runs")
        return (
            hv.Overlay(curves)
            .opts(logy=True, width=width, height=height, legend_position="right")
            .opts(title="epoch loss per level", hooks=[named(COMPARE_NAME)])
        )

    def validation_plot(self, *, width: int = 620, height: int = 240):
        """The validation metric (finest level) of every run."""
        hv = holoviews()
        curves = [
            hv.Curve(
                (run.validation[self.x], run.validation[self.metric]),
                X_LABELS[self.x],
                self.metric,
                label=run.name,
            ).opts(color=RUN_COLORS[i % len(RUN_COLORS)], line_width=2)
            for i, run in enumerate(self.runs)
            if run.validation.get(self.metric)
        ]
        if not curves:
            return hv.Text(0, 0, f"no {self.metric} in these runs")
        return hv.Overlay(curves).opts(
            logy=True,
            width=width,
            height=height,
            legend_position="right",
            title=f"validation ({self.metric}, finest level)",
        )

    def summary(self) -> str:
        """One line per run: final validation metric, training time and cost."""
        lines = []
        for run in self.runs:
            v = run.validation
            last = v.get(self.metric, [None])[-1]
            wall = max([s["wall"][-1] for s in run.levels.values()] or [0.0])
            cost = max([s["epochs"][-1] for s in run.levels.values()] or [0.0])
            state = "finished" if run.finished else "not finished"
            metric = "n/a" if last is None else f"{last:.3g}"
            lines.append(
                f"{run.name}: {self.metric} {metric} after {wall:.1f} s training, "
                f"{cost:.3g} finest-level epochs ({state})"
            )
        return "\n".join(lines)

    def view(self):
        """A switch between wall time and finest-level epochs over both plots."""
        import panel as pn

        switch = pn.widgets.RadioButtonGroup(
            options={label: key for key, label in X_LABELS.items()}, value=self.x
        )
        switch.param.watch(lambda e: setattr(self, "x", e.new), "value")
        plots = pn.Column(sizing_mode="stretch_width")

        def redraw(*_):
            plots.objects = [
                pn.pane.HoloViews(self.loss_plot()),
                pn.pane.HoloViews(self.validation_plot()),
                pn.pane.Markdown(self.summary().replace("\n", "  \n")),
            ]

        self.param.watch(redraw, ["x", "metric"])
        redraw()
        self.parts = dict(switch=switch, plots=plots)
        return pn.Column(switch, plots, sizing_mode="stretch_width")


def compare_runs(run_dirs, *, x: str = "wall") -> RunComparison:
    """:class:`RunComparison` of ``run_dirs``; ``.view()`` shows it in a notebook."""
    return RunComparison(run_dirs, x=x)
