"""Halo exchange between neighbouring slabs, inside the autograd graph, and sums over a field.

Forward, each slab receives the planes next to it that its neighbours hold; backward, the
gradient that reached those copies goes back to their owner and is added to its own: the
gradient on every rank is then the exact gradient of the whole field's computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mgtoolkit.comm import all_reduce_sum
from mgtoolkit.comm.p2p import exchange
from mgtoolkit.spatial.layout import SlabLayout

__all__ = ["EXCHANGE_RANGE", "field_sum", "gather", "halo"]

#: Name of the profiler range around every halo exchange (forward and backward).
EXCHANGE_RANGE = "mgtoolkit.spatial.halo_exchange"


def _exchange(sends: list[tuple[int, torch.Tensor]], recvs: list[tuple[int, torch.Tensor]]) -> None:
    # A named range: torch.profiler attributes the exchange's time to it (benchmarks/spatial.py).
    with torch.profiler.record_function(EXCHANGE_RANGE):
        exchange(sends, recvs)


def _planes(x: torch.Tensor, axis: int, start: int, count: int) -> torch.Tensor:
    return x.narrow(axis, start, count).contiguous(memory_format=torch.contiguous_format)


def _empty(x: torch.Tensor, axis: int, count: int) -> torch.Tensor:
    shape = list(x.shape)
    shape[axis] = count
    return x.new_empty(shape)


class _Halo(torch.autograd.Function):
    """``cat([lower's top lo planes, x, upper's bottom hi planes])`` along ``axis``; the sides
    without a neighbour get no planes. Backward returns the halo gradients to their owners."""

    @staticmethod
    def forward(ctx, x, layout: SlabLayout, axis: int, lo: int, hi: int):
        ctx.layout, ctx.axis, ctx.lo, ctx.hi = layout, axis, lo, hi
        m = x.shape[axis]
        if m < max(lo, hi):  # a neighbour needs planes the slab does not have
            raise ValueError(
                f"a slab of {m} planes cannot give {max(lo, hi)} halo planes: slabs must be "
                "thicker (fewer ranks per field, or a larger grid)"
            )
        sends, recvs, parts = [], [], [x]
        if layout.lower is not None and hi:
            sends.append((layout.lower, _planes(x, axis, 0, hi)))
        if layout.upper is not None and lo:
            sends.append((layout.upper, _planes(x, axis, m - lo, lo)))
        if layout.lower is not None and lo:
            recvs.append((layout.lower, _empty(x, axis, lo)))
            parts.insert(0, recvs[-1][1])
        if layout.upper is not None and hi:
            recvs.append((layout.upper, _empty(x, axis, hi)))
            parts.append(recvs[-1][1])
        _exchange(sends, recvs)
        ctx.below = lo if layout.lower is not None else 0
        ctx.above = hi if layout.upper is not None else 0
        return torch.cat(parts, dim=axis) if len(parts) > 1 else x.clone()

    @staticmethod
    def backward(ctx, grad):
        layout, axis, lo, hi = ctx.layout, ctx.axis, ctx.lo, ctx.hi
        below, above = ctx.below, ctx.above
        m = grad.shape[axis] - below - above
        # The gradients of the copies this rank received go back to their owners; the copies
        # its own planes made come back from its neighbours.
        sends, recvs = [], []
        if below:
            sends.append((layout.lower, _planes(grad, axis, 0, below)))
        if above:
            sends.append((layout.upper, _planes(grad, axis, below + m, above)))
        from_upper = _empty(grad, axis, lo) if layout.upper is not None and lo else None
        from_lower = _empty(grad, axis, hi) if layout.lower is not None and hi else None
        if from_upper is not None:
            recvs.append((layout.upper, from_upper))
        if from_lower is not None:
            recvs.append((layout.lower, from_lower))
        _exchange(sends, recvs)
        grad_x = grad.narrow(axis, below, m).clone()
        if from_upper is not None:
            grad_x.narrow(axis, m - lo, lo).add_(from_upper)
        if from_lower is not None:
            grad_x.narrow(axis, 0, hi).add_(from_lower)
        return grad_x, None, None, None, None


def halo(
    x: torch.Tensor, layout: SlabLayout, *, axis: int, lo: int, hi: int, outer: str
) -> torch.Tensor:
    """A slab extended by ``lo`` planes below and ``hi`` above along the split ``axis``.

    Planes next to a neighbouring slab are that slab's (exchanged, differentiably); at the
    outer faces of the whole field they are the padding of the unsplit computation:
    ``outer="zeros"`` (a convolution's zero padding) or ``"replicate"`` (edge planes
    repeated). Every rank of a spatial group must call it (it exchanges with both neighbours).

    Parameters
    ----------
    x : torch.Tensor, any shape with ``x.shape[axis]`` ≥ ``max(lo, hi)`` planes
    layout : SlabLayout
    axis : int
        The split axis of ``x`` (non-negative).
    lo, hi : int
        Planes to add below and above.
    outer : {"zeros", "replicate"}

    Returns
    -------
    torch.Tensor, ``x``'s shape with ``lo + hi`` more planes along ``axis``
    """
    if outer not in ("zeros", "replicate"):
        raise ValueError(f"outer must be 'zeros' or 'replicate' (got {outer!r})")
    out = _Halo.apply(x, layout, axis, lo, hi) if layout.size > 1 else x
    pad_lo = lo if layout.first else 0
    pad_hi = hi if layout.last else 0
    if not (pad_lo or pad_hi):
        return out
    if outer == "zeros":
        # F.pad's pairs run from the last axis backwards; only ``axis`` is padded.
        pads = [0, 0] * (x.dim() - 1 - axis) + [pad_lo, pad_hi]
        return F.pad(out, pads)
    edges = []
    if pad_lo:
        edges.append(out.narrow(axis, 0, 1).expand(*_repeat(out, axis, pad_lo)))
    edges.append(out)
    if pad_hi:
        edges.append(out.narrow(axis, out.shape[axis] - 1, 1).expand(*_repeat(out, axis, pad_hi)))
    return torch.cat(edges, dim=axis)


def _repeat(x: torch.Tensor, axis: int, count: int) -> list[int]:
    shape = list(x.shape)
    shape[axis] = count
    return shape


def field_sum(t: torch.Tensor, layout: SlabLayout) -> torch.Tensor:
    """Sum of ``t`` over the slabs of this rank's field (its spatial group), as a new tensor.

    Every rank of the world calls it: each data group's slabs add their ``t`` into their own
    row of one table, summed over the world by :func:`mgtoolkit.comm.all_reduce_sum`. Not
    differentiable (use it for ν, reported values and the value of a loss).
    """
    if layout.size == 1:
        return t
    table = t.new_zeros((layout.data_groups, *t.shape))
    table[layout.data_group] = t.detach()
    return all_reduce_sum(table)[layout.data_group]


def gather(x: torch.Tensor, layout: SlabLayout, *, grid: str, dim: int) -> torch.Tensor:
    """The whole fields of this rank's data group from every slab's part (not differentiable).

    Parameters
    ----------
    x : torch.Tensor, shape ``(B, m) + (n,) * (dim − 1)`` (cells) or ``(B, m + 1) + (n + 1,) *
        (dim − 1)`` (nodes: the planes the slab holds, :meth:`SlabLayout.nodes`)
    grid : {"cells", "nodes"}
        Each plane comes from its owner.

    Returns
    -------
    torch.Tensor, ``(B,) + (n,) * dim`` or ``(B,) + (n + 1,) * dim``, on every slab
    """
    axis = x.dim() - dim
    n = int(x.shape[-1]) - (grid == "nodes")
    if grid == "cells":
        planes = layout.cells(n)
    elif grid == "nodes":
        planes = layout.nodes(n, held=False)
    else:
        raise ValueError(f"grid must be 'cells' or 'nodes' (got {grid!r})")
    shape = list(x.shape)
    shape[axis] = n + (grid == "nodes")
    whole = x.new_zeros(shape)
    count = planes.stop - planes.start
    whole.narrow(axis, planes.start, count).copy_(x.detach().narrow(axis, 0, count))
    return field_sum(whole, layout)
