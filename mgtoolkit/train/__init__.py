"""Training: configuration, the multigrid trainer, its losses, rates, events and reports,
comparisons of cycles, export of the events to TensorBoard.

Nothing here imports dask or widget libraries; data parallelism goes through
:mod:`mgtoolkit.comm` (torch.distributed, no-ops in a single process), spatial parallelism
through :mod:`mgtoolkit.spatial`; the run directory and
its checkpoints are :mod:`mgtoolkit.rundir`'s.
"""

from mgtoolkit.train.compare import Comparison, compare_cycles
from mgtoolkit.train.config import (
    CycleConfig,
    DataConfig,
    OptimConfig,
    ParallelConfig,
    TrainConfig,
    load_config,
)
from mgtoolkit.train.events import EventLog, read_events
from mgtoolkit.train.report import RunResult
from mgtoolkit.train.tensorboard import export_tensorboard
from mgtoolkit.train.toml import to_toml
from mgtoolkit.train.trainer import Trainer, train

__all__ = [
    "Comparison",
    "CycleConfig",
    "DataConfig",
    "EventLog",
    "OptimConfig",
    "ParallelConfig",
    "RunResult",
    "TrainConfig",
    "Trainer",
    "compare_cycles",
    "export_tensorboard",
    "load_config",
    "read_events",
    "to_toml",
    "train",
]
