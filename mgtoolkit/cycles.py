"""Multigrid training cycles as plain data (docs/math.md, 'Training cycles').

A *cycle* is a :class:`Schedule`: a tuple of :class:`Step` ``(level, rule)``. Level 1 is the
finest grid; level ℓ has ``n / 2**(ℓ - 1)`` cells per side. The named cycles for ``L`` levels
are recursions whose consecutive repeated levels are merged into one step::

    V(ℓ)   = ℓ, V(ℓ+1), ℓ                 L=4: 1 2 3 4 3 2 1
    half-V = L, L-1, ..., 1               L=4: 4 3 2 1
    W(ℓ)   = ℓ, W(ℓ+1), W(ℓ+1), ℓ         L=4: 1 2 3 4 3 4 3 2 3 4 3 4 3 2 1
    F(ℓ)   = ℓ, F(ℓ+1), V(ℓ+1), ℓ         L=4: 1 2 3 4 3 4 3 2 3 4 3 2 1
    base   = 1                            (training on the finest level only)

with ``X(L) = L``. A step whose next step is coarser trains a fixed number of epochs
(:class:`FixedEpochs`, the paper's restriction steps); every other step trains until an
:class:`EarlyStopping` rule fires — on levels coarser than 1 optionally a rule of its own
(``coarse=``), since time spent polishing a coarse level's own loss is not time-to-accuracy on
the finest one. Any step's rule can be overridden, and any level sequence can be composed with
:meth:`Schedule.from_levels`.

Examples
--------
>>> s = schedule("V", 3, epochs=2, patience=3, max_epochs=20)
>>> s.levels
(1, 2, 3, 2, 1)
>>> s.with_rule(4, FixedEpochs(5)).steps[4].rule
FixedEpochs(epochs=5)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

__all__ = [
    "CYCLE_NAMES",
    "EarlyStopping",
    "FixedEpochs",
    "Rule",
    "Schedule",
    "Step",
    "canonical_name",
    "epoch_cost",
    "schedule",
]

#: Canonical names of the built-in cycles.
CYCLE_NAMES = ("base", "V", "W", "F", "half-V")

#: Default stopping-rule settings (overridable per call and per step).
DEFAULT_EPOCHS = 5
DEFAULT_PATIENCE = 5
DEFAULT_MIN_REL_IMPROVEMENT = 1e-3
DEFAULT_MAX_EPOCHS = 50


def epoch_cost(level: int, dim: int) -> float:
    """Cost of one epoch on ``level`` (1 = finest) in finest-level epochs: ``2**(-dim·(ℓ-1))``,
    the level's share of the finest level's cells (work is proportional to them)."""
    return 2.0 ** (-dim * (level - 1))


def _check_int(value, name: str, *, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum} (got {value!r}); {fix}")
    return value


@dataclass(frozen=True)
class FixedEpochs:
    """Train exactly ``epochs`` epochs (a restriction step: the next step is coarser).

    Parameters
    ----------
    epochs : int
        Number of epochs, ≥ 0 (0 makes the step a no-op).
    """

    epochs: int

    def __post_init__(self) -> None:
        _check_int(self.epochs, "FixedEpochs.epochs", minimum=0, fix="use 0 to skip the step")

    @property
    def max_epochs(self) -> int:
        """Most epochs this rule can train (equal to ``epochs``)."""
        return self.epochs

    def done(self, losses: Sequence[float]) -> bool:
        """Whether the step is finished after the epoch losses ``losses`` (oldest first)."""
        return len(losses) >= self.epochs

    def __str__(self) -> str:
        return f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"


@dataclass(frozen=True)
class EarlyStopping:
    """Train until the loss stops improving, or ``max_epochs`` epochs.

    The step stops after an epoch when the best epoch loss has not improved by at least
    ``min_rel_improvement`` (relative to the previous best, ``best - loss > min_rel_improvement
    * |best|``) for ``patience`` consecutive epochs, or when ``max_epochs`` epochs have run.

    Parameters
    ----------
    patience : int
        Epochs without sufficient improvement before stopping, ≥ 1.
    min_rel_improvement : float
        Relative decrease that counts as an improvement, ≥ 0 (e.g. 1e-3 = 0.1 %).
    max_epochs : int
        Epoch cap, ≥ 1.
    """

    patience: int = DEFAULT_PATIENCE
    min_rel_improvement: float = DEFAULT_MIN_REL_IMPROVEMENT
    max_epochs: int = DEFAULT_MAX_EPOCHS

    def __post_init__(self) -> None:
        _check_int(self.patience, "EarlyStopping.patience", minimum=1, fix="try patience = 5")
        _check_int(self.max_epochs, "EarlyStopping.max_epochs", minimum=1, fix="try 50")
        m = self.min_rel_improvement
        if isinstance(m, bool) or not isinstance(m, int | float) or not (0 <= m < 1):
            raise ValueError(
                f"EarlyStopping.min_rel_improvement must be a number in [0, 1) (got {m!r}); "
                "it is a relative loss decrease, e.g. 1e-3 for 0.1 %"
            )

    def done(self, losses: Sequence[float]) -> bool:
        """Whether the step is finished after the epoch losses ``losses`` (oldest first)."""
        if len(losses) >= self.max_epochs:
            return True
        best = math.inf
        since = 0
        for loss in losses:
            if best == math.inf or best - loss > self.min_rel_improvement * abs(best):
                best, since = min(best, loss), 0
            else:
                since += 1
        return since >= self.patience

    def __str__(self) -> str:
        return (
            f"early stopping (patience {self.patience}, "
            f"min rel. improvement {self.min_rel_improvement:g}, ≤ {self.max_epochs} epochs)"
        )


#: A stopping rule.
Rule = FixedEpochs | EarlyStopping


@dataclass(frozen=True)
class Step:
    """One step of a cycle: train on ``level`` (1 = finest) until ``rule`` says stop."""

    level: int
    rule: Rule

    def __post_init__(self) -> None:
        _check_int(self.level, "Step.level", minimum=1, fix="level 1 is the finest grid")
        if not isinstance(self.rule, FixedEpochs | EarlyStopping):
            raise ValueError(
                f"a step's rule must be FixedEpochs or EarlyStopping (got {self.rule!r})"
            )


def _merged(levels: Iterable[int]) -> list[int]:
    """Merge consecutive repeated levels into one step."""
    out: list[int] = []
    for lv in levels:
        if not out or out[-1] != lv:
            out.append(lv)
    return out


def _v(lv: int, last: int) -> list[int]:
    return [lv] if lv == last else [lv, *_v(lv + 1, last), lv]


def _w(lv: int, last: int) -> list[int]:
    return [lv] if lv == last else [lv, *_w(lv + 1, last), *_w(lv + 1, last), lv]


def _f(lv: int, last: int) -> list[int]:
    return [lv] if lv == last else [lv, *_f(lv + 1, last), *_v(lv + 1, last), lv]


_SEQUENCES = {
    "base": lambda L: [1],
    "V": lambda L: _v(1, L),
    "W": lambda L: _w(1, L),
    "F": lambda L: _f(1, L),
    "half-V": lambda L: list(range(L, 0, -1)),
}


def canonical_name(name: str) -> str:
    """The canonical spelling of a cycle name ("halfv" → "half-V"); ValueError if unknown."""
    key = str(name).strip().lower().replace("_", "-").replace(" ", "-")
    aliases = {"base": "base", "v": "V", "w": "W", "f": "F", "half-v": "half-V", "halfv": "half-V"}
    if key not in aliases:
        raise ValueError(
            f"unknown cycle {name!r}; choose one of {', '.join(CYCLE_NAMES)} "
            "or build a custom one with Schedule.from_levels([...])"
        )
    return aliases[key]


@dataclass(frozen=True)
class Schedule:
    """A training cycle: the steps in order, each a level and a stopping rule.

    Attributes
    ----------
    steps : tuple of Step
    name : str
        "V", "W", "F", "half-V", "base" or a user's label such as "custom".
    """

    steps: tuple[Step, ...]
    name: str = "custom"

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        if not steps:
            raise ValueError("a schedule needs at least one step")
        for s in steps:
            if not isinstance(s, Step):
                raise ValueError(f"schedule steps must be Step objects (got {s!r})")
        object.__setattr__(self, "steps", steps)

    @classmethod
    def from_levels(
        cls,
        levels: Sequence[int],
        *,
        name: str = "custom",
        epochs: int = DEFAULT_EPOCHS,
        patience: int = DEFAULT_PATIENCE,
        min_rel_improvement: float = DEFAULT_MIN_REL_IMPROVEMENT,
        max_epochs: int = DEFAULT_MAX_EPOCHS,
        coarse: EarlyStopping | None = None,
        overrides: Mapping[int, Rule] | None = None,
    ) -> Schedule:
        """Build a schedule from a level sequence with the standard rule assignment.

        A step followed by a coarser level gets ``FixedEpochs(epochs)``; every other step gets
        ``EarlyStopping(patience, min_rel_improvement, max_epochs)``, or ``coarse`` when given
        and the step's level is coarser than 1. Consecutive repeats are *not* merged here: a
        custom sequence is taken as written.

        Parameters
        ----------
        levels : sequence of int
            Levels in training order, each ≥ 1 (1 = finest).
        coarse : EarlyStopping, optional
            The rule of early-stopping steps on levels ≥ 2 (default: the finest level's rule).
            Such a step watches its own level's loss, which keeps improving long after the
            finest-level error it buys has stopped moving: in a 2D 128² half-V over 4 levels
            the level-4 loss still improved by more than 2 % every 3 epochs after 40 epochs,
            while the finest-level error stayed at 0.20–0.23 from epoch 6 on. A small epoch
            cap here is what a time-to-accuracy cycle wants (``benchmarks/cycles.py``).
        overrides : mapping int -> rule, optional
            Rules replacing the default of individual steps, keyed by step index (0-based;
            negative indices count from the end).
        """
        levels = list(levels)
        if not levels:
            raise ValueError("a schedule needs at least one level, e.g. [3, 2, 1]")
        for lv in levels:
            _check_int(lv, "each level", minimum=1, fix="level 1 is the finest grid")
        if coarse is not None and not isinstance(coarse, EarlyStopping):
            raise ValueError(f"coarse must be an EarlyStopping rule (got {coarse!r})")
        fixed = FixedEpochs(epochs)
        early = EarlyStopping(patience, min_rel_improvement, max_epochs)
        coarse = early if coarse is None else coarse
        steps = [
            Step(
                lv,
                fixed
                if i + 1 < len(levels) and levels[i + 1] > lv
                else (early if lv == 1 else coarse),
            )
            for i, lv in enumerate(levels)
        ]
        out = cls(tuple(steps), name)
        for index, rule in (overrides or {}).items():
            out = out.with_rule(index, rule)
        return out

    def with_rule(self, index: int, rule: Rule) -> Schedule:
        """A copy whose step ``index`` (0-based, negative from the end) uses ``rule``."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"step index must be an integer (got {index!r})")
        if not -len(self.steps) <= index < len(self.steps):
            raise ValueError(
                f"step index {index} out of range: this {self.name} schedule has "
                f"{len(self.steps)} steps (indices 0..{len(self.steps) - 1})"
            )
        steps = list(self.steps)
        steps[index] = Step(steps[index].level, rule)
        return replace(self, steps=tuple(steps))

    @property
    def levels(self) -> tuple[int, ...]:
        """The level of every step, in order."""
        return tuple(s.level for s in self.steps)

    @property
    def coarsest(self) -> int:
        """The coarsest (largest) level any step uses; the store must hold levels 1..this."""
        return max(self.levels)

    def check_levels(self, available: int) -> None:
        """Raise a ValueError if a step needs a level beyond ``available`` (1..available)."""
        if self.coarsest > available:
            raise ValueError(
                f"the {self.name} schedule uses level {self.coarsest} but only levels "
                f"1..{available} are available; build the cycle with levels={available} "
                f"or generate the dataset with levels={self.coarsest}"
            )

    def cost_by_level(self, dim: int) -> dict[int, float]:
        """Upper-bound cost per level in finest-level epoch equivalents.

        An epoch on level ℓ costs :func:`epoch_cost` finest-level epochs. Early-stopping
        steps are counted at their epoch cap ``max_epochs``, so the figure is an upper bound.
        """
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3 (got {dim!r})")
        out: dict[int, float] = {}
        for s in self.steps:
            out[s.level] = out.get(s.level, 0.0) + s.rule.max_epochs * epoch_cost(s.level, dim)
        return dict(sorted(out.items()))

    def cost(self, dim: int = 2) -> float:
        """Upper-bound cost in finest-level epoch equivalents (see :meth:`cost_by_level`)."""
        return sum(self.cost_by_level(dim).values())

    def __str__(self) -> str:
        lines = [
            f"{self.name} cycle: {len(self.steps)} step{'s' if len(self.steps) != 1 else ''}, "
            f"levels {' '.join(map(str, self.levels))} (1 = finest)",
            f"  cost ≤ {self.cost(2):.4g} (2D) / {self.cost(3):.4g} (3D) finest-level epochs "
            "(early-stopping steps counted at their epoch cap)",
        ]
        lines += [f"  step {i + 1:>2}: level {s.level}  {s.rule}" for i, s in enumerate(self.steps)]
        return "\n".join(lines)


def schedule(
    name: str,
    levels: int,
    *,
    epochs: int = DEFAULT_EPOCHS,
    patience: int = DEFAULT_PATIENCE,
    min_rel_improvement: float = DEFAULT_MIN_REL_IMPROVEMENT,
    max_epochs: int = DEFAULT_MAX_EPOCHS,
    coarse: EarlyStopping | None = None,
    overrides: Mapping[int, Rule] | None = None,
) -> Schedule:
    """The named cycle over ``levels`` levels (docs/math.md, 'Training cycles').

    Parameters
    ----------
    name : str
        "V", "W", "F", "half-V" or "base" (case-insensitive; "halfv", "half_v" accepted).
    levels : int
        Number of levels L ≥ 1 (1 = finest, L = coarsest). "base" ignores it beyond validation.
    epochs : int
        Epochs of each fixed (restriction) step, ≥ 0.
    patience, min_rel_improvement, max_epochs
        Settings of each early-stopping step (see :class:`EarlyStopping`).
    coarse : EarlyStopping, optional
        The rule of early-stopping steps on levels ≥ 2 (see :meth:`Schedule.from_levels`).
    overrides : mapping int -> rule, optional
        Per-step rules keyed by step index (0-based, negative from the end).

    Returns
    -------
    Schedule
    """
    canonical = canonical_name(name)
    _check_int(levels, "levels", minimum=1, fix="level 1 is the finest grid; try levels = 3")
    return Schedule.from_levels(
        _merged(_SEQUENCES[canonical](levels)),
        name=canonical,
        epochs=epochs,
        patience=patience,
        min_rel_improvement=min_rel_improvement,
        max_epochs=max_epochs,
        coarse=coarse,
        overrides=overrides,
    )
