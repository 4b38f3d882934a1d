"""Launchers: ranks on local processes, dask clusters, Slurm/PBS jobs; the scaling study.

- :mod:`.spawn` — ``spawn``: p local processes in one gloo group;
- :mod:`.run` — ``launch`` / ``train_on_cluster``: ranks on a dask cluster from a notebook,
  with events streamed to the client;
- :mod:`.clusters` — ``slurm_cluster`` / ``pbs_cluster`` (dask-jobqueue) from a few arguments;
- :mod:`.scaling` — strong/weak scaling study (``mgtoolkit scaling``).

Rank discovery and process groups (``init_from_environment``, used by batch launches such as
``mpirun -n 4 mgtoolkit train cfg.toml``) and the primitives used inside training live in
:mod:`mgtoolkit.comm`. Importing this
package loads no cluster library; dask, distributed, dask-jobqueue and mpi4py are imported
inside the functions that use them.
"""

from mgtoolkit.launch.clusters import pbs_cluster, slurm_cluster
from mgtoolkit.launch.run import (
    LaunchError,
    Run,
    RunStopped,
    WorkerLost,
    emit,
    launch,
    train_on_cluster,
)
from mgtoolkit.launch.spawn import RankFailed, spawn

__all__ = [
    "LaunchError",
    "RankFailed",
    "Run",
    "RunStopped",
    "WorkerLost",
    "emit",
    "launch",
    "pbs_cluster",
    "slurm_cluster",
    "spawn",
    "train_on_cluster",
]
