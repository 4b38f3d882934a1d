"""Data-parallel primitives over ``torch.distributed`` (docs/math.md, 'Loss integrity').

Every function is a no-op (or the identity) when ``torch.distributed`` is not initialized, so
the trainer calls them unconditionally and a single process runs exactly the serial code.

The recipe that makes a run independent of the number of ranks p (up to rounding):

1. Every rank builds the *same* global sample order (same seed) and pads it with
   :func:`padded_order` (to a multiple of the global batch: every mini-batch is then full).
2. Each global mini-batch of B samples is split into p equal, contiguous local batches with
   :func:`local_slice`; their union, in rank order, is the single-process batch.
3. Each rank computes the *mean* loss over its local batch and back-propagates it;
   :func:`average_gradients` then averages the gradients, which equals the gradient of the
   global mean loss because the local batches have equal sizes.
4. Batch norm uses global batch statistics: :func:`convert_sync_batchnorm`.
5. Reported losses and metrics are global: :func:`all_reduce_mean` / :func:`all_reduce_sum`.
6. Initial weights are equal on every rank: :func:`broadcast_module` after construction.

For L-BFGS the closure does steps 3–5 so that it returns the global loss and leaves the global
gradient in ``.grad``; every rank then runs the identical L-BFGS update.

**Transport.** Synchronized batch norm needs two small all-reduces per layer and step (about 30
for the paper's U-Net), strictly one after the other. Over gloo each costs about a millisecond
even between processes of one machine, which alone costs much of the parallel efficiency at
p = 2. When every rank runs on the same machine (LocalCluster, :func:`mgtoolkit.launch.spawn`,
``mpirun`` on one node), CPU tensors are therefore summed through a shared-memory segment
instead (two orders of magnitude faster; checked to be truly shared when the group starts;
``MGTOOLKIT_SHARED_MEMORY=0`` turns it off). Both transports give every rank the bit-identical
result. GPU tensors and multi-node groups use the process group. Ranks started by an MPI
launcher sum CPU tensors through MPI instead (:mod:`mgtoolkit.comm.mpi`, which also says how to
choose the transport with ``MGTOOLKIT_TRANSPORT``); :func:`transport` says which one runs.
Halo planes between neighbouring ranks travel the same way (:mod:`mgtoolkit.comm.p2p`).
"""

from mgtoolkit.comm.batchnorm import SyncBatchNorm, convert_sync_batchnorm
from mgtoolkit.comm.ranks import (
    WorldInfo,
    WorldMismatchError,
    discover,
    init_from_environment,
)
from mgtoolkit.comm.reduce import (
    all_reduce_mean,
    all_reduce_sum,
    average_gradients,
    broadcast_module,
    local_slice,
    padded_order,
    transport,
    world,
)

__all__ = [
    "SyncBatchNorm",
    "WorldInfo",
    "WorldMismatchError",
    "all_reduce_mean",
    "all_reduce_sum",
    "average_gradients",
    "broadcast_module",
    "convert_sync_batchnorm",
    "discover",
    "init_from_environment",
    "local_slice",
    "padded_order",
    "transport",
    "world",
]
