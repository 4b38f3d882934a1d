"""Training: configuration, the multigrid trainer, events, checkpoints, comparisons.

Nothing here imports dask or widget libraries; data parallelism goes through
:mod:`mgtoolkit.comm` (torch.distributed, no-ops in a single process).
"""

from mgtoolkit.train.compare import Comparison, compare_cycles
from mgtoolkit.train.config import (
    CycleConfig,
    DataConfig,
    OptimConfig,
    TrainConfig,
    load_config,
    to_toml,
)
from mgtoolkit.train.demo import quick_demo
from mgtoolkit.train.events import EventLog, read_events
from mgtoolkit.train.predict import load_model, predict
from mgtoolkit.train.trainer import RunResult, Trainer, request_stop, train

__all__ = [
    "Comparison",
    "CycleConfig",
    "DataConfig",
    "EventLog",
    "OptimConfig",
    "RunResult",
    "TrainConfig",
    "Trainer",
    "compare_cycles",
    "load_config",
    "load_model",
    "predict",
    "quick_demo",
    "read_events",
    "request_stop",
    "to_toml",
    "train",
]
