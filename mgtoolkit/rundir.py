"""The run directory: its layout, atomic writes, stop requests, checkpoints and their models.

Every module that reads or writes a run directory goes through this one. Layout::

    config.toml          the configuration (reload it with mgtoolkit.train.load_config)
    events.jsonl         every event, one JSON object per line (mgtoolkit.train.events)
    checkpoints/         latest.pt (also every N minutes) and step-NNN.pt after each step
    metrics.csv          one row per finished step
    report.md, report.json   the final report
    STOP                 (transient) created by request_stop(): stop after the current batch

A checkpoint is a ``torch.save`` file of plain containers, numbers, strings and tensors. It is
read with ``torch.load(weights_only=True)``, which refuses anything else: loading a checkpoint
never runs code from the file.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from mgtoolkit.nn import UNet

__all__ = [
    "CHECKPOINT_FORMAT",
    "STOP_FILE",
    "Checkpoint",
    "CheckpointError",
    "RunDir",
    "TrainState",
    "atomic_write_text",
    "checkpoint_path",
    "load_model",
    "read_checkpoint",
    "request_stop",
    "save_checkpoint",
]

#: A file of this name in the run directory asks a running trainer to stop after its batch.
STOP_FILE = "STOP"
#: Version of the checkpoint layout; a file with another version is refused.
CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A file is missing, unreadable or not an mgtoolkit checkpoint."""


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (nothing is created until written)."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def events(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def latest(self) -> Path:
        return self.checkpoints / "latest.pt"

    def step_checkpoint(self, step: int) -> Path:
        """The checkpoint written when ``step`` steps had finished (``step-001.pt`` after the
        first step, whose index is 0)."""
        return self.checkpoints / f"step-{step:03d}.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    @property
    def report_json(self) -> Path:
        return self.path / "report.json"

    @property
    def stop(self) -> Path:
        return self.path / STOP_FILE

    def stop_requested(self) -> bool:
        return self.stop.exists()

    def clear_stop(self) -> None:
        self.stop.unlink(missing_ok=True)

    def holds_run(self) -> bool:
        """Whether a run has written its checkpoint here (a rerun would resume it)."""
        return self.latest.exists()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` so that readers see the old file or the new one, never a torn one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def request_stop(run_dir: str | os.PathLike, *, create: bool = False) -> Path:
    """Ask the run training in ``run_dir`` to stop cleanly; returns the flag file's path.

    The trainer checks for ``<run_dir>/STOP`` after every batch (all ranks agree on it with one
    all-reduce, so they stop at the same batch), writes a checkpoint, ends with reason
    "stopped" and removes the file: running the same training again resumes where it stopped.

    Parameters
    ----------
    create : bool
        Create ``run_dir`` if it does not exist yet (a launcher stopping a run whose trainer
        has not started). By default a missing directory is an error, so that a mistyped path
        creates nothing.
    """
    run = RunDir(run_dir)
    if create:
        run.path.mkdir(parents=True, exist_ok=True)
    elif not run.path.is_dir():
        raise FileNotFoundError(f"no run directory {run.path}; pass the run's output directory")
    run.stop.touch()
    return run.stop


@dataclass
class TrainState:
    """Where a training run stands: everything besides weights and optimizer a resume needs.

    Attributes
    ----------
    step : int
        Index of the current step of the schedule.
    started : bool
        Whether the current step's start actions (adaptation, optimizer reset) ran.
    epoch, batch : int
        Epochs finished in the current step; batches finished in the current epoch.
    epoch_loss_sum, epoch_wall_s : float
        Running sums of the current epoch (loss over batches; training seconds).
    step_losses : list of float
        Epoch mean losses of the current step (early stopping and rate schedules read them).
    step_wall_s, wall_s, elapsed_s : float
        Training seconds of the current step and of the run; wall seconds of the run,
        across resumes.
    level_wall_s : dict of int to float
        Training seconds per level.
    steps : list of dict
        Metrics rows of finished steps.
    validations : list of dict
        Every validation of the run.
    time_to_target_s : float or None
        Training seconds when the target was first reached.
    reason : str or None
        Why the run ended; None while it runs (or when it was stopped and can resume).
    prev_level : int or None
        Level of the last finished step.
    """

    step: int = 0
    started: bool = False
    epoch: int = 0
    batch: int = 0
    epoch_loss_sum: float = 0.0
    epoch_wall_s: float = 0.0
    step_losses: list[float] = field(default_factory=list)
    step_wall_s: float = 0.0
    wall_s: float = 0.0
    elapsed_s: float = 0.0
    level_wall_s: dict[int, float] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    validations: list[dict] = field(default_factory=list)
    time_to_target_s: float | None = None
    reason: str | None = None
    prev_level: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values only (what a ``weights_only`` load accepts)."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainState:
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in raw.items() if k in known})
        state.level_wall_s = {int(k): float(v) for k, v in state.level_wall_s.items()}
        return state


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and tuples turned into Python numbers and lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None or torch.is_tensor(value):
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


@dataclass
class Checkpoint:
    """The contents of a checkpoint file.

    Attributes
    ----------
    config : dict
        The training configuration that shapes the trajectory (``TrainConfig.trajectory_dict``);
        ``config["model"]`` builds the network.
    growth : int
        Blocks the network grew by (architectural adaptation).
    model : dict of str to Tensor
        The network's ``state_dict``.
    optimizer : dict
        The optimizer's ``state_dict`` (empty for a model-only file).
    state : TrainState
    cascades : int
        Coarse stages the network holds (:meth:`mgtoolkit.nn.UNet.cascade`; 0 in files
        written before cascades existed).
    """

    config: dict
    growth: int
    model: dict
    optimizer: dict = field(default_factory=dict)
    state: TrainState = field(default_factory=TrainState)
    cascades: int = 0

    def build_model(self) -> UNet:
        """The network with these weights (in training mode, on the CPU)."""
        return UNet.from_state(
            self.config["model"], self.model, growth=self.growth, cascades=self.cascades
        )


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "format": CHECKPOINT_FORMAT,
        "config": _plain(checkpoint.config),
        "growth": int(checkpoint.growth),
        "cascades": int(checkpoint.cascades),
        "model": checkpoint.model,
        "optimizer": checkpoint.optimizer,
        "state": checkpoint.state.to_dict(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(body, tmp)
    os.replace(tmp, path)  # readers see the old or the new file, never a torn one
    return path


def checkpoint_path(source: str | os.PathLike) -> Path:
    """The checkpoint file of ``source``.

    ``source`` is a run directory (its latest checkpoint), a checkpoint file, or the name of a
    pretrained model (:mod:`mgtoolkit.pretrained`); a path that exists wins over a name.
    """
    from mgtoolkit import pretrained

    if not Path(source).exists() and (packaged := pretrained.find(str(source))) is not None:
        return packaged.checkpoint
    source = Path(source)
    path = RunDir(source).latest if source.is_dir() else source
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint at {path}; pass a run directory written by `mgtoolkit train`, a "
            "checkpoint file, or the name of a pretrained model "
            f"({', '.join(pretrained.names()) or 'none installed'}; see `mgtoolkit models`)"
        )
    return path


def read_checkpoint(source: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint without executing anything from the file.

    Parameters
    ----------
    source : path-like or str
        A run directory (its ``checkpoints/latest.pt``), a checkpoint file, or the name of a
        pretrained model (``mgtoolkit models`` lists them).

    Raises
    ------
    CheckpointError
        The file is missing, unreadable, holds anything but tensors and plain data (no
        unpickling of objects), or is not an mgtoolkit checkpoint of this format.
    """
    path = checkpoint_path(source)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path} is not an mgtoolkit checkpoint: it holds objects other than tensors and "
            f"plain data, which are never unpickled ({first})"
        ) from None
    except Exception as exc:  # torch's unpickler raises many types on a non-checkpoint
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc)[:200]} — is it a "
            "checkpoint file written by `mgtoolkit train`, and complete?"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not an mgtoolkit training checkpoint (format {CHECKPOINT_FORMAT})"
        )
    try:
        return Checkpoint(
            config=raw["config"],
            growth=int(raw["growth"]),
            model=raw["model"],
            optimizer=raw.get("optimizer", {}),
            state=TrainState.from_dict(raw.get("state", {})),
            cascades=int(raw.get("cascades", 0)),
        )
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is an incomplete mgtoolkit checkpoint ({exc})") from None


def load_model(
    source: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    mirror_average: bool | tuple[str, ...] = False,
    predict_at: int | None = None,
) -> UNet:
    """The trained network of a run directory, a checkpoint file or a pretrained model's name.

    Returns the :class:`~mgtoolkit.nn.UNet` in eval mode on ``device``. ``mirror_average``
    makes it predict the mean over the field's images under the problem's symmetries (see
    :class:`~mgtoolkit.nn.UNet`: exactly symmetric, at one network pass per image);
    ``predict_at`` makes it run on ν coarsened to that many cells per side and interpolate u
    back (for fields finer than it was trained on).
    """
    checkpoint = read_checkpoint(source)
    try:
        model = checkpoint.build_model()
    except (TypeError, RuntimeError, KeyError) as exc:
        raise CheckpointError(
            f"the weights in {checkpoint_path(source)} do not fit the network its configuration "
            f"describes ({str(exc)[:200]})"
        ) from None
    model.mirror_average = mirror_average
    model.predict_at = predict_at
    return model.to(device).eval()
