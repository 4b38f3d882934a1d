"""Distributed runs: rank discovery, process groups, local/MPI/Slurm/dask launchers.

Importing this package loads no cluster library; dask, distributed, dask-jobqueue and mpi4py
are imported inside the functions that use them.
"""

from mgtoolkit.dist.local import RankFailed, spawn

__all__ = ["RankFailed", "spawn"]
