"""Training: configuration, the multigrid trainer, events, checkpoints, comparisons.

Nothing here imports dask or widget libraries; data parallelism goes through
:mod:`mgtoolkit.train.parallel` (torch.distributed, no-ops in a single process).
"""

from mgtoolkit.train.config import (
    CycleConfig,
    DataConfig,
    OptimConfig,
    TrainConfig,
    load_config,
    to_toml,
)
from mgtoolkit.train.events import EventLog, read_events
from mgtoolkit.train.trainer import RunResult, Trainer, train

__all__ = [
    "CycleConfig",
    "DataConfig",
    "EventLog",
    "OptimConfig",
    "RunResult",
    "TrainConfig",
    "Trainer",
    "load_config",
    "read_events",
    "to_toml",
    "train",
]
