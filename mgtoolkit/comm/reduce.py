"""Reductions over the ranks of ``torch.distributed``: batch slices, sums, means, gradients.

Each function is a no-op (or the identity) when no process group is initialized.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from mgtoolkit.comm.mpi import MPI_DTYPES, mpi_communicator, mpi_sum, requested_transport
from mgtoolkit.comm.shm import _shared_memory_channel

__all__ = [
    "all_reduce_mean",
    "all_reduce_sum",
    "average_gradients",
    "broadcast_module",
    "local_slice",
    "padded_order",
    "transport",
    "world",
]


def _active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """Return ``(rank, size)`` of the default process group, ``(0, 1)`` if there is none."""
    if not _active():
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size()


def local_slice(global_batch: int) -> slice:
    """This rank's contiguous part of a global mini-batch of ``global_batch`` samples.

    Rank r of p gets ``slice(r * B // p, (r + 1) * B // p)``; the parts, in rank order,
    concatenate to the whole batch.

    Raises
    ------
    ValueError
        If the world size does not divide ``global_batch``. The batch is refused rather than
        split unevenly: unequal local batches would weight samples differently in the averaged
        gradient and break loss integrity.
    """
    rank, size = world()
    if not isinstance(global_batch, int | np.integer) or global_batch < 1:
        raise ValueError(f"global batch must be a positive integer (got {global_batch!r})")
    if global_batch % size:
        lower = (global_batch // size) * size
        options = ", ".join(str(b) for b in (lower, lower + size) if b > 0)
        raise ValueError(
            f"global batch {global_batch} is not divisible by the world size {size}: each rank "
            f"must get an equal share. Use a global batch that is a multiple of {size} "
            f"(e.g. {options}) or a number of ranks that divides {global_batch}"
        )
    part = int(global_batch) // size
    return slice(rank * part, (rank + 1) * part)


def padded_order(indices: Sequence[int] | np.ndarray, size: int) -> np.ndarray:
    """Pad a sample order to a multiple of ``size`` by repeating its first entries.

    ``order + order[:k]`` with the smallest ``k ≥ 0`` that makes the length a multiple of
    ``size`` (the order is cycled if ``k`` exceeds its length). The padding depends only on
    the order and ``size``, so every rank computes the same padded order.

    Pass ``size = global_batch`` (a multiple of the world size) to make every mini-batch full:
    the padded order, and hence the training trajectory, is then the same for every world
    size. ``size = world_size`` pads minimally, but then the last, partial batch of an epoch
    depends on the world size.

    Parameters
    ----------
    indices : sequence of int, shape (N,)
        Sample indices in the order they will be visited (already shuffled, N ≥ 1).
    size : int
        The multiple to pad to.

    Returns
    -------
    numpy.ndarray of int64, shape (ceil(N / size) * size,)
    """
    order = np.asarray(indices, dtype=np.int64).reshape(-1)
    if order.size == 0:
        raise ValueError("cannot pad an empty sample order: the dataset has no samples")
    if not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"size must be a positive integer (got {size!r})")
    total = -(-order.size // int(size)) * int(size)
    return np.resize(order, total)  # np.resize cycles the input to fill


def transport(t: torch.Tensor) -> str:
    """How a sum of ``t`` over the ranks travels: "mpi", "shm" or "process-group".

    An active process group is required; see :mod:`mgtoolkit.comm.mpi` for the choice.
    """
    if t.device.type != "cpu":
        return "process-group"
    if t.dtype in MPI_DTYPES and mpi_communicator() is not None:
        return "mpi"
    if requested_transport() != "gloo" and _shared_memory_channel() is not None:
        return "shm"
    return "process-group"


def _sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over all ranks as a new tensor (an active process group is required)."""
    import torch.distributed as dist

    how = transport(t)
    if how == "mpi":
        return mpi_sum(mpi_communicator(), t)
    if how == "shm":
        return _shared_memory_channel().sum(t)
    out = t.detach().clone(memory_format=torch.contiguous_format)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def _reduce(t: torch.Tensor, *, mean: bool) -> torch.Tensor:
    if not _active():
        return t
    import torch.distributed as dist

    out = _sum_over_ranks(t)
    if mean:
        out /= dist.get_world_size()
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over all ranks, as a new tensor (``t`` itself when not distributed).

    Not differentiable: use it for reported values (losses, metrics, counts).
    """
    return _reduce(t, mean=False)


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over all ranks, as a new tensor (``t`` itself when not distributed).

    The mean of per-rank mean losses is the global mean loss when local batches are equal.
    Not differentiable: use it for reported values.
    """
    return _reduce(t, mean=True)


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace each parameter's ``.grad`` by its mean over all ranks (in place).

    All gradients travel in one flat buffer per dtype (one all-reduce, not one per tensor).
    A parameter without a gradient on some rank counts as a zero gradient there; it keeps
    ``grad = None`` only if it has no gradient on any rank, as in a single process.
    """
    if not _active():
        return
    import torch.distributed as dist

    size = dist.get_world_size()
    params = [p for p in params if p.requires_grad]
    by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
    for p in params:
        by_dtype.setdefault(p.dtype, []).append(p)
    for group in by_dtype.values():
        # One flag per parameter appended to the buffer says "this rank had a gradient".
        parts = [
            p.grad.detach().reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)
            for p in group
        ]
        flags = torch.tensor(
            [p.grad is not None for p in group], dtype=group[0].dtype, device=group[0].device
        )
        flat = _sum_over_ranks(torch.cat([*parts, flags]))
        flat /= size
        # The averaged gradients stay views of the one new buffer (no copy per parameter).
        grads = flat[: -len(group)].split([p.numel() for p in group])
        for p, g, had in zip(group, grads, flat[-len(group) :].tolist(), strict=True):
            if had > 0:
                p.grad = g.view_as(p)


@torch.no_grad()
def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (in place).

    Call it once after building the model (and after loading a checkpoint on rank 0 only).
    """
    if not _active():
        return
    import torch.distributed as dist

    tensors = [*module.parameters(), *module.buffers()]
    by_key: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in tensors:
        by_key.setdefault((t.dtype, t.device), []).append(t)
    for group in by_key.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.broadcast(flat, src=0)
        offset = 0
        for t in group:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
