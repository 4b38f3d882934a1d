"""The cycle composer: design a multigrid training cycle, see it, launch it.

:class:`CycleComposer` is a plain :class:`param.Parameterized` state object; :meth:`schedule`
turns it into the same :class:`~mgtoolkit.cycles.Schedule` the API builds (through
:class:`~mgtoolkit.train.CycleConfig`, the one path that training also takes), and
:meth:`CycleComposer.view` is a thin panel layout over it. The diagram (:func:`cycle_diagram`)
draws levels on the vertical axis with **level 1 (finest) at the top**, as in Fig. 3 of Balu et
al. (SC21); fixed-epoch (restriction) steps are squares, early-stopping steps circles.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import param

from mgtoolkit.cycles import CYCLE_NAMES, EarlyStopping, FixedEpochs, Rule, Schedule
from mgtoolkit.widgets._view import (
    LiveText,
    Slot,
    duration,
    holoviews,
    level_color,
    live_layout,
    named,
)

__all__ = [
    "CycleComposer",
    "check_cluster",
    "cycle_diagram",
    "diagram_data",
    "fresh_run_dir",
    "parse_layouts",
    "parse_sequence",
]

#: Bokeh figure name of the diagram (the browser test looks it up).
DIAGRAM_NAME = "mgtoolkit-cycle-diagram"
#: Bokeh renderer name of the diagram's running-step ring (a live view moves it in place).
RUNNING_NAME = "mgtoolkit-running-step"


def _name_renderer(plot, element) -> None:
    plot.handles["glyph_renderer"].name = RUNNING_NAME


def parse_sequence(text: str, *, levels: int) -> list[int]:
    """Parse a custom level sequence such as ``"3 2 1 2 1"`` or ``"3,2,1"``.

    Parameters
    ----------
    text : str
        Levels separated by spaces, commas or dashes (1 = finest).
    levels : int
        Number of levels available: every entry must lie in ``1..levels``.

    Raises
    ------
    ValueError
        Empty text, a token that is not an integer, or a level outside ``1..levels``.
    """
    tokens = [t for t in re.split(r"[\s,;\-–>]+", str(text).strip()) if t]
    if not tokens:
        raise ValueError(
            f"the custom sequence is empty; type levels in training order, e.g. "
            f"'{' '.join(map(str, range(levels, 0, -1)))}' (1 = finest)"
        )
    out = []
    for tok in tokens:
        if not re.fullmatch(r"[0-9]+", tok):
            raise ValueError(
                f"{tok!r} in the custom sequence is not a level number; use integers "
                f"1..{levels} separated by spaces (1 = finest)"
            )
        lv = int(tok)
        if not 1 <= lv <= levels:
            raise ValueError(
                f"level {lv} in the custom sequence is outside 1..{levels} (1 = finest, "
                f"{levels} = coarsest); use levels 1..{levels} or raise the number of levels"
            )
        out.append(lv)
    return out


def parse_layouts(text: str, *, levels: int) -> dict[int, int]:
    """Parse per-level layouts such as ``"3=1 2=1"``: level → ranks per field there.

    Parameters
    ----------
    text : str
        ``level=ranks`` pairs separated by spaces or commas (1 = finest); empty: none.
    levels : int
        Number of levels available: every level must lie in ``1..levels``.

    Raises
    ------
    ValueError
        A pair that is not ``level=ranks`` with positive integers, or a level outside
        ``1..levels`` (the message names the form and the valid levels).
    """
    out: dict[int, int] = {}
    for token in (t for t in re.split(r"[\s,;]+", str(text).strip()) if t):
        match = re.fullmatch(r"([0-9]+)=([0-9]+)", token)
        if not match or int(match[2]) < 1:
            raise ValueError(
                f"{token!r} is not a layout: write level=ranks per field, e.g. '3=1 2=1' "
                "(level 3 and 2 data-parallel, the others split as 'ranks per field' says)"
            )
        level = int(match[1])
        if not 1 <= level <= levels:
            raise ValueError(
                f"layout for level {level}, but the cycle has levels 1..{levels} (1 = finest)"
            )
        out[level] = int(match[2])
    return out


def _rule_fields(rule: Rule) -> dict:
    """A rule as the override fields :class:`~mgtoolkit.train.CycleConfig` takes."""
    return {"epochs": rule.epochs} if isinstance(rule, FixedEpochs) else asdict(rule)


def _short(rule: Rule) -> str:
    if isinstance(rule, FixedEpochs):
        return f"{rule.epochs} ep"
    return f"≤{rule.max_epochs} ep, p{rule.patience}"


def diagram_data(schedule: Schedule, *, current: int | None = None) -> dict[str, list]:
    """Columns of the cycle diagram: one row per step.

    Returns
    -------
    dict
        ``step`` (1-based), ``level``, ``kind`` ("fixed" or "early stopping"), ``rule`` (short
        text), ``color`` (the level's colour), ``current`` (bool, the highlighted step;
        ``current`` is 0-based like the trainer's ``step`` field).
    """
    steps = schedule.steps
    return {
        "step": list(range(1, len(steps) + 1)),
        "level": [s.level for s in steps],
        "kind": ["fixed" if isinstance(s.rule, FixedEpochs) else "early stopping" for s in steps],
        "rule": [_short(s.rule) for s in steps],
        "color": [level_color(s.level) for s in steps],
        "current": [i == current for i in range(len(steps))],
    }


def cycle_diagram(
    schedule: Schedule,
    *,
    levels: int | None = None,
    current: int | None = None,
    resolution: int | None = None,
    dim: int = 2,
    spatial: dict[int, int] | None = None,
    width: int = 520,
    height: int = 260,
):
    """The cycle as a holoviews overlay: step on x, level on y (level 1, finest, at the top).

    Parameters
    ----------
    schedule : Schedule
    levels : int, optional
        Levels to show on the axis (default: the schedule's coarsest).
    current : int, optional
        0-based step to highlight (a running step).
    resolution : int, optional
        Finest cells per side; labels the axis "2 (32²)".
    dim : int
        2 or 3, for the axis labels.
    spatial : dict, optional
        Ranks per field on each level (:meth:`CycleComposer.layout`); a level split over more
        than one rank is labelled "2 (32², 4 slabs)".
    """
    hv = holoviews()

    data = diagram_data(schedule, current=current)
    top = max(levels or 0, schedule.coarsest)
    spatial = spatial or {}

    def tick(lv: int) -> str:
        parts = [f"{resolution >> (lv - 1)}{'²' if dim == 2 else '³'}"] if resolution else []
        if spatial.get(lv, 1) > 1:
            parts.append(f"{spatial[lv]} slabs")
        return f"{lv} ({', '.join(parts)})" if parts else str(lv)

    ticks = [(lv, tick(lv)) for lv in range(1, top + 1)]
    path = hv.Curve((data["step"], data["level"]), "step", "level").opts(
        color="#888888", line_width=2
    )
    layers = [path]
    for kind, marker in (("fixed", "square"), ("early stopping", "circle")):
        # One layer per level with a literal colour: a colour *column* becomes a colour mapper
        # whose range an hv.Layout of several diagrams cannot share (TypeError).
        for lv in sorted(set(data["level"])):
            rows = [i for i, k in enumerate(data["kind"]) if k == kind and data["level"][i] == lv]
            if not rows:
                continue
            cols = {c: [data[c][i] for i in rows] for c in ("step", "level", "rule")}
            layers.append(
                hv.Scatter(cols, "step", ["level", "rule"], label=kind).opts(
                    marker=marker,
                    size=13,
                    color=level_color(lv),
                    line_color="white",
                    tools=["hover"],
                )
            )
    # Always drawn (empty when no step runs) so that live views keep one structure.
    running = [current] if current is not None and 0 <= current < len(data["step"]) else []
    layers.append(
        hv.Scatter(
            ([i + 1 for i in running], [data["level"][i] for i in running]),
            "step",
            "level",
            label="running",
        ).opts(
            marker="circle",
            size=26,
            fill_alpha=0,
            line_color="red",
            line_width=3,
            hooks=[_name_renderer],
        )
    )
    return hv.Overlay(layers).opts(
        width=width,
        height=height,
        invert_yaxis=True,
        ylim=(0.5, top + 0.5),
        xlim=(0.5, len(data["step"]) + 0.5),
        yticks=ticks,
        xticks=data["step"] if len(data["step"]) <= 30 else 10,
        ylabel="level (1 = finest, top)",
        xlabel="step   (■ fixed epochs, ● early stopping)",
        title=f"{schedule.name} cycle: {' '.join(map(str, schedule.levels))}",
        show_legend=False,
        show_grid=True,
        shared_axes=False,  # each cycle has its own steps
        hooks=[named(DIAGRAM_NAME)],
    )


def _used(run_dir: Path) -> bool:
    return run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir()))


def fresh_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` if nothing was written there yet, else the first unused ``<name>-2``,
    ``<name>-3``, ... beside it (a new launch never resumes an old run by accident)."""
    run_dir = Path(run_dir)
    if not _used(run_dir):
        return run_dir
    k = 2
    while _used(run_dir.with_name(f"{run_dir.name}-{k}")):
        k += 1
    return run_dir.with_name(f"{run_dir.name}-{k}")


def check_cluster(client, *, timeout: float = 10.0) -> None:
    """Raise a clear error unless ``client`` is a connected dask Client with workers.

    Raises
    ------
    ValueError
        No client given.
    ConnectionError
        The client is closed, its scheduler unreachable, or no worker joined in ``timeout`` s.
    """
    fix = (
        "start one in the notebook with `from distributed import Client; "
        "from mgtoolkit.cluster import local_cluster; client = Client(local_cluster(2))` (or a "
        "dask-jobqueue SLURMCluster/PBSCluster on HPC) and pass it as client="
    )
    if client is None:
        raise ValueError(f"no cluster connected: {fix}")
    status = getattr(client, "status", None)
    if status != "running":
        raise ConnectionError(f"the dask client is {status!r}, not connected to a cluster: {fix}")
    try:
        client.wait_for_workers(1, timeout=timeout)
    except Exception as exc:
        address = getattr(getattr(client, "scheduler", None), "address", "?")
        raise ConnectionError(
            f"the cluster at {address} is not reachable or has no workers after {timeout:g} s "
            f"({type(exc).__name__}); check that it is running, or {fix}"
        ) from None


def _train_samples_and_resolution(config) -> tuple[int, int]:
    """Training samples per epoch and finest cells per side of a TrainConfig's store."""
    from mgtoolkit.data import check_store

    attrs = check_store(config.data.store)
    samples = config.data.train_samples or attrs["samples"] - config.data.val_samples
    if samples < 1:
        raise ValueError(
            f"{config.data.store} has {attrs['samples']} samples and {config.data.val_samples} "
            "are held out: none is left to train on; pass data=DataConfig(..., val_samples=...) "
            "with fewer held-out samples"
        )
    return samples, int(attrs["resolution"])


class CycleComposer(param.Parameterized):
    """State of the cycle composer: levels, cycle, per-step rules, optimizer, batch.

    Editing any parameter changes :meth:`schedule`; the view redraws the diagram and the cost.
    Per-step rule overrides (:meth:`set_rule`) are cleared whenever the step sequence changes
    (another cycle, level count or custom sequence), because step indices change meaning.
    """

    levels = param.Integer(default=3, bounds=(1, 12), doc="Number of levels (1 = finest).")
    cycle = param.Selector(
        default="half-V", objects=[*CYCLE_NAMES, "custom"], doc="Named cycle or 'custom'."
    )
    sequence = param.String(
        default="3 2 1 2 1", doc="Custom level sequence in training order (cycle='custom')."
    )
    epochs = param.Integer(default=5, bounds=(0, None), doc="Epochs of each fixed step.")
    patience = param.Integer(default=5, bounds=(1, None), doc="Early-stopping patience.")
    min_rel_improvement = param.Number(
        default=1e-3, bounds=(0, 1), inclusive_bounds=(True, False), doc="Relative improvement."
    )
    max_epochs = param.Integer(default=50, bounds=(1, None), doc="Early-stopping epoch cap.")
    overrides = param.Dict(default={}, doc="Step index → rule (FixedEpochs/EarlyStopping).")
    optimizer = param.Selector(default="adam", objects=["adam", "lbfgs"])
    lr = param.Number(default=1e-3, bounds=(0, None), inclusive_bounds=(False, True))
    batch_size = param.Integer(default=64, bounds=(1, None), doc="Global mini-batch.")
    spatial = param.Integer(
        default=1,
        bounds=(1, None),
        label="ranks per field",
        doc="Ranks each field is split over, in slabs (1: data parallelism only).",
    )
    layouts = param.String(
        default="",
        label="per-level layouts",
        doc="Ranks per field on particular levels, e.g. '3=1' (level 3 data-parallel).",
    )
    dim = param.Selector(default=2, objects=[2, 3], doc="Dimension (for cost and labels).")
    resolution = param.Integer(default=None, allow_None=True, doc="Finest cells per side.")
    epoch_seconds = param.Number(
        default=None,
        allow_None=True,
        doc="Seconds of one finest-level epoch on the cluster (estimate_time / measure_time).",
    )
    epoch_seconds_source = param.String(default="", doc="Where epoch_seconds comes from.")
    handle = param.Parameter(default=None, doc="The last launched run's handle.")
    run_dir = param.String(default=None, allow_None=True, doc="The last launched run's dir.")
    status = param.String(default="", doc="Last launch message (or error).")

    @param.depends("cycle", "levels", "sequence", watch=True)
    def _clear_overrides(self) -> None:
        self.overrides = {}

    # ------------------------------------------------------------------ logic
    def cycle_config(self):
        """The :class:`~mgtoolkit.train.CycleConfig` of the current state.

        Raises
        ------
        ValueError
            An invalid custom sequence or rule (the message names the fix).
        """
        from mgtoolkit.train import CycleConfig

        sequence = None
        if self.cycle == "custom":
            sequence = tuple(parse_sequence(self.sequence, levels=self.levels))
        return CycleConfig(
            name="half-V" if self.cycle == "custom" else self.cycle,
            levels=self.levels,
            sequence=sequence,
            epochs=self.epochs,
            patience=self.patience,
            min_rel_improvement=self.min_rel_improvement,
            max_epochs=self.max_epochs,
            overrides={i: _rule_fields(r) for i, r in self.overrides.items()},
        )

    def schedule(self) -> Schedule:
        """The :class:`~mgtoolkit.cycles.Schedule` the composer describes."""
        return self.cycle_config().build()

    def set_rule(self, index: int, rule: Rule) -> None:
        """Override step ``index``'s rule (0-based; negative counts from the end)."""
        if not isinstance(rule, FixedEpochs | EarlyStopping):
            raise ValueError(f"rule must be FixedEpochs or EarlyStopping (got {rule!r})")
        n = len(self.schedule().steps)
        if isinstance(index, bool) or not isinstance(index, int) or not -n <= index < n:
            raise ValueError(f"step index {index!r} out of range: the cycle has {n} steps")
        self.overrides = {**self.overrides, index % n: rule}

    def parallel_config(self):
        """The :class:`~mgtoolkit.train.ParallelConfig`: ranks per field, per-level layouts.

        Raises
        ------
        ValueError
            An invalid layout, or one for a level the cycle does not train (level 1 always
            counts: validation runs there).
        """
        from mgtoolkit.train import ParallelConfig

        layouts = parse_layouts(self.layouts, levels=self.levels)
        trained = {1, *self.schedule().levels}
        if unused := sorted(set(layouts) - trained):
            raise ValueError(
                f"layout for level {unused[0]}, which this cycle does not train: give layouts "
                f"for levels {', '.join(map(str, sorted(trained)))}"
            )
        return ParallelConfig(spatial=self.spatial, levels={str(k): v for k, v in layouts.items()})

    def layout(self) -> dict[int, int]:
        """Ranks per field on each level of the cycle (1 = finest ... ``levels``)."""
        parallel = self.parallel_config()
        return {lv: parallel.spatial_at(lv) for lv in range(1, self.levels + 1)}

    def optim_config(self):
        """The :class:`~mgtoolkit.train.OptimConfig` (optimizer, learning rate, batch)."""
        from mgtoolkit.train import OptimConfig

        return OptimConfig(name=self.optimizer, lr=self.lr, batch_size=self.batch_size)

    def train_config(self, *, store: str | Path, model=None, **settings):
        """A complete :class:`~mgtoolkit.train.TrainConfig` for the dataset ``store``.

        Parameters
        ----------
        store : path-like
            Dataset store (its ``dim`` sets the network's dimension unless ``model`` is given).
        model : UNetConfig, optional
            Network settings (default: the paper's U-Net for the store's dimension).
        **settings
            Other :class:`~mgtoolkit.train.TrainConfig` fields (``seed``, ``target``, ``data``,
            ``device``, ...); ``data`` replaces the default ``DataConfig(store=store)``.
        """
        from mgtoolkit.data import check_store
        from mgtoolkit.nn import UNetConfig
        from mgtoolkit.train import DataConfig, TrainConfig

        attrs = check_store(store)
        self.schedule().check_levels(attrs["levels"])
        data = settings.pop("data", None) or DataConfig(store=str(store))
        settings.setdefault("parallel", self.parallel_config())
        return TrainConfig(
            data=data,
            model=model or UNetConfig(dim=attrs["dim"]),
            cycle=self.cycle_config(),
            optim=self.optim_config(),
            **settings,
        )

    def cost_text(self) -> str:
        """The estimated cost, in finest-level epoch equivalents per level and in total, and in
        time when :attr:`epoch_seconds` is known."""
        s = self.schedule()
        by_level = s.cost_by_level(self.dim)
        parts = ", ".join(f"level {lv}: {c:.3g}" for lv, c in by_level.items())
        text = (
            f"estimated cost ≤ {s.cost(self.dim):.3g} finest-level epochs ({self.dim}D; "
            f"early-stopping steps counted at their cap) — {parts}"
        )
        layout = self.layout()
        if any(p > 1 for p in layout.values()):
            text += "; ranks per field: " + ", ".join(
                f"level {lv}: {p}" for lv, p in layout.items() if lv in by_level or lv == 1
            )
        if self.epoch_seconds is not None:
            text += (
                f"; ≤ {duration(s.cost(self.dim) * self.epoch_seconds)} of training "
                f"({duration(self.epoch_seconds)} per finest-level epoch, "
                f"{self.epoch_seconds_source})"
            )
        return text

    def estimate_time(self, *, store: str | Path, model=None, ranks: int = 1, **settings) -> float:
        """Set :attr:`epoch_seconds` from the planner's estimate for ``store`` on ``ranks`` ranks.

        The planner times the network on this machine (:func:`mgtoolkit.plan.training_estimate`:
        a few seconds the first time); ``model`` and ``settings`` (``data``, ``precision``) are
        those of :meth:`train_config`. Returns the seconds of one finest-level epoch.
        """
        seconds = self._planned_epoch_seconds(store=store, model=model, ranks=ranks, **settings)
        self.epoch_seconds_source = f"planner estimate, {ranks} rank(s)"
        self.epoch_seconds = seconds
        return seconds

    def _planned_epoch_seconds(self, *, store, ranks: int, model=None, **settings) -> float:
        from mgtoolkit.plan import training_estimate

        config = self.train_config(store=store, model=model, **settings)
        train, n = _train_samples_and_resolution(config)
        est = training_estimate(
            config.model,
            resolution=n,
            batch=self.batch_size,
            ranks=ranks,
            spatial=config.parallel.spatial_at(1),
            precision=config.precision,
        )
        return est.seconds * -(-train // self.batch_size)

    def _estimate_in_background(self, *, client, store, drawn, **settings) -> None:
        """The planner's estimate without blocking the view: its probes take seconds."""
        import threading

        import panel as pn

        try:
            ranks = max(1, len(client.scheduler_info()["workers"]))
        except Exception:  # an unreachable cluster is reported by the launch button
            return
        found: dict = {}

        def work():
            try:
                found["seconds"] = self._planned_epoch_seconds(store=store, ranks=ranks, **settings)
            except Exception as exc:  # no estimate: the cost stays in epochs
                found["error"] = exc

        def poll():
            if not found or not drawn():
                return
            callback.stop()
            if "seconds" in found and self.epoch_seconds is None:  # a measurement wins
                self.epoch_seconds_source = f"planner estimate, {ranks} rank(s)"
                self.epoch_seconds = found["seconds"]

        threading.Thread(target=work, name="composer-estimate", daemon=True).start()
        callback = pn.state.add_periodic_callback(poll, period=500)

    def measure_time(self, events: list[dict]) -> float | None:
        """Set :attr:`epoch_seconds` from a run's own batches (its ``batch_end`` events).

        Batches of the finest level give it directly; before the run reaches the finest
        level, the finest level's cost is extrapolated from the finest level measured so far
        (2^d times the work per level). A step's first batch (warm-up) is left out. Returns the
        seconds, or None while the run has too few batches.
        """
        start = next((e for e in events if e.get("type") == "run_start"), None)
        if start is None:
            return None
        by_level: dict[int, list[float]] = {}
        for e in events:
            if e.get("type") == "batch_end" and e.get("batch", 0) > 0 and e.get("samples_per_s"):
                by_level.setdefault(int(e["level"]), []).append(float(e["samples_per_s"]))
        level = min((lv for lv, v in by_level.items() if len(v) >= 3), default=None)
        if level is None:
            return None
        rates = sorted(by_level[level])
        per_sample = 1.0 / rates[len(rates) // 2]  # the median batch: robust to stragglers
        scale = 2 ** (int(start["dim"]) * (level - 1))
        self.epoch_seconds_source = (
            "measured on the run" if level == 1 else f"extrapolated from level {level} of the run"
        )
        self.epoch_seconds = per_sample * scale * int(start["train_samples"])
        return self.epoch_seconds

    def launch(
        self,
        *,
        client,
        store: str | Path,
        run_dir: str | Path,
        ranks=None,
        resume: bool = False,
        **settings,
    ):
        """Start the cycle on the cluster behind ``client``; return the run's handle at once.

        Parameters
        ----------
        client : distributed.Client
            The connected cluster (a LocalCluster's client by default in the notebooks).
        store, run_dir : path-like
            Dataset store and run directory (on a file system every worker sees). When
            ``run_dir`` already holds a run, a new directory beside it is used
            (:func:`fresh_run_dir`: ``half-v-2``, ...) unless ``resume``.
        ranks : int, optional
            Data-parallel ranks, one per worker (default: every worker).
        resume : bool
            Continue the run in ``run_dir`` from its last checkpoint instead (an explicit
            choice: the status says so).
        **settings
            Passed to :meth:`train_config` (``seed``, ``model``, ``data``, ...).

        Returns
        -------
        mgtoolkit.launch.run.Run
            Also kept in :attr:`handle` (a :class:`RunMonitor` can :meth:`~RunMonitor.watch`);
            the directory actually used is :attr:`run_dir`.

        Raises
        ------
        ValueError, ConnectionError
            No client, an unreachable cluster, an invalid cycle/config, or a run of this
            composer still running (messages name the fix).
        """
        running = self.handle is not None and self.handle.status == "running"
        if running:
            raise ValueError(
                f"run {Path(self.run_dir).name} is still running: stop it (Stop run in the "
                "monitor) or wait for it to end before launching another"
            )
        check_cluster(client)
        config = self.train_config(store=store, **settings)
        world = ranks or len(client.scheduler_info()["workers"])
        sizes = {config.parallel.spatial_at(lv) for lv in range(1, self.levels + 1)}
        fits = [p for p in range(1, world + 1) if world % p == 0]
        if bad := sorted(sizes - set(fits)):
            raise ValueError(
                f"{bad[0]} ranks per field do not divide the {world} ranks of this launch: "
                f"choose ranks per field (and per-level layouts) from {', '.join(map(str, fits))}"
            )
        from mgtoolkit.data import check_store

        attrs = check_store(store)  # the labels follow the store the run trains on
        self.param.update(dim=int(attrs["dim"]), resolution=int(attrs["resolution"]))
        from mgtoolkit.launch.run import train_on_cluster

        asked = Path(run_dir)
        target = asked if resume else fresh_run_dir(asked)
        if resume and not (asked / "checkpoints").is_dir():
            raise ValueError(
                f"nothing to resume in {asked}: it holds no checkpoint; launch a new run instead"
            )
        run = train_on_cluster(config, str(target), ranks=ranks, cluster=client)
        self.run_dir = str(target)
        where = f"on {len(run.workers)} rank(s)"
        if resume:
            self.status = f"resuming {target.name} from its last checkpoint {where}"
        elif target != asked:
            self.status = f"launched new run {target.name} {where} ({asked.name} exists)"
        else:
            self.status = f"launched {target.name} {where}"
        self.handle = run
        return run

    def run_status(self) -> str:
        """The launch message and the state of the last launched run, e.g.
        ``"half-v-2: failed — rank 1: ... (RuntimeError)"``."""
        if self.handle is None:
            return self.status
        name = Path(self.run_dir).name if self.run_dir else "run"
        state = self.handle.status
        failure = getattr(self.handle, "failure", None)
        line = f"{name}: {state}" + (f" — {failure}" if failure else "")
        return f"{self.status}\n{line}"

    # ------------------------------------------------------------------ view
    def diagram(self, *, current: int | None = None):
        """The current cycle's :func:`cycle_diagram`."""
        return cycle_diagram(
            self.schedule(),
            levels=self.levels,
            current=current,
            resolution=self.resolution,
            dim=self.dim,
            spatial=self.layout(),
        )

    def view(self, *, client=None, store: str | Path | None = None, run_dir=None, **settings):
        """The composer as a panel layout; with ``client``, ``store`` and ``run_dir`` it has a
        launch button (extra ``settings`` go to :meth:`train_config`)."""
        import panel as pn

        controls = pn.Param(
            self.param,
            parameters=[
                "levels",
                "cycle",
                "sequence",
                "epochs",
                "patience",
                "min_rel_improvement",
                "max_epochs",
                "optimizer",
                "lr",
                "batch_size",
                "spatial",
                "layouts",
            ],
            widgets={
                "cycle": pn.widgets.RadioButtonGroup,
                "levels": {"type": pn.widgets.IntInput, "start": 1, "end": 12},
            },
            show_name=False,
            width=300,
        )

        diagram, message = Slot(), Slot()
        cost = LiveText()

        def redraw(*_):
            try:
                diagram.show(self.diagram())
                cost.set(self.cost_text())
                message.clear()
            except ValueError as exc:
                diagram.clear()  # no stale diagram or cost under the alert
                cost.set("")
                message.alert(str(exc))

        def recost(*_):
            # A launched run refines the time every second: the text changes in place, the
            # diagram is left alone (rebuilding it each second starves the kernel and races
            # the page's copy of its models).
            try:
                cost.set(self.cost_text())
            except ValueError:  # an invalid cycle: its alert is already shown
                pass

        self.param.watch(
            redraw,
            [
                "levels",
                "cycle",
                "sequence",
                "epochs",
                "patience",
                "min_rel_improvement",
                "max_epochs",
                "overrides",
                "dim",
                "resolution",
                "spatial",
                "layouts",
            ],
        )
        self.param.watch(recost, "epoch_seconds")
        redraw()

        def drawn() -> bool:  # what changes on its own waits for the page (see live_layout)
            return right_column.drawn

        if client is not None and store is not None and self.epoch_seconds is None:
            self._estimate_in_background(client=client, store=store, drawn=drawn, **settings)
        right = [message.layout, diagram.layout, cost.pane, self._rule_editor()]
        if client is not None or store is not None:
            right.append(
                self._launch_row(
                    client=client, store=store, run_dir=run_dir, drawn=drawn, **settings
                )
            )
        # The right column takes the notebook's width (the cost line wraps, never clipped).
        right_column = live_layout(*right, sizing_mode="stretch_width", min_width=420)
        return pn.Row(controls, right_column, sizing_mode="stretch_width")

    def _rule_editor(self):
        import panel as pn

        step = pn.widgets.IntInput(label="step (1-based)", value=1, start=1, width=110)
        kind = pn.widgets.Select(
            label="rule", options=["fixed epochs", "early stopping"], width=130
        )
        epochs = pn.widgets.IntInput(label="epochs / cap", value=self.epochs, start=0, width=100)
        patience = pn.widgets.IntInput(label="patience", value=self.patience, start=1, width=90)
        apply = pn.widgets.Button(label="Set step rule", color="primary", width=120)
        reset = pn.widgets.Button(label="Reset rules", width=110)
        note = Slot(margin=(0, 10))

        def on_apply(_):
            try:
                rule = (
                    FixedEpochs(epochs.value)
                    if kind.value == "fixed epochs"
                    else EarlyStopping(patience.value, self.min_rel_improvement, epochs.value)
                )
                self.set_rule(step.value - 1, rule)
                note.show(f"step {step.value}: {rule}")
            except ValueError as exc:
                note.show(f"**{exc}**")

        def on_reset(_):
            self.overrides = {}
            note.show("all steps use the default rules")

        apply.on_click(on_apply)
        reset.on_click(on_reset)
        return pn.Column(
            pn.pane.Markdown("**Per-step rule**", margin=(0, 10)),
            pn.Row(step, kind, epochs, patience),
            pn.Row(apply, reset),
            note.layout,
        )

    def _launch_row(self, *, client, store, run_dir, drawn, **settings):
        import panel as pn

        button = pn.widgets.Button(label="Launch on cluster", button_type="success", width=180)
        resume = pn.widgets.Checkbox(
            name="resume the last run from its checkpoint (instead of a new run directory)",
            value=False,
        )
        status = LiveText(self.run_status())
        error = Slot()  # an alert only for a refused launch (cleared by the next one)

        def tick():
            if not drawn():
                return
            status.set(self.run_status())
            if self.handle is not None:
                self.measure_time(self.handle.events)
            if self.handle is None or self.handle.status != "running":
                callback.stop()  # the run has ended: its final state is shown

        callback = pn.state.add_periodic_callback(tick, period=1000, start=False)

        def on_handle(_):  # a launch from this button or from the API (composer.launch)
            if not callback.running:
                callback.start()
            tick()

        self.param.watch(on_handle, "handle")

        def on_click(_):
            try:
                last = self.run_dir if resume.value and self.run_dir else run_dir
                self.launch(
                    client=client, store=store, run_dir=last, resume=resume.value, **settings
                )
                error.clear()
                resume.value = False  # resuming is chosen per launch
            except (ValueError, ConnectionError, OSError, RuntimeError) as exc:
                self.status = f"launch failed: {exc}"
                error.alert(f"**Launch failed:** {exc}")
            status.set(self.run_status())

        button.on_click(on_click)
        return pn.Column(
            pn.Row(button, resume), status.pane, error.layout, sizing_mode="stretch_width"
        )
