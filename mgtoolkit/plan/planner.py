"""Plans: a whole run checked against a memory budget, with alternatives when it cannot fit."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mgtoolkit.plan.estimates import (
    Estimate,
    default_memory,
    fem_estimate,
    inference_estimate,
    suggest_tile,
    training_estimate,
)
from mgtoolkit.plan.probes import DEFAULT_FILL, GiB, PlanError


@dataclass(frozen=True)
class Plan:
    """Estimates for one configuration and the verdict against ``memory`` bytes per rank.

    Attributes
    ----------
    train, infer, fem : Estimate or None
        Per-rank training (per global mini-batch), tiled prediction of one field, FEM solve.
    memory : int
        Bytes available per rank (per process for ``infer``'s workers together).
    suggestions : dict
        For each phase that does not fit, settings that would (phase → list of strings).
    """

    settings: dict
    memory: int
    train: Estimate | None = None
    infer: Estimate | None = None
    fem: Estimate | None = None
    suggestions: dict = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        return not self.suggestions

    def __str__(self) -> str:
        s = self.settings
        lines = [
            f"plan: {s['dim']}D U-Net depth {s['depth']}, {s['base_filters']} filters, "
            f"resolution {s['resolution']}, memory {self.memory / GiB:.1f} GiB per rank"
        ]
        for name in ("train", "infer", "fem"):
            est = getattr(self, name)
            if est is not None:
                verdict = "fits" if name not in self.suggestions else "DOES NOT FIT"
                lines.append(
                    f"  {name:<5} {est.gib:6.2f} GiB  {_duration(est.seconds):>9}  {verdict}"
                    f"  — {est.detail}"
                )
        for name, tips in self.suggestions.items():
            lines.append(f"  {name} would fit with: " + "; or ".join(tips))
        return "\n".join(lines)

    def check(self) -> Plan:
        """Return self if everything fits, else raise :class:`PlanError` with the suggestions."""
        if self.suggestions:
            raise PlanError(
                f"this configuration does not fit in {self.memory / GiB:.1f} GiB per rank:\n{self}"
            )
        return self


def _check_positive(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer (got {value!r})")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


#: Largest resolution (cells per side) the planner estimates: its probes run real networks
#: on slabs of the field, and beyond this even a slab exhausts a large node.
MAX_RESOLUTION = {2: 2**17, 3: 2**13}


def plan(
    config,
    *,
    resolution: int,
    batch: int = 1,
    precision: str = "fp32",
    checkpointing: bool = False,
    ranks: int = 1,
    heap_reuse: bool = True,
    tile: int | None = None,
    workers: int = 1,
    growth: int = 0,
    memory: int | None = None,
    phases: tuple[str, ...] = ("train", "infer", "fem"),
) -> Plan:
    """Estimate memory and time of training, tiled prediction and the FEM solve, and judge them.

    Parameters
    ----------
    config : mgtoolkit.nn.UNetConfig
        The network.
    resolution : int
        Cells per side (a power of two).
    batch, precision, checkpointing, ranks, growth, heap_reuse
        Training settings (see :func:`training_estimate`).
    tile, workers
        Tiled prediction (owned nodes per tile side, dask worker processes).
    memory : int, optional
        Bytes available per rank (and to the prediction's workers together). Default
        :data:`DEFAULT_FILL` of this machine's memory divided by ``ranks``.
    phases : tuple of str
        Which of "train", "infer", "fem" to estimate.

    Returns
    -------
    Plan
        ``plan.fits`` and ``str(plan)``; ``plan.check()`` raises :class:`PlanError` (a
        ValueError) naming settings that would fit — checkpointing, bf16, more ranks, a
        smaller batch, a smaller tile or fewer workers.
    """
    from mgtoolkit.grids import check_resolution
    from mgtoolkit.nn.memory import PRECISIONS

    check_resolution(resolution)
    most = MAX_RESOLUTION.get(config.dim, 0)
    if resolution > most:
        raise ValueError(
            f"resolution {resolution} is beyond what the planner estimates in {config.dim}D "
            f"(at most {most} cells per side); plan a coarser level"
        )
    if 2**config.depth > 4 * resolution:
        raise ValueError(
            f"a depth-{config.depth} U-Net pads every field to {2**config.depth} cells per side, "
            f"far beyond the {resolution} cells asked; use depth ≤ "
            f"{int(resolution).bit_length() + 1}"
        )
    if memory is not None and not (isinstance(memory, int | float) and 0 < memory < float("inf")):
        raise ValueError(f"memory must be a positive number of bytes (got {memory!r})")
    unknown = set(phases) - {"train", "infer", "fem"}
    if unknown:
        raise ValueError(f"phases must be among train, infer, fem (got {sorted(unknown)})")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    _check_positive(batch=batch, ranks=ranks, workers=workers)
    memory = default_memory(ranks) if memory is None else int(memory)
    settings = {
        **config.to_dict(),
        "resolution": resolution,
        "batch": batch,
        "precision": precision,
        "checkpointing": checkpointing,
        "ranks": ranks,
        "heap_reuse": heap_reuse,
        "tile": tile,
        "workers": workers,
        "growth": growth,
    }
    train_kw = dict(
        resolution=resolution,
        batch=batch,
        precision=precision,
        checkpointing=checkpointing,
        ranks=ranks,
        growth=growth,
        heap_reuse=heap_reuse,
    )
    result = Plan(settings, memory)
    suggestions: dict[str, list[str]] = {}
    if "train" in phases:
        result = replace(result, train=training_estimate(config, **train_kw))
        if result.train.bytes > memory:
            suggestions["train"] = _train_alternatives(config, train_kw, memory)
    if "infer" in phases:
        infer_kw = dict(resolution=resolution, tile=tile, workers=workers, growth=growth)
        result = replace(result, infer=inference_estimate(config, **infer_kw))
        if result.infer.bytes > memory:
            suggestions["infer"] = _infer_alternatives(config, infer_kw, memory)
    if "fem" in phases:
        result = replace(result, fem=fem_estimate(config.dim, resolution=resolution))
        if result.fem.bytes > memory:
            suggestions["fem"] = [
                f"a machine with ≥ {result.fem.gib / DEFAULT_FILL:.0f} GiB (the solver holds "
                "the whole field), or a coarser level"
            ]
    return replace(result, suggestions=suggestions)


def _train_alternatives(config, kw: dict, memory: int) -> list[str]:
    """Settings (changed from ``kw``) whose training estimate fits, cheapest change first."""
    tips = []
    options = []
    if kw["heap_reuse"]:
        options.append(("heap_reuse=False (slower steps)", {"heap_reuse": False}))
    if not kw["checkpointing"]:
        options.append(("checkpointing=True", {"checkpointing": True}))
    if kw["precision"] == "fp32":
        options.append(("precision='bf16'", {"precision": "bf16"}))
        if not kw["checkpointing"]:
            options.append(
                (
                    "checkpointing=True, precision='bf16'",
                    {"checkpointing": True, "precision": "bf16"},
                )
            )
    for ranks in (2, 4, 8, 16, 32, 64, 128, 256):
        if ranks > kw["ranks"] and kw["batch"] % ranks == 0:
            options.append(
                (f"ranks={ranks} ({kw['batch'] // ranks} samples per rank)", {"ranks": ranks})
            )
    for batch in range(kw["batch"] - kw["ranks"], 0, -kw["ranks"]):
        options.append((f"batch={batch}", {"batch": batch}))
    found_ranks = found_batch = False
    for label, change in options:
        is_ranks, is_batch = "ranks" in change, "batch" in change
        if (is_ranks and found_ranks) or (is_batch and found_batch):
            continue
        est = training_estimate(config, **{**kw, **change})
        if est.bytes <= memory:
            tips.append(f"{label}: {est.gib:.1f} GiB per rank")
            found_ranks |= is_ranks
            found_batch |= is_batch
    return tips or [
        "nothing with this network at this resolution: train on coarser levels, or use a "
        "smaller network (base_filters, depth)"
    ]


def _infer_alternatives(config, kw: dict, memory: int) -> list[str]:
    """The largest tile (for the given workers, then for one worker) that fits."""
    tips = []
    n = kw["resolution"]
    for workers in sorted({kw["workers"], 1}, reverse=True):
        try:
            tile = suggest_tile(
                config, resolution=n, memory=memory, workers=workers, growth=kw["growth"]
            )
        except PlanError:
            continue
        est = inference_estimate(config, **{**kw, "tile": tile, "workers": workers})
        tips.append(
            f"tile={','.join(map(str, tile))}, workers={workers}: {est.gib:.1f} GiB, "
            f"~{_duration(est.seconds)}"
        )
    return tips or ["no tile size fits: free memory or use a machine with more"]


# ----------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class LevelLayout:
    """The layout chosen for one level of a cycle.

    Attributes
    ----------
    level : int
        1 = the finest.
    resolution : int
        Cells per side there.
    spatial : int or None
        Ranks per field; None when no layout fits.
    estimate : Estimate or None
        Training memory per rank with that layout (None when no layout is possible at all).
    choices : dict
        Every possible ranks-per-field at this level → its estimate (bytes per rank).
    hint : str
        Why nothing fits and what would ("" when a layout fits).
    """

    level: int
    resolution: int
    spatial: int | None
    estimate: Estimate | None
    choices: dict
    hint: str = ""


@dataclass(frozen=True)
class LayoutPlan:
    """Per-level layouts of training a ``dim``-D network over ``ranks`` ranks, judged against
    ``memory`` bytes per rank.

    ``str()`` prints a table and the ``[parallel]`` section of the training config that sets
    them; :attr:`parallel` is that section as :class:`mgtoolkit.train.ParallelConfig`'s fields.
    """

    dim: int
    ranks: int
    batch: int
    memory: int
    levels: tuple[LevelLayout, ...]

    @property
    def fits(self) -> bool:
        return all(lv.spatial is not None for lv in self.levels)

    @property
    def parallel(self) -> dict:
        """``{"spatial": S, "levels": {"3": 1, ...}}``: level 1's ranks per field, and those of
        the other levels where they differ (what ``[parallel]`` in the config takes)."""
        if not self.fits:
            raise PlanError(f"no layout fits every level:\n{self}")
        finest = self.levels[0].spatial
        others = {str(lv.level): lv.spatial for lv in self.levels[1:] if lv.spatial != finest}
        return {"spatial": finest, "levels": others}

    def __str__(self) -> str:
        lines = [
            f"layouts: {self.ranks} rank(s), global batch {self.batch}, "
            f"memory {self.memory / GiB:.1f} GiB per rank"
        ]
        for lv in self.levels:
            tried = (
                ", ".join(f"{s}: {b / GiB:.2f}" for s, b in sorted(lv.choices.items()))
                or "none possible"
            )
            if lv.spatial is None:
                chosen = f"DOES NOT FIT ({lv.hint})"
            else:
                chosen = f"{lv.spatial} rank(s) per field, {lv.estimate.gib:.2f} GiB"
            lines.append(
                f"  level {lv.level} ({lv.resolution}^{self.dim}): {chosen}"
                f"  — GiB per rank by ranks per field: {tried}"
            )
        if self.fits:
            par = self.parallel
            table = ", ".join(f'"{k}" = {v}' for k, v in par["levels"].items())
            lines += ["", "[parallel]", f"spatial = {par['spatial']}"]
            if table:
                lines.append(f"levels = {{ {table} }}")
        return "\n".join(lines)


def plan_layouts(
    config,
    *,
    resolution: int,
    levels: int,
    ranks: int,
    batch: int = 1,
    memory: int | None = None,
    precision: str = "fp32",
    checkpointing: bool = False,
    heap_reuse: bool = True,
    growth: int = 0,
) -> LayoutPlan:
    """Choose ranks per field for each level of a cycle so that training fits ``memory``.

    A rank's share of a global batch of ``B`` fields is ``B / ranks`` fields whatever the
    layout — whole fields when the ranks are data-parallel, slabs when fields are split — so
    splitting fields saves memory only where the batch cannot be shared out as whole fields
    (``B`` smaller than ``ranks``, or not a multiple of it). Each level therefore gets the
    fewest ranks per field that the batch and the slab thickness allow (fewer halos to
    exchange) among those that fit; its cells per side must split into slabs of a multiple
    of ``2**depth`` planes.

    Parameters
    ----------
    config : mgtoolkit.nn.UNetConfig
    resolution : int
        Cells per side of level 1 (the finest).
    levels : int
        How many levels the cycle trains on (1 … ``levels``; level l has ``resolution /
        2**(l − 1)`` cells per side).
    ranks : int
        Processes of the run (the world size).
    batch : int
        Global mini-batch (``optim.batch_size``), the same on every level.
    memory : int, optional
        Bytes per rank; default :data:`DEFAULT_FILL` of this machine's memory over ``ranks``.
    precision, checkpointing, heap_reuse, growth
        As :func:`training_estimate`.

    Returns
    -------
    LayoutPlan
        ``.fits``, ``.parallel`` (the ``[parallel]`` section) and a printable table.
    """
    from mgtoolkit.grids import check_resolution, level_resolution

    check_resolution(resolution)
    _check_positive(levels=levels, ranks=ranks, batch=batch)
    if resolution >> (levels - 1) < 2:
        raise ValueError(
            f"{resolution} cells per side have at most {resolution.bit_length() - 1} levels "
            f"of ≥ 2 cells (got levels = {levels})"
        )
    memory = default_memory(ranks) if memory is None else int(memory)
    settings = dict(
        batch=batch,
        precision=precision,
        checkpointing=checkpointing,
        growth=growth,
        heap_reuse=heap_reuse,
    )
    out = []
    for level in range(1, levels + 1):
        n = level_resolution(resolution, level)
        choices = _choices(config, n, ranks, settings)
        fitting = [s for s, est in choices.items() if est.bytes <= memory]
        chosen = min(fitting) if fitting else None
        smallest = min(choices.values(), key=lambda e: e.bytes) if choices else None
        hint = ""
        if not choices:
            need = min(s for s in _divisors(ranks) if batch % (ranks // s) == 0)
            hint = (
                f"no layout: a batch of {batch} over {ranks} ranks needs {need} ranks per "
                f"field, and {n} cells do not split into {need} slabs of a multiple of "
                f"2^depth = {2**config.depth} planes; use a batch that is a multiple of "
                f"{ranks}, or fewer levels"
            )
        elif chosen is None:
            hint = _more_ranks(config, n, ranks, memory, settings)
        out.append(
            LevelLayout(
                level,
                n,
                chosen,
                choices[chosen] if chosen is not None else smallest,
                {s: est.bytes for s, est in choices.items()},
                hint,
            )
        )
    return LayoutPlan(config.dim, ranks, batch, memory, tuple(out))


def _divisors(k: int) -> list[int]:
    return [d for d in range(1, k + 1) if k % d == 0]


def _choices(config, n: int, ranks: int, settings: dict) -> dict[int, Estimate]:
    """Ranks per field → training estimate, for every layout :func:`training_estimate`
    accepts at ``n`` cells per side (the data groups share the batch equally, slabs are a
    multiple of ``2**depth`` planes; it refuses the others before probing)."""
    out = {}
    for s in _divisors(ranks):
        try:
            out[s] = training_estimate(config, resolution=n, ranks=ranks, spatial=s, **settings)
        except PlanError:
            continue
    return out


def _more_ranks(config, n: int, ranks: int, memory: int, settings: dict) -> str:
    """What would fit a level that does not: more ranks (up to 64 times as many), or
    settings that use less memory per sample."""
    tip = "use checkpointing or bf16, or a smaller batch"
    for more in (ranks * 2**k for k in range(1, 7)):
        for s, est in _choices(config, n, more, settings).items():
            if est.bytes <= memory:
                return f"fits on {more} ranks, {s} per field, {est.gib:.1f} GiB each; or {tip}"
    return tip
