"""Distributed runs: rank discovery, process groups, local/MPI/Slurm/dask launchers.

- :mod:`.env` — rank/size/local rank from torchrun, MPI or Slurm; ``init_from_environment``
  (batch launches: ``mpirun -n 4 mgtoolkit train cfg.toml`` calls it);
- :mod:`.local` — ``spawn``: p local processes in one gloo group;
- :mod:`.launch` — ``launch`` / ``train_on_cluster``: ranks on a dask cluster from a notebook,
  with events streamed to the client;
- :mod:`.clusters` — ``slurm_cluster`` / ``pbs_cluster`` (dask-jobqueue) from a few arguments;
- :mod:`.scaling` — strong/weak scaling study (``mgtoolkit scaling``).

The primitives used inside training live in :mod:`mgtoolkit.train.parallel`. Importing this
package loads no cluster library; dask, distributed, dask-jobqueue and mpi4py are imported
inside the functions that use them.
"""

from mgtoolkit.dist.clusters import pbs_cluster, slurm_cluster
from mgtoolkit.dist.env import (
    WorldInfo,
    WorldMismatchError,
    discover,
    init_from_environment,
)
from mgtoolkit.dist.launch import (
    LaunchError,
    Run,
    RunStopped,
    WorkerLost,
    emit,
    launch,
    local_cluster,
    train_on_cluster,
)
from mgtoolkit.dist.local import RankFailed, spawn

__all__ = [
    "LaunchError",
    "RankFailed",
    "Run",
    "RunStopped",
    "WorkerLost",
    "WorldInfo",
    "WorldMismatchError",
    "discover",
    "emit",
    "init_from_environment",
    "launch",
    "local_cluster",
    "pbs_cluster",
    "slurm_cluster",
    "spawn",
    "train_on_cluster",
]
