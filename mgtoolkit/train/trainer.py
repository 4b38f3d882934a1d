"""The multigrid trainer: walks a schedule, level by level, minimizing the FEM energy.

The loss (:mod:`mgtoolkit.train.losses`) is built on the discrete energy J of
:func:`mgtoolkit.fem.energy`, averaged over the global mini-batch: J itself (the paper, the
default), J with ν scaled per sample, or J's gradient preconditioned by a multigrid V-cycle
(``OptimConfig.loss``). Each has the FEM solution as its minimizer, so no labels are
needed. The network's output already carries the exact Dirichlet values.

Data parallelism goes through :mod:`mgtoolkit.comm` only (each rank trains on its
contiguous slice of every global batch, gradients are averaged, batch norm is synchronized),
which are no-ops in a single process. With ``parallel.spatial = S > 1`` each group of S ranks
shares the slice of one data-parallel group, every rank holding one slab of each field
(:mod:`mgtoolkit.spatial`); the model, its optimizer and checkpoints stay the whole UNet,
whose slab form shares its parameters. The trainer knows nothing of dask or widgets: it emits
event dicts (see :mod:`mgtoolkit.train.events`) to listeners and to ``<run_dir>/events.jsonl``.

The run directory (config, events, checkpoints, metrics, report) is :mod:`mgtoolkit.rundir`'s.
Resuming a run directory continues exactly where the checkpoint was written: parameters,
optimizer state, batch position and early-stopping history are restored and every epoch's
sample order is a pure function of (seed, step, epoch).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import numpy as np
import torch

from mgtoolkit import comm
from mgtoolkit.cycles import EarlyStopping, Schedule
from mgtoolkit.grids import level_resolution
from mgtoolkit.nn import UNet, symmetry
from mgtoolkit.nn.memory import autocast
from mgtoolkit.rundir import (
    Checkpoint,
    CheckpointError,
    RunDir,
    TrainState,
    atomic_write_text,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from mgtoolkit.runtime import heap_reuse
from mgtoolkit.spatial import SlabLayout, SlabUNet, slab_loss, to_slabs
from mgtoolkit.train.config import TrainConfig, config_differences
from mgtoolkit.train.events import EventLog, Listener
from mgtoolkit.train.losses import batch_loss
from mgtoolkit.train.optim import adam, epoch_lr, warmup_factor
from mgtoolkit.train.report import RunResult, write_metrics, write_report
from mgtoolkit.train.toml import to_toml
from mgtoolkit.train.validation import validation_metrics

__all__ = ["Trainer", "train"]

#: Largest level (training ν, bytes) held in memory when ``data.cache`` is on; larger levels
#: are read batch by batch (a 512³ level of 64 samples would be 32 GiB).
CACHE_BYTES = 2 * 2**30
#: Samples used to set the input scale of log ν.
SCALE_SAMPLES = 64


class _Stopped(Exception):
    """Internal: a stop was requested (see :func:`request_stop`)."""


class Trainer:
    """Train a :class:`~mgtoolkit.nn.UNet` over a multigrid schedule.

    Parameters
    ----------
    config : TrainConfig
    run_dir : path-like
        Directory for config, events, checkpoints, metrics and report (created).
    listeners : iterable of callables
        Each receives every event dict (on rank 0 only).
    progress : bool
        Show tqdm progress bars (rank 0 only).
    resume : bool
        Continue from ``run_dir/checkpoints/latest.pt`` when it exists. With False an existing
        checkpoint is an error (choose a new directory).

    Notes
    -----
    Subclasses may override :meth:`loss` (per-batch loss) or :meth:`validate`.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        listeners: tuple[Listener, ...] | list[Listener] = (),
        progress: bool = True,
        resume: bool = True,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig (got {type(config).__name__})")
        self.config = config
        self.rundir = RunDir(run_dir)
        self.run_dir = self.rundir.path
        self.rank, self.world_size = comm.world()
        self.progress = progress and self.rank == 0
        self.schedule: Schedule = config.cycle.build()
        self.device = self._device(config.device)
        self._check_store()
        self._warn_slow_precision()
        checkpoint = None
        if self.rundir.holds_run():
            if not resume:
                raise FileExistsError(
                    f"{self.run_dir} already holds a run ({self.rundir.latest}); resume it or "
                    "choose a new run directory"
                )
            checkpoint = self._read_checkpoint()
        # A network to start from is read before anything is written: a bad init loses nothing.
        initial = None
        if checkpoint is None and config.init is not None:
            initial = self._initial_model(config.init)
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.rundir.config, to_toml(config))
        self.log = EventLog(
            self.rundir.name,
            self.rundir.events if self.rank == 0 else None,
            listeners if self.rank == 0 else (),
        )
        self._build(checkpoint, initial)
        self._val = None  # finest-level validation data, loaded on first use
        self._last_checkpoint = time.monotonic()

    # ------------------------------------------------------------------ setup
    def _warn_slow_precision(self) -> None:
        """bf16 convolutions on a CPU without bfloat16 instructions are far slower than fp32
        (docs/performance.md, design measurements): say so before the run is wasted."""
        capability = torch.backends.cpu.get_cpu_capability()
        if (
            self.config.precision == "bf16"
            and self.device.type == "cpu"
            and "AVX512" not in capability
            and self.rank == 0
        ):
            import warnings

            warnings.warn(
                f"precision = 'bf16' on this CPU ({capability}, no bfloat16 instructions) makes "
                "the convolutions many times slower than fp32; set precision = 'fp32'",
                stacklevel=3,
            )

    @staticmethod
    def _device(name: str) -> torch.device:
        if name == "cpu":
            return torch.device("cpu")
        if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
            if not torch.cuda.is_available():
                raise ValueError("device = 'cuda' but torch sees no CUDA device; use 'auto'/'cpu'")
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _check_store(self) -> None:
        from mgtoolkit.data.store import check_store, completed

        store = self.config.data.store
        attrs = check_store(store)
        n_samples, dim, n = int(attrs["samples"]), int(attrs["dim"]), int(attrs["resolution"])
        if self.schedule.coarsest > attrs["levels"]:
            raise ValueError(
                f"store {store} has levels 1..{attrs['levels']} but the {self.schedule.name} "
                f"schedule needs level {self.schedule.coarsest} "
                f"(levels {' '.join(map(str, self.schedule.levels))}); use cycle.levels ≤ "
                f"{attrs['levels']} or regenerate the store with more levels"
            )
        for level in sorted(set(self.schedule.levels)):
            missing = int((~completed(store, level)).sum())
            if missing:
                raise ValueError(
                    f"store {store}: {missing} samples of ν at level {level} are incomplete; "
                    "finish generating it (rerun `mgtoolkit data generate`, which resumes)"
                )
        if dim != self.config.model.dim:
            raise ValueError(
                f"store {store} holds {dim}D samples but model.dim = {self.config.model.dim}; "
                f"set model.dim = {dim}"
            )
        self._has_u_fem = bool(completed(store, 1, "u_fem").all())
        if not self._has_u_fem and self.config.data.val_samples and comm.world()[0] == 0:
            import warnings

            warnings.warn(
                f"store {store} has no (complete) u_fem at level 1: validation reports the "
                "energy only, without the energy gap and error vs FEM. Add the reference "
                f"with `mgtoolkit fem solve {store} --level 1` and rerun.",
                stacklevel=4,
            )
        self.level_n = {lv: level_resolution(n, lv) for lv in range(1, int(attrs["levels"]) + 1)}
        val = self.config.data.val_samples
        n_train = n_samples - val
        if self.config.data.train_samples is not None:
            if self.config.data.train_samples > n_train:
                raise ValueError(
                    f"data.train_samples = {self.config.data.train_samples} but the store has "
                    f"{n_samples} samples of which {val} are held out; use at most {n_train}"
                )
            n_train = self.config.data.train_samples
        if n_train < 1:
            raise ValueError(
                f"store {store} has {n_samples} samples and data.val_samples = {val}: no "
                "samples are left to train on; lower val_samples or generate more samples"
            )
        self.dim, self.n = dim, n
        self.train_indices = np.arange(n_train)
        self._check_layouts(min(self.config.optim.batch_size, n_train))
        self.val_indices = np.arange(n_samples - val, n_samples)

    def _check_layouts(self, global_batch: int) -> None:
        """Build the layout of every level trained on (and of level 1, where validation runs);
        refuse, before anything is written, a spatial size that does not divide the world,
        slabs too thin at some level, a layout for a level not trained on, or a global batch
        the data groups cannot share."""
        par = self.config.parallel
        used = sorted({1, *self.schedule.levels})
        extra = sorted(int(k) for k in par.levels if int(k) not in used)
        if extra:
            raise ValueError(
                f"parallel.levels sets a layout for level {extra[0]}, which the "
                f"{self.schedule.name} schedule does not use: choose among levels "
                f"{', '.join(map(str, used))}"
            )
        self._layouts: dict[int, SlabLayout] = {}
        for level in used:
            size = par.spatial_at(level)
            what = f"parallel.levels.{level}" if str(level) in par.levels else "parallel.spatial"
            try:
                layout = SlabLayout(size, self.rank, self.world_size)
                if size > 1:  # one rank per field: the data-parallel checks of comm apply
                    layout.check(self.level_n[level], depth=self.config.model.depth)
                    layout.batch(global_batch)
            except ValueError as exc:
                raise ValueError(f"{what} = {size} at level {level}: {exc}") from None
            self._layouts[level] = layout

    def _slab(self, level: int) -> SlabUNet | None:
        """The network on slabs for ``level``'s layout (None: whole fields), sharing the
        model's parameters."""
        if level not in self._slabs:
            layout = self._layouts[level]
            self._slabs[level] = to_slabs(self.model, layout) if layout.size > 1 else None
        return self._slabs[level]

    def _use_level(self, level: int) -> None:
        """Train with ``level``'s layout from now on (the layout can change between steps:
        every rank holds the whole parameters, so nothing moves but the data)."""
        self.layout, self.slab = self._layouts[level], self._slab(level)

    def _param_groups(self) -> list[list[torch.nn.Parameter]]:
        """Base parameters, then one group per growth (read from the live model)."""
        grown = [
            [*a.parameters(), *b.parameters()]
            for a, b in zip(self.model.grown_in, self.model.grown_out, strict=True)
        ]
        ids = {id(p) for g in grown for p in g}
        return [[p for p in self.model.parameters() if id(p) not in ids], *grown]

    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.config.optim
        groups = self._param_groups()
        if o.name == "adam":
            return adam([{"params": g} for g in groups], lr=o.lr)
        # L-BFGS has a single parameter group; after growth it is rebuilt over all parameters.
        return torch.optim.LBFGS(
            [p for g in groups for p in g],
            lr=o.lr,
            history_size=o.lbfgs_history,
            max_iter=o.lbfgs_max_iter,
            line_search_fn="strong_wolfe",
        )

    def _initial_model(self, source: str) -> UNet:
        """``[model]``'s network with the weights of ``source`` (``TrainConfig.init``)."""
        try:
            start = load_model(source)
        except (CheckpointError, FileNotFoundError) as exc:  # say which setting named it
            raise type(exc)(f"init = {source!r}: {exc}") from None
        if start.config != self.config.model or start.growth or start.cascades:
            raise ValueError(
                f"init = {source!r} is a different network ({start.config}"
                f"{f', grown {start.growth} times' if start.growth else ''}"
                f"{f', cascaded {start.cascades} times' if start.cascades else ''}) than [model] "
                f"({self.config.model}); copy its [model] section or drop init"
            )
        model = UNet(self.config.model)
        model.load_state_dict(start.state_dict())  # its input scale (log_nu_scale) included
        return model.train()

    def _build(self, checkpoint: Checkpoint | None, initial: UNet | None = None) -> None:
        torch.manual_seed(self.config.seed)
        if checkpoint is not None:
            model = checkpoint.build_model()
        elif initial is not None:
            model = initial
        else:
            model = UNet(self.config.model)
            model.log_nu_scale.fill_(self._log_nu_scale())
        self.model = comm.convert_sync_batchnorm(model).to(self.device)
        if self.config.channels_last:
            # Activations only, the layout benchmarks/throughput.py measures: channels-last
            # weights (module.to(memory_format=...)) give channels-last gradients, which
            # torch's L-BFGS cannot flatten (it uses .view).
            self.model.channels_last = True
        comm.broadcast_module(self.model)
        self._slabs: dict[int, SlabUNet | None] = {}  # per level, built on first use
        self._use_level(self.schedule.steps[0].level)
        self.optimizer = self._make_optimizer()
        if checkpoint is not None:
            self.optimizer.load_state_dict(checkpoint.optimizer)
            self.state = checkpoint.state
            self.resumed = True
            return
        self.resumed = False
        self.state = TrainState()

    def _log_nu_scale(self) -> float:
        """Std of per-sample-centred log ν over up to 64 finest-level training samples."""
        nu = self._load(1, self.train_indices[:SCALE_SAMPLES])
        log_nu = torch.log(nu.double())
        spatial = tuple(range(1, log_nu.dim()))
        centred = log_nu - log_nu.mean(dim=spatial, keepdim=True)
        scale = float(centred.std())
        return scale if scale > 1e-6 else 1.0  # constant ν: nothing to scale

    # ------------------------------------------------------------------ data
    def _load(
        self, level: int, indices, variable: str = "nu", *, planes: slice | None = None
    ) -> torch.Tensor:
        """Samples ``indices`` of ``variable`` at ``level``, stacked: (len,) + field shape
        (with ``planes``, only those planes of the first spatial axis)."""
        from mgtoolkit.data import LevelDataset

        ds = LevelDataset(
            self.config.data.store, level, variables=(variable,), indices=indices, planes=planes
        )
        return torch.stack([ds[i][variable] for i in range(len(ds))])

    def _slabs_read(self) -> bool:
        """Whether each rank reads only its slab of the training fields: with spatial
        parallelism, unless augmentation (whose maps reverse or swap the split axis) needs
        the whole fields first."""
        return self.slab is not None and not self.config.data.augment

    def _level_data(self, level: int):
        """A function from training positions (array of int) to ν on ``level``: whole fields,
        or this rank's slab of them (:meth:`_slabs_read`)."""
        planes = self.layout.cells(self.level_n[level]) if self._slabs_read() else None
        share = self.layout.size if planes is not None else 1
        nbytes = 4 * len(self.train_indices) * self.level_n[level] ** self.dim // share
        if self.config.data.cache and nbytes <= CACHE_BYTES:
            all_nu = self._load(level, self.train_indices, planes=planes)
            return lambda pos: all_nu[torch.as_tensor(pos)]
        return lambda pos: self._load(level, self.train_indices[pos], planes=planes)

    def _validation_data(self):
        if self._val is None:
            if len(self.val_indices) == 0:
                self._val = {}
            else:
                nu = self._load(1, self.val_indices)
                u = None
                if self._has_u_fem:
                    u = self._load(1, self.val_indices, "u_fem")
                self._val = {"nu": nu, "u_fem": u}
        return self._val

    # ------------------------------------------------------------------ numerics
    def loss(self, nu: torch.Tensor) -> torch.Tensor:
        """The batch loss of the network's prediction over ``nu`` (``OptimConfig.loss``).

        ``nu``: (B,) + (n,) * dim on cells, on the training device. Returns a 0-d tensor. With
        spatial parallelism ``nu`` is this rank's slab of the fields (``layout.split``); the
        value is the loss of the whole fields and the gradient is that of this rank's slab
        (:func:`mgtoolkit.spatial.slab_loss`).
        """
        o = self.config.optim
        if self.slab is not None:
            with autocast(self.config.precision, device=self.device, model=self.slab.net):
                u = self.slab(nu)
            return slab_loss(o.loss, nu, u, self.layout, power=o.loss_power)
        with autocast(self.config.precision, device=self.device, model=self.model):
            u = self.model(nu)  # float32 in either precision (the head runs in float32)
        return batch_loss(self.config.optim.loss, nu, u, power=self.config.optim.loss_power)

    def _train_batch(self, nu: torch.Tensor) -> float:
        self.model.train()
        if self.slab is not None:
            self.slab.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.config.optim.name == "adam":
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss(nu)
            loss.backward()
            comm.average_gradients(params)
            self.optimizer.step()
            return float(comm.all_reduce_mean(loss.detach()))

        def closure():
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss(nu)
            loss.backward()
            comm.average_gradients(params)
            return comm.all_reduce_mean(loss.detach())

        return float(self.optimizer.step(closure))

    @torch.no_grad()
    def validate(self, level: int = 1) -> dict:
        """Finest-level metrics on the held-out samples (empty dict when there are none).

        Returns ``val_energy`` (mean J of the prediction) and, with u_fem in the store,
        ``val_energy_gap`` = mean (J(u_net) − J(u_fem)) / J(u_fem), ``val_rel_l2`` = mean
        ‖u_net − u_fem‖ / ‖u_fem‖ over nodes, ``val_max_abs`` = max |u_net − u_fem|.
        ``level``: the level being trained. With ``adaptation = "cascade"`` the network is
        scored as the run would deliver it (:meth:`_deliver`): run on ν coarsened to that
        level and interpolated.
        """
        data = self._validation_data()
        if not data:
            return {}
        self.model.eval()
        model = self.model
        slab, layout = self._slab(1), self._layouts[1]
        if slab is not None:  # each rank runs its slab of the finest level; u is gathered

            def model(nu: torch.Tensor) -> torch.Tensor:
                return slab.predict(layout.split(nu, grid="cells", dim=self.dim))

        cascade = self.config.adaptation == "cascade" and level > 1  # (no slabs then)
        self.model.predict_at = self.level_n[level] if cascade else None
        try:
            return validation_metrics(
                model,
                data["nu"],
                data["u_fem"],
                chunk=max(1, self.config.optim.batch_size),
                device=self.device,
            )
        finally:
            self.model.predict_at = None

    # ------------------------------------------------------------------ checkpoints
    def _read_checkpoint(self) -> Checkpoint:
        ckpt = read_checkpoint(self.rundir.latest)
        diffs = config_differences(ckpt.config, self.config.trajectory_dict())
        if diffs:
            raise CheckpointError(
                f"checkpoint {self.rundir.latest} was written by another model/configuration — "
                + "; ".join(diffs)
                + ". Resume with the checkpoint's configuration (its config.toml) or start a "
                "new run directory"
            )
        return ckpt

    def checkpoint(self, *, step_end: bool = False) -> Path:
        """Write ``checkpoints/latest.pt`` atomically (and ``step-NNN.pt`` at step ends)."""
        path = self.rundir.latest
        if self.rank == 0:
            body = Checkpoint(
                config=self.config.trajectory_dict(),
                growth=self.model.growth,
                cascades=self.model.cascades,
                model=self.model.state_dict(),
                optimizer=self.optimizer.state_dict(),
                state=self.state,
            )
            save_checkpoint(path, body)
            if step_end:
                save_checkpoint(self.rundir.step_checkpoint(self.state.step), body)
            s = self.state
            self.log.emit("checkpoint", path=str(path), step=s.step, epoch=s.epoch, batch=s.batch)
        self._last_checkpoint = time.monotonic()
        return path

    # ------------------------------------------------------------------ the loop
    def run(self) -> RunResult:
        """Train until the schedule completes or the target is reached; return the result."""
        t_start = time.monotonic()
        elapsed0 = self.state.elapsed_s
        steps = self.schedule.steps
        # Decided collectively (every rank evaluates it) before rank 0 reports it.
        transport = comm.transport(torch.zeros(1)) if self.world_size > 1 else "none"
        self.log.emit(
            "run_start",
            transport=transport,
            steps=len(steps),
            levels=list(self.schedule.levels),
            schedule=str(self.schedule),
            dim=self.dim,
            n=self.n,
            train_samples=len(self.train_indices),
            val_samples=len(self.val_indices),
            parameters=sum(p.numel() for p in self.model.parameters()),
            world_size=self.world_size,
            spatial=self.config.parallel.spatial,
            resumed=self.resumed,
        )
        try:
            if not self.state.validations and self.state.step == 0:
                self._validate_and_check(0, steps[0].level)  # the starting point of the curves
            stopped = False
            try:
                with heap_reuse() if self.config.heap_reuse else contextlib.nullcontext():
                    while self.state.reason is None and self.state.step < len(steps):
                        self._run_step(self.state.step)
                        self.state.elapsed_s = elapsed0 + time.monotonic() - t_start
            except _Stopped:
                stopped = True
                if self.rank == 0:
                    self.rundir.clear_stop()
            if self.state.reason is None and not stopped:
                self.state.reason = "schedule complete"
            self.state.elapsed_s = elapsed0 + time.monotonic() - t_start
            if not stopped:
                self._deliver()
            self.checkpoint()  # a stopped run keeps reason None here: a rerun resumes it
            result = self._result()
            if stopped:
                result.reason = "stopped"
            if self.rank == 0:
                write_report(self.rundir, result, schedule=self.schedule, config=self.config)
            self.log.emit(
                "run_end",
                reason=result.reason,
                wall_s=result.wall_s,
                elapsed_s=result.elapsed_s,
                time_to_target_s=result.time_to_target_s,
                **result.validation,
            )
            return result
        except Exception as exc:
            self.log.emit("error", message=str(exc), error_type=type(exc).__name__)
            raise
        finally:
            self.log.close()

    def _deliver(self) -> None:
        """A finished cascade run that ended on a coarser level (its target reached there)
        is cascaded up to the finest level, so the network it leaves runs on finest-level
        fields and computes what validation scored (the coarse network on coarsened ν,
        interpolated: each cascade starts with a zero correction)."""
        s = self.state
        level = s.prev_level if s.prev_level is not None else self.schedule.steps[0].level
        if self.config.adaptation != "cascade" or level == 1:
            return
        for _ in range(level - 1):
            self.model.cascade()
        s.prev_level = 1  # delivered: a rerun of the finished run cascades nothing more
        self.optimizer = self._make_optimizer()  # over the delivered network's parameters

    def _adapt(self, level: int) -> None:
        prev = self.state.prev_level
        if self.config.adaptation != "none" and prev is not None and level < prev:
            if self.config.adaptation == "grow":
                self.model.grow()
            else:
                self.model.cascade()
            # New batch-norm layers must be synchronized too (a no-op in one process).
            self.model = comm.convert_sync_batchnorm(self.model)
            comm.broadcast_module(self.model)
            self._slabs.clear()  # the slab forms of the grown network are built anew
            # The fresh parameters join the optimizer that every step start rebuilds.

    def _run_step(self, k: int) -> None:
        s = self.state
        step = self.schedule.steps[k]
        level, n = step.level, self.level_n[step.level]
        if not s.started:
            self._adapt(level)
        self._use_level(level)
        if not s.started:
            # Fresh optimizer state per step: Adam's second moments from the previous level
            # (converged there: tiny gradients) would turn the new level's first, large
            # gradients into steps ~100× the learning rate — measured to saturate the sigmoid
            # output for good when a half-V moved from 32² to 64². L-BFGS's curvature pairs
            # belong to the previous level's loss as well.
            self.optimizer = self._make_optimizer()
            s.started, s.epoch, s.batch, s.step_losses, s.step_wall_s = True, 0, 0, [], 0.0
            s.epoch_loss_sum, s.epoch_wall_s = 0.0, 0.0
        self.log.emit(
            "step_start", step=k, level=level, n=n, rule=str(step.rule), spatial=self.layout.size
        )
        get = self._level_data(level)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=step.rule.max_epochs,
                initial=s.epoch,
                desc=f"step {k + 1}/{len(self.schedule.steps)} level {level} ({n}^{self.dim})",
                unit="epoch",
                leave=False,
            )
        try:
            while not step.rule.done(s.step_losses) and s.reason is None:
                self._run_epoch(k, level, get)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{s.step_losses[-1]:.5g}")
        finally:
            if bar is not None:
                bar.close()
        if not s.validations or s.validations[-1].get("_at") != [k, s.epoch]:
            self._validate_and_check(k, level)
        val = s.validations[-1] if s.validations else {}
        row = {
            "step": k,
            "level": level,
            "n": n,
            "rule": str(step.rule),
            "epochs": s.epoch,
            "loss": s.step_losses[-1] if s.step_losses else math.nan,
            "wall_s": s.step_wall_s,
            "samples_per_s": (s.epoch * self._epoch_samples() / s.step_wall_s)
            if s.step_wall_s > 0
            else math.nan,
            "val_energy_gap": val.get("val_energy_gap", math.nan),
            "val_rel_l2": val.get("val_rel_l2", math.nan),
        }
        s.steps.append(row)
        self.log.emit(
            "step_end",
            step=k,
            level=level,
            n=n,
            rule=row["rule"],
            epochs=row["epochs"],
            loss=row["loss"],
            wall_s=row["wall_s"],
        )
        s.step, s.started, s.epoch, s.batch, s.prev_level = k + 1, False, 0, 0, level
        self.checkpoint(step_end=True)
        if self.rank == 0:
            write_metrics(self.rundir, self.state.steps)

    def _global_batch(self) -> int:
        return min(self.config.optim.batch_size, len(self.train_indices))

    def _epoch_samples(self) -> int:
        b = self._global_batch()
        return -(-len(self.train_indices) // b) * b

    def _run_epoch(self, k: int, level: int, get) -> None:
        s = self.state
        epoch = s.epoch
        B = self._global_batch()
        rng = np.random.default_rng([self.config.seed, k, epoch])
        order = comm.padded_order(rng.permutation(len(self.train_indices)), B)
        n_batches = len(order) // B
        mine = comm.local_slice(B) if self.layout.size == 1 else self.layout.batch(B)
        # Symmetry maps per position of the epoch's order, drawn for the global order so that
        # they do not depend on the number of ranks (and a resumed epoch draws the same ones).
        maps = (
            symmetry.random_map(self.dim, rng, size=len(order))
            if self.config.data.augment
            else None
        )
        lr = self._epoch_lr(k)
        if s.batch == 0:
            # Batch-norm running statistics (a plain average, momentum=None) restart every
            # epoch: averaged over a whole step they would mix in the activations of the
            # step's first, much worse weights (and, at a step's start, the previous level's).
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                    m.reset_running_stats()
            s.epoch_loss_sum, s.epoch_wall_s = 0.0, 0.0
            self.log.emit("epoch_start", step=k, level=level, epoch=epoch, lr=lr, batches=n_batches)
        for b in range(s.batch, n_batches):
            t0 = time.perf_counter()
            warm = warmup_factor(self.config.optim, k, epoch * n_batches + b, n_batches)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * warm
            nu = get(order[b * B : (b + 1) * B][mine]).to(self.device, non_blocking=True)
            if maps is not None:
                nu = symmetry.apply_each(maps[b * B : (b + 1) * B][mine], nu)
            if self.slab is not None and not self._slabs_read():
                nu = self.layout.split(nu, grid="cells", dim=self.dim)
            loss = self._train_batch(nu)
            dt = time.perf_counter() - t0
            s.batch = b + 1
            s.epoch_loss_sum += loss
            s.epoch_wall_s += dt
            s.step_wall_s += dt
            s.wall_s += dt
            s.level_wall_s[level] = s.level_wall_s.get(level, 0.0) + dt
            self.log.emit(
                "batch_end",
                step=k,
                level=level,
                epoch=epoch,
                batch=b,
                loss=loss,
                samples_per_s=B / dt if dt > 0 else math.nan,
            )
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss} at step {k}, level {level}, epoch {epoch}, batch {b}; "
                    "lower optim.lr or check the data for extreme ν"
                )
            if self._stop_requested():
                self.checkpoint()
                raise _Stopped
            minutes = (time.monotonic() - self._last_checkpoint) / 60
            if minutes >= self.config.checkpoint_minutes and b + 1 < n_batches:
                self.checkpoint()
        mean = s.epoch_loss_sum / n_batches
        s.step_losses.append(mean)
        s.epoch, s.batch = epoch + 1, 0
        self.log.emit(
            "epoch_end",
            step=k,
            level=level,
            epoch=epoch,
            loss=mean,
            wall_s=s.epoch_wall_s,
            samples_per_s=len(order) / s.epoch_wall_s if s.epoch_wall_s > 0 else math.nan,
        )
        every = self.config.validate_every
        if every and s.epoch % every == 0:
            self._validate_and_check(k, level)

    def _epoch_lr(self, k: int) -> float:
        """Learning rate of step ``k``'s next epoch (``OptimConfig.lr_schedule``)."""
        rule = self.schedule.steps[k].rule
        threshold = (
            rule.min_rel_improvement
            if isinstance(rule, EarlyStopping)
            else self.config.cycle.min_rel_improvement
        )
        return epoch_lr(
            self.config.optim,
            self.state.step_losses,
            min_rel_improvement=threshold,
            max_epochs=rule.max_epochs,
        )

    def _stop_requested(self) -> bool:
        flag = self.rundir.stop_requested()
        if self.world_size > 1:  # every rank must stop at the same batch
            flag = bool(comm.all_reduce_sum(torch.tensor([float(flag)])).item() > 0)
        return flag

    def _validate_and_check(self, k: int, level: int) -> None:
        s = self.state
        metrics = self.validate(level)
        if not metrics:
            return
        self.log.emit(
            "validation",
            step=k,
            level=1,
            train_level=level,
            epoch=s.epoch,
            wall_s=s.wall_s,
            **metrics,
        )
        s.validations.append(
            {
                **metrics,
                "step": k,
                "train_level": level,
                "wall_s": s.wall_s,
                "_at": [k, s.epoch],
            }
        )
        target, key = self.config.target, f"val_{self.config.target_metric}"
        if target is not None and key in metrics and metrics[key] <= target:
            if s.time_to_target_s is None:
                s.time_to_target_s = s.wall_s
            s.reason = "target reached"

    # ------------------------------------------------------------------ outputs
    def _result(self) -> RunResult:
        s = self.state
        clean = [{k: v for k, v in d.items() if k != "_at"} for d in s.validations]
        last = clean[-1] if clean else {}
        return RunResult(
            run_dir=self.run_dir,
            reason=s.reason,
            wall_s=s.wall_s,
            elapsed_s=s.elapsed_s,
            time_to_target_s=s.time_to_target_s,
            final_loss=s.steps[-1]["loss"] if s.steps else math.nan,
            validation={k: v for k, v in last.items() if k.startswith("val_")},
            level_wall_s=dict(sorted(s.level_wall_s.items())),
            steps=list(s.steps),
            validations=clean,
        )


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    listeners: tuple[Listener, ...] | list[Listener] = (),
    progress: bool = True,
    resume: bool = True,
) -> RunResult:
    """Build a :class:`Trainer` and run it (see there for the parameters)."""
    return Trainer(config, run_dir, listeners=listeners, progress=progress, resume=resume).run()
