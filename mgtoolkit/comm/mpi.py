"""Sums over ranks through MPI, for ranks that an MPI launcher started (mpirun, srun --mpi).

torch's stock wheels have no MPI backend, so the process group of MPI-launched ranks runs over
gloo (TCP). When mpi4py sees the same world, CPU tensors are summed with ``MPI_Allreduce`` on
their buffers instead (no pickling, the MPI library's own transport: shared memory within a
node, the interconnect between nodes).

``MGTOOLKIT_TRANSPORT`` chooses: ``auto`` (default: MPI when the ranks were started by an MPI
launcher and mpi4py is installed, else shared memory between ranks of one machine, else the
process group), ``mpi`` (MPI or an error saying why not), ``shm`` (shared memory if it works,
else the process group) or ``gloo`` (the process group only).
"""

from __future__ import annotations

import os
import weakref

import torch

__all__ = ["TRANSPORTS", "mpi_communicator", "mpi_sum", "requested_transport"]

#: Accepted values of ``MGTOOLKIT_TRANSPORT``.
TRANSPORTS = ("auto", "mpi", "shm", "gloo")
#: dtypes MPI sums here (numpy views of the tensor's buffer); others use the next transport.
MPI_DTYPES = (torch.float64, torch.float32, torch.int64, torch.int32)

# The group is held weakly: a cached strong reference would keep its gloo threads alive
# past destroy_process_group, into interpreter shutdown (see ranks._destroy_at_exit).
_state: dict = {"group": lambda: None, "comm": None}


def requested_transport() -> str:
    """The transport ``MGTOOLKIT_TRANSPORT`` asks for (validated)."""
    value = os.environ.get("MGTOOLKIT_TRANSPORT", "auto").strip().lower() or "auto"
    if value not in TRANSPORTS:
        raise ValueError(
            f"MGTOOLKIT_TRANSPORT must be one of {', '.join(TRANSPORTS)} (got {value[:40]!r})"
        )
    return value


def mpi_communicator():
    """``MPI.COMM_WORLD`` when it matches the default process group rank for rank, else None.

    Decided once per process group, identically on every rank (it depends only on the
    launcher's environment and the world, which all ranks share).

    Raises
    ------
    RuntimeError
        ``MGTOOLKIT_TRANSPORT=mpi`` but the ranks were not started by an MPI launcher, mpi4py
        is missing, or MPI's world differs from the process group's.
    """
    import torch.distributed as dist

    from mgtoolkit.comm.ranks import _MPI_MARKERS

    group = dist.group.WORLD
    if _state["group"]() is group:
        return _state["comm"]
    _state.update(group=weakref.ref(group), comm=None)
    wanted = requested_transport()
    if wanted in ("shm", "gloo"):
        return None
    strict = wanted == "mpi"
    if not any(k in os.environ for k in _MPI_MARKERS):
        if strict:
            raise RuntimeError(
                "MGTOOLKIT_TRANSPORT=mpi but these ranks were not started by an MPI launcher "
                "(mpirun, or srun --mpi=pmix/pmi2); launch with one, or unset the variable"
            )
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        if strict:
            raise RuntimeError(
                "MGTOOLKIT_TRANSPORT=mpi needs mpi4py: `pip install 'mgtoolkit[mpi]'`"
            ) from None
        return None
    comm = MPI.COMM_WORLD
    if (comm.Get_rank(), comm.Get_size()) != (dist.get_rank(), dist.get_world_size()):
        if strict:
            raise RuntimeError(
                f"MGTOOLKIT_TRANSPORT=mpi but MPI's world (rank {comm.Get_rank()} of "
                f"{comm.Get_size()}) is not the process group's (rank {dist.get_rank()} of "
                f"{dist.get_world_size()})"
            )
        return None
    _state["comm"] = comm
    return comm


def mpi_sum(comm, t: torch.Tensor) -> torch.Tensor:
    """Sum of CPU tensor ``t`` over the ranks of ``comm``, as a new tensor (every rank the same).

    ``t``'s dtype must be one of :data:`MPI_DTYPES`.
    """
    from mpi4py import MPI

    out = t.detach().clone(memory_format=torch.contiguous_format)
    if out.numel():
        comm.Allreduce(MPI.IN_PLACE, out.numpy(), op=MPI.SUM)
    return out
