"""Messages between neighbouring ranks (halo planes), over the transport the sums use.

Spatially split fields exchange boundary planes with the ranks next to them every layer.
:func:`exchange` sends them the way :func:`mgtoolkit.comm.transport` says the sums travel:
MPI (``Isend``/``Irecv`` on the buffers), the shared-memory segment of ranks on one machine,
or the process group's point-to-point (gloo, NCCL).
"""

from __future__ import annotations

import torch

from mgtoolkit.comm.mpi import mpi_communicator
from mgtoolkit.comm.reduce import transport
from mgtoolkit.comm.shm import _shared_memory_channel

__all__ = ["exchange"]

#: MPI tag of these messages (apart from any other point-to-point traffic of the program).
TAG = 18


def exchange(sends: list[tuple[int, torch.Tensor]], recvs: list[tuple[int, torch.Tensor]]) -> None:
    """Send and receive contiguous tensors between neighbouring ranks, all at once.

    Every rank of the world calls it together (the shared-memory path is a round of the whole
    machine), with at most one peer below and one above its own rank, and messages of one
    shape per direction on every rank. Receive buffers are filled in place. Posting everything
    before waiting lets both neighbours of a rank exchange in any order without a deadlock;
    between two ranks messages arrive in the order they were sent.

    Parameters
    ----------
    sends, recvs : list of (peer world rank, contiguous tensor)
        Every tensor on the same device, of one dtype.
    """
    if not sends and not recvs:
        return
    how = transport((sends or recvs)[0][1])
    if how == "mpi":
        from mpi4py import MPI

        comm = mpi_communicator()
        requests = [comm.Isend(t.numpy(), dest=peer, tag=TAG) for peer, t in sends]
        requests += [comm.Irecv(t.numpy(), source=peer, tag=TAG) for peer, t in recvs]
        MPI.Request.Waitall(requests)
    elif how == "shm":
        _shared_memory_channel().exchange(sends, recvs)
    else:
        import torch.distributed as dist

        ops = [dist.P2POp(dist.isend, t, peer) for peer, t in sends]
        ops += [dist.P2POp(dist.irecv, t, peer) for peer, t in recvs]
        for request in dist.batch_isend_irecv(ops):
            request.wait()
