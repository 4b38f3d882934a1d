"""Training configuration: plain dataclasses, read from TOML or YAML in one place.

A config file has the sections ``[data]``, ``[model]``, ``[cycle]``, ``[optim]`` and top-level
keys (``seed``, ``adaptation``, ``target_metric``, ``target``, ...). Example (TOML)::

    seed = 0
    adaptation = "none"          # "grow": fresh layers when moving to a finer level;
                                 # "cascade": keep the coarse network as a coarse stage
    target_metric = "energy_gap" # stop when the finest-level validation metric reaches target
    target = 0.01

    [data]
    store = "data/kl2d.zarr"
    val_samples = 8

    [model]
    dim = 2
    depth = 3
    base_filters = 16

    [cycle]
    name = "half-V"
    levels = 3
    epochs = 5
    patience = 5
    max_epochs = 50
    [cycle.overrides]
    "-1" = { patience = 10, max_epochs = 200 }   # step index → rule fields

    [optim]
    name = "adam"
    lr = 3e-3
    batch_size = 64
    loss = "multigrid"
    lr_schedule = "plateau"

    [parallel]
    spatial = 2                  # ranks per field (slabs); the world size / 2 data groups

Unknown keys and bad values are rejected with a message naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mgtoolkit.cycles import EarlyStopping, FixedEpochs, Schedule, schedule
from mgtoolkit.nn import UNetConfig
from mgtoolkit.nn.memory import PRECISIONS

__all__ = [
    "CycleConfig",
    "DataConfig",
    "OptimConfig",
    "ParallelConfig",
    "TrainConfig",
    "config_differences",
    "load_config",
]

ADAPTATIONS = ("none", "grow", "cascade")
TARGET_METRICS = ("energy_gap", "rel_l2")
LOSSES = ("energy", "scaled_energy", "multigrid")
LR_SCHEDULES = ("constant", "plateau", "cosine")


def _positive_int(section: str, name: str, value, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{section}.{name} must be an integer ≥ {minimum} (got {_short(value)})")


def _positive_float(section: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{section}.{name} must be a number > 0 (got {_short(value)})")
    if not math.isfinite(value) or value > 1e6:
        raise ValueError(f"{section}.{name} must be a finite number ≤ 1e6 (got {_short(value)})")


def _short(value) -> str:
    return shorten(value if not isinstance(value, str) else repr(value))


@dataclass(frozen=True)
class DataConfig:
    """Where the samples come from.

    Parameters
    ----------
    store : str
        Path of the dataset store (see :mod:`mgtoolkit.data`).
    val_samples : int
        Held-out samples: the *last* ``val_samples`` samples of the store (≥ 0).
    train_samples : int, optional
        Train on the first ``train_samples`` samples (default: all that are not held out).
    cache : bool
        Hold each level's training samples in memory while its step runs (levels of more
        than 2 GiB of ν are always read batch by batch).
    augment : bool
        Map each training sample by one of the problem's symmetries (:mod:`mgtoolkit.nn.symmetry`:
        the mirrors, and in 3D also the swap of y and z; 4 maps in 2D, 16 in 3D), drawn
        uniformly afresh every epoch: the image of ν is another problem of the same kind (the
        Dirichlet faces stay at x = 0 and x = 1), and the losses need no labels, so the network
        sees that many times as many distinct fields.
    """

    store: str = ""
    val_samples: int = 8
    train_samples: int | None = None
    cache: bool = True
    augment: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.store, str | Path) or not str(self.store):
            raise ValueError(
                "data.store must name a dataset store, e.g. store = 'data/kl2d.zarr' "
                "(create one with `mgtoolkit data generate`)"
            )
        object.__setattr__(self, "store", str(self.store))
        _positive_int("data", "val_samples", self.val_samples, minimum=0)
        if self.val_samples == 0:
            import warnings

            warnings.warn(
                "data.val_samples = 0: nothing is validated, so no validation metrics are "
                "reported and a target-based stopping rule can never fire; set val_samples ≥ 1 "
                "(default 8) unless that is what you want",
                UserWarning,
                stacklevel=3,
            )
        if self.train_samples is not None:
            _positive_int("data", "train_samples", self.train_samples)


@dataclass(frozen=True)
class CycleConfig:
    """The training cycle (see :func:`mgtoolkit.cycles.schedule`).

    Parameters
    ----------
    name : str
        "V", "W", "F", "half-V" or "base"; ignored when ``sequence`` is given.
    levels : int
        Number of levels L (1 = finest).
    sequence : list of int, optional
        A custom level sequence (``Schedule.from_levels``).
    epochs, patience, min_rel_improvement, max_epochs
        Default rules (fixed steps / early-stopping steps).
    coarse : dict, optional
        Rule fields (any of ``patience``, ``min_rel_improvement``, ``max_epochs``) replacing the
        defaults above in early-stopping steps on levels ≥ 2, e.g. ``{"patience": 2,
        "max_epochs": 10}``: stop polishing a coarse level's own loss early (see
        :meth:`mgtoolkit.cycles.Schedule.from_levels`). Default: the same rule on every level.
    overrides : dict
        Step index (int, or its string in TOML; negative from the end) → rule fields:
        ``{"epochs": 3}`` for a fixed step, or any of ``patience``, ``min_rel_improvement``,
        ``max_epochs`` for an early-stopping step.
    """

    name: str = "half-V"
    levels: int = 3
    sequence: tuple[int, ...] | None = None
    epochs: int = 5
    patience: int = 5
    min_rel_improvement: float = 1e-3
    max_epochs: int = 50
    coarse: dict | None = None
    overrides: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sequence is not None:
            object.__setattr__(self, "sequence", tuple(self.sequence))
        if self.coarse is not None:
            if not isinstance(self.coarse, dict):
                raise ValueError(
                    "cycle.coarse must be a table of rule fields such as "
                    f"{{patience = 2, max_epochs = 10}} (got {self.coarse!r})"
                )
            unknown = set(self.coarse) - {"patience", "min_rel_improvement", "max_epochs"}
            if unknown:
                raise ValueError(
                    f"cycle.coarse: unknown rule field(s) {sorted(unknown)}; use patience, "
                    "min_rel_improvement or max_epochs"
                )
            object.__setattr__(self, "coarse", dict(self.coarse))
        overrides = {}
        for key, value in dict(self.overrides).items():
            try:
                index = int(key)
            except (TypeError, ValueError):
                raise ValueError(
                    f"cycle.overrides keys must be step indices such as 0 or -1 (got {key!r})"
                ) from None
            if not isinstance(value, dict):
                raise ValueError(
                    f"cycle.overrides[{key!r}] must be a table of rule fields such as "
                    f"{{epochs = 3}} or {{patience = 10}} (got {value!r})"
                )
            overrides[index] = dict(value)
        object.__setattr__(self, "overrides", overrides)
        self.build()  # validate everything now, with the cycles module's messages

    def build(self) -> Schedule:
        """The :class:`~mgtoolkit.cycles.Schedule` this configuration describes."""
        rules = dict(
            epochs=self.epochs,
            patience=self.patience,
            min_rel_improvement=self.min_rel_improvement,
            max_epochs=self.max_epochs,
        )
        if self.coarse is not None:
            rules["coarse"] = EarlyStopping(
                **{k: v for k, v in rules.items() if k != "epochs"} | self.coarse
            )
        if self.sequence is not None:
            s = Schedule.from_levels(list(self.sequence), **rules)
        else:
            s = schedule(self.name, self.levels, **rules)
        for index, spec in self.overrides.items():
            if not -len(s.steps) <= index < len(s.steps):
                raise ValueError(
                    f"cycle.overrides: step index {index} out of range for the {s.name} "
                    f"schedule of {len(s.steps)} steps (levels {' '.join(map(str, s.levels))})"
                )
            old = s.steps[index].rule
            unknown = set(spec) - {"epochs", "patience", "min_rel_improvement", "max_epochs"}
            if unknown:
                raise ValueError(
                    f"cycle.overrides[{index}]: unknown rule field(s) {sorted(unknown)}; use "
                    "epochs (fixed steps) or patience / min_rel_improvement / max_epochs"
                )
            if "epochs" in spec and len(spec) == 1:
                rule = FixedEpochs(spec["epochs"])
            elif "epochs" in spec:
                raise ValueError(
                    f"cycle.overrides[{index}]: give either epochs (a fixed step) or "
                    "early-stopping fields, not both"
                )
            else:
                base = old if isinstance(old, EarlyStopping) else EarlyStopping()
                rule = dataclasses.replace(base, **spec)
            s = s.with_rule(index, rule)
        return s


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer settings.

    Parameters
    ----------
    name : str
        "adam" or "lbfgs" (L-BFGS with strong-Wolfe line search over the global batch loss).
    lr : float
        Learning rate (Adam) or initial step length (L-BFGS) at the start of every step.
    batch_size : int
        Global mini-batch (the paper: 64); capped at the number of training samples.
    lbfgs_history, lbfgs_max_iter : int
        L-BFGS memory and iterations per mini-batch.
    loss : str
        All three have the FEM solution as their minimizer and need no labels.
        "energy" (default): mean J over the batch (the paper). "scaled_energy": mean of
        J(ν / g, u) with g the per-sample geometric mean of ν — the same minimizer per sample
        (J is linear in ν), but samples of large mean ν no longer dominate the batch gradient.
        "multigrid" (recommended for accuracy): J's gradient preconditioned by one multigrid
        V-cycle of the FEM operator, so the loss is ≈ ½ the mean squared error of u against
        the FEM solution at any contrast (see :mod:`mgtoolkit.train.losses`); the
        docs' performance page compares the three.
    loss_power : float
        The power p (≥ 2) of the error that "multigrid" approximates: its gradient becomes
        ``|c|^(p−2) c``, normalized per sample, close to the gradient of mean |u − u_fem|^p / p.
        2 (default) is the mean squared error; a larger p weights a sample's largest errors
        more, which is what a max-abs-error target asks for. The weights are per sample, so
        the trajectory stays independent of the number of processes.
    lr_schedule : str
        (see :func:`mgtoolkit.train.optim.epoch_lr`) "constant", or "plateau": within each
        step the learning rate starts at ``lr`` and is multiplied by ``lr_factor`` whenever
        the epoch loss has not improved (by the step's ``min_rel_improvement``) for
        ``lr_patience`` epochs, down to ``min_lr``. Keep
        ``lr_patience`` below the early-stopping patience so that a step tries a smaller rate
        before it ends. "cosine": within each step the rate falls from ``lr`` to ``min_lr``
        along half a cosine over the step's epoch cap (``max_epochs``, or ``epochs`` of a fixed
        step), whatever the losses do; pair it with an early-stopping patience of at least the
        cap, or the step may end before the small rates that finish it. The rate is a pure
        function of the step's epoch losses (plateau) or of the epoch index (cosine), so a
        resumed run continues with the same rates.
    lr_factor : float
        Decay factor in (0, 1).
    lr_patience : int
        Epochs without improvement before a decay (≥ 1).
    min_lr : float
        Floor of the decayed rate (> 0).
    warmup_epochs : float
        Every step after the first starts its rate at zero and raises it linearly, batch by
        batch, to the schedule's rate over this many epochs (≥ 0; 0 = off). A fresh Adam at
        the full rate on a new level first undoes part of what the previous level learned.
    """

    name: str = "adam"
    lr: float = 3e-3
    batch_size: int = 64
    lbfgs_history: int = 20
    lbfgs_max_iter: int = 5
    loss: str = "energy"
    loss_power: float = 2.0
    lr_schedule: str = "plateau"
    lr_factor: float = 0.5
    lr_patience: int = 2
    min_lr: float = 1e-5
    warmup_epochs: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in ("adam", "lbfgs"):
            raise ValueError(f"optim.name must be 'adam' or 'lbfgs' (got {self.name!r})")
        _positive_float("optim", "lr", self.lr)
        _positive_int("optim", "batch_size", self.batch_size)
        _positive_int("optim", "lbfgs_history", self.lbfgs_history)
        _positive_int("optim", "lbfgs_max_iter", self.lbfgs_max_iter)
        if self.loss not in LOSSES:
            raise ValueError(f"optim.loss must be one of {', '.join(LOSSES)} (got {self.loss!r})")
        p = self.loss_power
        if isinstance(p, bool) or not isinstance(p, int | float) or not 2 <= p < math.inf:
            raise ValueError(f"optim.loss_power must be a finite number ≥ 2 (got {p!r})")
        if p != 2 and self.loss != "multigrid":
            raise ValueError(
                f"optim.loss_power = {p} applies to loss = 'multigrid' only (got loss = "
                f"{self.loss!r}); set loss = 'multigrid' or leave loss_power at 2"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"optim.lr_schedule must be one of {', '.join(LR_SCHEDULES)} "
                f"(got {self.lr_schedule!r})"
            )
        f = self.lr_factor
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0 < f < 1:
            raise ValueError(f"optim.lr_factor must be a number in (0, 1), e.g. 0.5 (got {f!r})")
        _positive_int("optim", "lr_patience", self.lr_patience)
        _positive_float("optim", "min_lr", self.min_lr)
        w = self.warmup_epochs
        if isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0:
            raise ValueError(f"optim.warmup_epochs must be a number ≥ 0 (got {w!r})")


@dataclass(frozen=True)
class ParallelConfig:
    """How the ranks share the work (docs/spatial.md).

    Parameters
    ----------
    spatial : int
        Ranks per field (≥ 1): every field is split in slabs along its first spatial axis (z
        in 3D, y in 2D) over this many consecutive ranks (:mod:`mgtoolkit.spatial`), and the
        world size / ``spatial`` data-parallel groups share each global batch. It must divide
        the world size, and every level's cells per side must split into slabs of a multiple
        of ``2**model.depth`` planes (checked when training starts, before anything is
        written). 1 (default): data parallelism only. The trajectory does not depend on it
        (up to rounding), so a run may resume with another value.
    levels : dict
        Ranks per field on particular levels, overriding ``spatial`` there: level (1 = the
        finest; a string key in TOML, ``"3" = 1``) → ranks per field. Coarse levels, too small
        to split or cheap enough whole, run data-parallel (1) while fine levels are split; the
        trainer switches layout between steps. Every key must be a level the schedule trains
        on, or level 1 (validation); checked when training starts.
    """

    spatial: int = 1
    levels: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _positive_int("parallel", "spatial", self.spatial)
        if not isinstance(self.levels, dict):
            raise ValueError(
                f"parallel.levels must be a table of level = ranks per field, e.g. "
                f'{{ "3" = 1 }} (got {_short(self.levels)})'
            )
        levels = {}
        for key, value in self.levels.items():
            try:
                level = int(key)
            except (TypeError, ValueError):
                level = 0
            if isinstance(key, bool) or level < 1 or str(level) != str(key).strip():
                raise ValueError(
                    f"parallel.levels keys must be level numbers 1, 2, ... (got {_short(key)})"
                )
            _positive_int("parallel", f"levels.{level}", value)
            levels[str(level)] = value
        object.__setattr__(self, "levels", levels)

    def spatial_at(self, level: int) -> int:
        """Ranks per field on ``level``."""
        return self.levels.get(str(level), self.spatial)

    @property
    def largest(self) -> int:
        """The most ranks per field on any level."""
        return max([self.spatial, *self.levels.values()])


#: Top-level keys that do not change the training trajectory (free to change on resume).
NON_TRAJECTORY = (
    "parallel",
    "target_metric",
    "target",
    "validate_every",
    "checkpoint_minutes",
    "device",
    "channels_last",
    "heap_reuse",
)


def _check_cascade(levels: tuple[int, ...], ranks_per_field: int) -> None:
    """Refuse a cycle or layout that ``adaptation = "cascade"`` cannot train."""
    fix = 'use cycle.name = "half-V" (or "V"), or adaptation = "none" / "grow"'
    moved = False
    for prev, level in itertools.pairwise(levels):
        if level < prev - 1:
            raise ValueError(
                f"adaptation = 'cascade' moves one level finer at a time, but the cycle goes "
                f"from level {prev} to {level} ({list(levels)}); {fix}"
            )
        if level > prev and moved:
            raise ValueError(
                f"adaptation = 'cascade' keeps every coarse network as a stage of the finer "
                f"one, so the cycle must not return to a coarser level once it moved finer "
                f"({list(levels)}); {fix}"
            )
        moved = moved or level < prev
    if ranks_per_field > 1:
        raise ValueError(
            f"adaptation = 'cascade' trains whole fields, but parallel asks for "
            f"{ranks_per_field} ranks per field; set parallel.spatial = 1 (and no "
            "parallel.levels), or adaptation = 'none'"
        )


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs.

    Parameters
    ----------
    data, model, cycle, optim, parallel
        The sections (see each class).
    seed : int
        Seeds the initial weights and every epoch's sample order.
    adaptation : str
        What happens to the network whenever a step moves to a finer level than the previous
        step: "none" (the same weights go on training), "grow" (fresh layers,
        :meth:`mgtoolkit.nn.UNet.grow`) or "cascade" (the network so far becomes a coarse
        stage: u = its prediction on coarsened ν, interpolated, plus a correction this level
        learns; :meth:`mgtoolkit.nn.UNet.cascade`). "cascade" needs a cycle that, once it
        moves finer, moves one level at a time and never back to coarser levels (half-V, V,
        base), and whole fields (one rank per field). With "cascade", validation scores the
        network as the run would leave it: while a coarser level trains, on finest-level ν
        coarsened to that level, u interpolated back; a run that ends there (its target
        reached) is cascaded up to the finest level before its last checkpoint, so the
        network it leaves computes exactly what was scored.
    target_metric, target : str, float
        Optional stop: end the run once the finest-level validation ``target_metric``
        ("energy_gap" or "rel_l2") is ≤ ``target``.
    validate_every : int
        Validate every this many epochs (and always at the end of each step); 0 = only at step
        ends.
    checkpoint_minutes : float
        A checkpoint is also written after any batch when this many minutes have passed since
        the last one (checkpoints are always written at the end of each step).
    device : str
        "auto" (CUDA when available), "cpu" or "cuda".
    channels_last : bool
        Keep activations channels-last (oneDNN's and cuDNN's native layout): the same
        numbers up to rounding, faster convolutions (see benchmarks/throughput.py).
    heap_reuse : bool
        Keep freed memory in the process heap while training
        (:func:`mgtoolkit.runtime.heap_reuse`): every step allocates and frees the same large
        activations, and without it the kernel maps, faults in and zeroes them each time
        (a large share of a 3D step: docs/performance.md). The price is a higher resident
        peak, which :func:`mgtoolkit.plan.training_estimate` counts. Process-wide (glibc
        malloc settings); turn it off where the memory matters more than the time.
    init : str, optional
        Start from the weights of this network instead of random ones: a run directory (its
        latest checkpoint), a checkpoint file or a pretrained model's name. Its architecture
        must be ``model``'s. This continues a network on another level or store — e.g. a
        32³ network trained on at 64³ for a few epochs; the optimizer and schedule start
        afresh. A relative path is taken relative to the config file's directory; a run
        that resumes ignores it (its own checkpoint wins).
    precision : str
        "fp32", or "bf16": the network's training forward pass under bfloat16 autocast
        (:func:`mgtoolkit.nn.memory.autocast`; its cells→nodes head, u, the loss, the weights
        and validation stay float32). Faster on CPUs with bfloat16 instructions (AVX-512 BF16,
        AMX) and GPUs; many times slower on CPUs without them, where the trainer warns
        (measurements in the performance page of the docs).
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: UNetConfig = field(default_factory=UNetConfig)
    cycle: CycleConfig = field(default_factory=CycleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    seed: int = 0
    adaptation: str = "none"
    target_metric: str = "energy_gap"
    target: float | None = None
    validate_every: int = 1
    checkpoint_minutes: float = 10.0
    device: str = "auto"
    channels_last: bool = False
    heap_reuse: bool = True
    precision: str = "fp32"
    init: str | None = None

    def __post_init__(self) -> None:
        _positive_int("config", "seed", self.seed, minimum=0)
        if self.adaptation not in ADAPTATIONS:
            raise ValueError(
                f"adaptation must be one of {', '.join(ADAPTATIONS)} (got {self.adaptation!r})"
            )
        if self.target_metric not in TARGET_METRICS:
            raise ValueError(
                f"target_metric must be one of {', '.join(TARGET_METRICS)} "
                f"(got {self.target_metric!r})"
            )
        if self.target is not None:
            _positive_float("config", "target", self.target)
        _positive_int("config", "validate_every", self.validate_every, minimum=0)
        _positive_float("config", "checkpoint_minutes", self.checkpoint_minutes)
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})"
            )
        if self.init is not None and (not isinstance(self.init, str) or not self.init):
            raise ValueError(
                f"init must be a run directory, checkpoint file or pretrained model name "
                f"(got {str(self.init)[:80]!r})"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda' (got {self.device!r})")
        if self.adaptation == "cascade":
            _check_cascade(self.cycle.build().levels, self.parallel.largest)
        if self.model.dim is None:  # pragma: no cover - UNetConfig validates dim
            raise ValueError("model.dim is required")
        if self.parallel.largest > 1 and self.model.norm not in ("batch", "none"):
            raise ValueError(
                f"model.norm = {self.model.norm!r} normalises each sample over its whole field, "
                f"which a slab does not hold: with {self.parallel.largest} ranks per field "
                "(parallel.spatial / parallel.levels) use model.norm = 'batch' or 'none' (or "
                "one rank per field)"
            )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """Build from nested plain dicts (as read from TOML/YAML), rejecting unknown keys."""
        if not isinstance(raw, dict):
            raise ValueError(f"a training config must be a table of sections (got {type(raw)})")
        sections = {"data": DataConfig, "model": UNetConfig, "cycle": CycleConfig}
        sections["optim"] = OptimConfig
        sections["parallel"] = ParallelConfig
        top = {f.name for f in fields(cls)}
        _reject_unknown("config", raw, top)
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key in sections:
                if not isinstance(value, dict):
                    raise ValueError(f"[{key}] must be a table of settings (got {value!r})")
                known = {f.name for f in fields(sections[key])}
                _reject_unknown(key, value, known)
                kwargs[key] = sections[key](**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dicts (``None`` values dropped), the inverse of :meth:`from_dict`."""

        def clean(obj):
            if isinstance(obj, dict):
                return {str(k): clean(v) for k, v in obj.items() if v is not None}
            if isinstance(obj, list | tuple):
                return [clean(v) for v in obj]
            return obj

        return clean(asdict(self))

    def trajectory_dict(self) -> dict[str, Any]:
        """The settings that determine the training trajectory (compared on resume)."""
        d = self.to_dict()
        for key in NON_TRAJECTORY:
            d.pop(key, None)
        d["data"].pop("store", None)  # a moved store holds the same samples
        d["data"].pop("cache", None)
        return d


def _reject_unknown(section: str, raw: dict, known: set[str]) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in [{section}] of the training config; "
            f"known keys: {', '.join(sorted(known))}"
        )


def load_config(path: str | Path) -> TrainConfig:
    """Read a :class:`TrainConfig` from a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file.

    A relative ``data.store`` is taken relative to the config file's directory.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training config {path} does not exist")
    if path.is_dir():
        raise ValueError(f"training config {path} is a directory; pass the config file")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ValueError(
            f"training config {path} is {size} bytes (at most {MAX_CONFIG_BYTES}); a config is "
            "a short text file — is this the right file?"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            f"training config {path} is not a UTF-8 text file (a binary file?); pass a .toml, "
            ".yaml or .json config"
        ) from None
    if "\x00" in text:
        raise ValueError(f"training config {path} holds NUL bytes: it is not a text file")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        import tomllib

        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path} is not valid TOML: {shorten(exc)}") from None
    elif suffix in (".yaml", ".yml"):
        raw = _load_yaml(path, text)
    elif suffix == ".json":
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{path} is not valid JSON: {shorten(exc)}") from None
    else:
        raise ValueError(f"config {path} must end in .toml, .yaml, .yml or .json")
    if not isinstance(raw, dict):
        raise ValueError(
            f"{path} holds a {type(raw).__name__} at the top level; a training config is a "
            "mapping of sections ([data], [model], [optim], [cycle]) — see examples/"
        )
    store = raw.get("data", {}).get("store") if isinstance(raw.get("data"), dict) else None
    if store and not Path(store).is_absolute():
        raw["data"]["store"] = str((path.parent / store).resolve())
    init = raw.get("init")
    if isinstance(init, str) and init and (path.parent / init).exists():  # not a model's name
        raw["init"] = str((path.parent / init).resolve())
    try:
        return TrainConfig.from_dict(raw)
    except TypeError as exc:  # e.g. a section given a non-keyword structure
        raise ValueError(f"{path}: {exc}") from None


#: Largest config file read (bytes): real configs are a few hundred bytes.
MAX_CONFIG_BYTES = 1 << 20


def shorten(value: Any, limit: int = 80) -> str:
    """``repr``-like text of a user value, cut to ``limit`` characters (never echoed whole)."""
    text = value if isinstance(value, str) and not isinstance(value, Path) else repr(value)
    if isinstance(value, BaseException):
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _load_yaml(path: Path, text: str) -> Any:
    """``yaml.safe_load`` that refuses anchors and aliases (an alias bomb expands to gigabytes)
    before constructing anything; tags such as ``!!python/object`` are refused by safe_load."""
    import yaml

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                line = getattr(event.start_mark, "line", -1) + 1
                raise ValueError(
                    f"{path}, line {line}: YAML anchors and aliases (& and *) are not allowed in "
                    "a training config; write the values out"
                )
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not a valid YAML config: {shorten(exc, 200)}") from None


#: Trajectory settings added after the first release, each with the value that reproduces what
#: a run did before the setting existed: a checkpoint written without the key resumes as if it
#: held that value (settings whose default is None are left out of configs and need no entry).
ADDED_SETTINGS = {
    "optim.loss": "energy",
    "optim.lr_schedule": "constant",
    "optim.lr_factor": 0.5,
    "optim.lr_patience": 2,
    "optim.min_lr": 1e-5,
    "optim.warmup_epochs": 0.0,
    "optim.loss_power": 2.0,
    "data.augment": False,
    "precision": "fp32",
}


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two nested config dicts (``key: old → new``).

    ``old`` is the checkpoint's: a key it lacks takes its :data:`ADDED_SETTINGS` value.
    """
    out = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        a, b = old.get(key, ADDED_SETTINGS.get(name, "<unset>")), new.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, prefix=f"{name}.")
        elif a != b:
            out.append(f"{name}: {a!r} in the checkpoint, {b!r} now")
    return out
