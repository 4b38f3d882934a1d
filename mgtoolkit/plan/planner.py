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
    for name, value in (("batch", batch), ("ranks", ranks), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer (got {value!r})")
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
