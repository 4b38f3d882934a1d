"""Tile geometry for exact tiled inference: receptive field and aligned compute boxes.

A tile *owns* a box of nodes and is *computed* on a larger box of cells. The cell box is the
hull of every input cell that can influence the owned nodes (the network's receptive field,
derived from its architecture below, not guessed), rounded outward to multiples of the
network's down-sampling factor ``2**depth`` so that max-pooling windows fall exactly where they
fall in the untiled network, and clipped to the domain. Inside the domain the box edges only
corrupt values that never reach the owned nodes; at the domain boundary the box edge *is* the
domain edge, so zero padding (and the head's replicate padding) act exactly as untiled. The
assembled field therefore equals untiled inference up to floating-point rounding.

All ranges here are per spatial axis (the network is the same along every axis).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

__all__ = ["Tile", "downsampling", "needed_cells", "receptive_halo", "split", "tiles"]


def downsampling(config) -> int:
    """The network's down-sampling factor ``2**depth`` (cells): tile boxes align to it."""
    return 2**config.depth


def needed_cells(config, growth: int, first: int, last: int) -> tuple[int, int]:
    """Input cells ``[lo, hi]`` (inclusive) that output nodes ``first .. last`` depend on.

    Parameters
    ----------
    config : mgtoolkit.nn.UNetConfig
        The architecture (depth, convs per block).
    growth : int
        Number of :meth:`~mgtoolkit.nn.UNet.grow` calls (each adds two residual blocks of two
        3-point convolutions at full resolution).
    first, last : int
        Node indices along one axis, ``first ≤ last``.

    Notes
    -----
    The range is that of an unbounded grid; the domain clips it. It follows the forward pass
    of :class:`~mgtoolkit.nn.UNet` backwards: the cells→nodes head (node j reads cells j−1, j),
    the grown output blocks, the decoder blocks (each 3-point convolution widens by one cell
    of its level), the transposed convolutions (fine cell c reads coarse cell ⌊c/2⌋), the skip
    connections, max-pooling (coarse cell c reads fine cells 2c, 2c+1) and the encoder blocks.
    """
    cpb, depth = config.convs_per_block, config.depth

    def encoder(level: int, lo: int, hi: int) -> tuple[int, int]:
        widen = cpb + (2 * growth if level == 0 else 0)
        lo, hi = lo - widen, hi + widen
        if level == 0:
            return lo, hi
        return encoder(level - 1, 2 * lo, 2 * hi + 1)

    def decoder(level: int, lo: int, hi: int) -> tuple[int, int]:
        lo, hi = lo - cpb, hi + cpb
        skip = encoder(level, lo, hi)
        coarse = (lo // 2, hi // 2)
        up = encoder(depth, *coarse) if level + 1 == depth else decoder(level + 1, *coarse)
        return min(skip[0], up[0]), max(skip[1], up[1])

    # Head: node j reads cells j-1 and j; grown output blocks widen by 2 each.
    return decoder(0, first - 1 - 2 * growth, last + 2 * growth)


def receptive_halo(config, growth: int = 0) -> int:
    """Cells beyond its own nodes that an output node can depend on, worst case over alignment.

    Node j depends on cells within ``[j - 1 - halo, j + halo]``; the maximum is taken over the
    node's position relative to the ``2**depth`` pooling grid.
    """
    m = downsampling(config)
    worst = 0
    for j in range(m):
        lo, hi = needed_cells(config, growth, j, j)
        worst = max(worst, (j - 1) - lo, hi - j)
    return worst


@dataclass(frozen=True)
class Tile:
    """One tile of a 1D/2D/3D node grid.

    Attributes
    ----------
    nodes : tuple of (start, stop)
        Owned node range per spatial axis (half-open); the tiles partition ``0 .. n``.
    cells : tuple of (start, stop)
        Cell box computed for them (half-open), aligned to ``2**depth`` and within ``0 .. n``.
    """

    nodes: tuple[tuple[int, int], ...]
    cells: tuple[tuple[int, int], ...]

    @property
    def node_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in self.nodes)

    @property
    def cell_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in self.cells)

    @property
    def inner_slices(self) -> tuple[slice, ...]:
        """The owned nodes within the box's node grid (``cells`` box + 1 node per side)."""
        return tuple(
            slice(a - c, b - c) for (a, b), (c, _) in zip(self.nodes, self.cells, strict=True)
        )

    @property
    def box_cells(self) -> int:
        """Number of cells in the compute box (sets the tile's memory)."""
        out = 1
        for a, b in self.cells:
            out *= b - a
        return out


def _box(config, growth: int, n: int, start: int, stop: int) -> tuple[int, int]:
    m = downsampling(config)
    lo, hi = needed_cells(config, growth, start, stop - 1)
    return max(0, (lo // m) * m), min(n, -(-(hi + 1) // m) * m)


def split(n: int, tile: int, multiple: int) -> list[tuple[int, int]]:
    """Split nodes ``0 .. n`` (``n + 1`` of them) into near-equal ranges of about ``tile`` nodes.

    Inner boundaries are multiples of ``multiple`` (so boxes start on the pooling grid);
    returns half-open ``(start, stop)`` ranges covering ``0 .. n + 1``.
    """
    k = -(-(n + 1) // tile)
    cuts = sorted({round(i * (n + 1) / k / multiple) * multiple for i in range(1, k)} - {0})
    cuts = [c for c in cuts if c < n + 1]
    bounds = [0, *cuts, n + 1]
    return list(itertools.pairwise(bounds))


def tiles(config, *, n: int, dim: int, tile, growth: int = 0) -> list[Tile]:
    """Partition the ``(n + 1,) * dim`` nodes into tiles of about ``tile`` nodes per side.

    Parameters
    ----------
    config : mgtoolkit.nn.UNetConfig
    n : int
        Cells per side (a multiple of ``2**depth``; coarser grids are run untiled).
    dim : int
        2 or 3.
    tile : int or tuple of int
        Owned nodes per side of a tile, or per axis (z, y, x). Each axis is split into
        ``ceil((n + 1) / tile)`` near-equal ranges whose inner boundaries lie on the pooling
        grid. Tiles are listed in C order, x fastest.
    growth : int
        See :func:`needed_cells`.

    Raises
    ------
    ValueError
        A tile side < 1, or ``n`` not a multiple of ``2**depth``.
    """
    m = downsampling(config)
    if n % m:
        raise ValueError(
            f"tiling needs n to be a multiple of the down-sampling factor 2**depth = {m} "
            f"(got n = {n}); run such a small grid untiled"
        )
    sides = (tile,) * dim if isinstance(tile, int | np.integer) else tuple(tile)
    if len(sides) != dim or any(
        isinstance(t, bool) or not isinstance(t, int | np.integer) or t < 1 for t in sides
    ):
        raise ValueError(
            f"tile must be a positive number of nodes per side, or one per axis (got {tile!r})"
        )
    axes = []
    for t in sides:
        ranges = split(n, int(t), m)
        axes.append([(r, _box(config, growth, n, *r)) for r in ranges])
    return [
        Tile(tuple(r for r, _ in combo), tuple(b for _, b in combo))
        for combo in itertools.product(*axes)
    ]
