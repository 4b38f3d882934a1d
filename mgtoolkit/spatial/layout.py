"""Where a rank's slab lies: the data × space mesh of ranks (docs/spatial.md).

The world's ``W`` ranks form ``W / S`` data-parallel groups of ``S`` consecutive ranks (the
spatial group): world rank ``w`` holds slab ``w % S`` of the fields of data group ``w // S``.
A field of ``n`` cells per side is split along its first spatial axis (z in 3D, y in 2D):
slab ``s`` holds cell planes ``[s n / S, (s + 1) n / S)``.

**Node planes.** u has ``n + 1`` node planes; slab ``s`` *owns* planes ``[s n / S, (s + 1) n
/ S)`` and the last slab also plane ``n``: every plane has one owner, which counts it in sums
and gives it when a field is gathered. A slab *holds* one plane more than it owns (except the
last): the first plane of the next slab, which the energy of its own cells needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mgtoolkit.comm import world

__all__ = ["SlabLayout"]


def _divisors(k: int) -> list[int]:
    return [d for d in range(1, k + 1) if k % d == 0]


@dataclass(frozen=True)
class SlabLayout:
    """One rank's place in the data × space mesh.

    Parameters
    ----------
    size : int
        Ranks per field (the spatial group's size ``S``).
    rank : int
        This rank in the world.
    world_size : int
        Ranks in the world, a multiple of ``size``.
    """

    size: int
    rank: int
    world_size: int

    def __post_init__(self) -> None:
        s, w = self.size, self.world_size
        if isinstance(s, bool) or not isinstance(s, int) or s < 1 or w % s:
            raise ValueError(
                f"spatial = {s!r} ranks per field does not divide the world size {w}: choose "
                f"one of {', '.join(map(str, _divisors(w)))}"
            )
        if not 0 <= self.rank < w:
            raise ValueError(f"rank {self.rank} is not in a world of {w} ranks")

    @classmethod
    def from_world(cls, spatial: int) -> SlabLayout:
        """This rank's layout in the default process group (one rank when there is none)."""
        rank, size = world()
        return cls(spatial, rank, size)

    @property
    def index(self) -> int:
        """This rank's slab, 0 (the face z = 0, or y = 0 in 2D) to ``size − 1``."""
        return self.rank % self.size

    @property
    def data_group(self) -> int:
        """This rank's data-parallel group."""
        return self.rank // self.size

    @property
    def data_groups(self) -> int:
        """How many data-parallel groups the world holds (``world_size / size``)."""
        return self.world_size // self.size

    @property
    def first(self) -> bool:
        """Whether this slab holds the outer face at the start of the split axis."""
        return self.index == 0

    @property
    def last(self) -> bool:
        """Whether this slab holds the outer face at the end of the split axis."""
        return self.index == self.size - 1

    @property
    def lower(self) -> int | None:
        """World rank of the slab below (None on the first slab)."""
        return None if self.first else self.rank - 1

    @property
    def upper(self) -> int | None:
        """World rank of the slab above (None on the last slab)."""
        return None if self.last else self.rank + 1

    def check(self, n: int, *, depth: int = 0) -> None:
        """Raise ValueError unless ``n`` cells split into slabs that a U-Net of ``depth`` keeps.

        Every slab must be a whole number of cell planes, and a multiple of ``2**depth`` so
        that pooling windows never straddle two slabs and each slab keeps at least one plane at
        the coarsest depth.
        """
        need = self.size * 2**depth
        if n % need:
            fits = [s for s in _divisors(self.world_size) if n % (s * 2**depth) == 0]
            deepest = max(
                (d for d in range(depth + 1) if n % (self.size * 2**d) == 0), default=None
            )
            depth_hint = (
                f", or a depth of at most {deepest}" if deepest is not None and depth else ""
            )
            raise ValueError(
                f"{n} cells per side do not split into {self.size} slabs of a multiple of "
                f"2^depth = {2**depth} cell planes each (slabs must stay whole at every depth of "
                f"the U-Net): choose spatial from {', '.join(map(str, fits)) or 'none'}"
                f"{depth_hint}"
            )

    def cells(self, n: int) -> slice:
        """This slab's cell planes of a field of ``n`` cells per side (n % size == 0)."""
        self.check(n)
        m = n // self.size
        return slice(self.index * m, (self.index + 1) * m)

    def nodes(self, n: int, *, held: bool = True) -> slice:
        """This slab's node planes: those it holds (default, one more than its cells), or
        those it owns (``held=False``: the cells' lower planes, and plane n on the last slab)."""
        c = self.cells(n)
        return slice(c.start, c.stop + 1 if held or self.last else c.stop)

    def batch(self, global_batch: int) -> slice:
        """This rank's data group's part of a global mini-batch (every slab of it the same)."""
        if global_batch % self.data_groups:
            raise ValueError(
                f"global batch {global_batch} is not divisible by the {self.data_groups} data-"
                f"parallel groups (world size {self.world_size} / spatial {self.size}): use a "
                f"multiple of {self.data_groups}"
            )
        part = global_batch // self.data_groups
        return slice(self.data_group * part, (self.data_group + 1) * part)

    def split(self, field: torch.Tensor, *, grid: str, dim: int) -> torch.Tensor:
        """This slab of whole fields ``(B,) + (n,) * dim`` (cells) or ``(n + 1,) * dim`` (nodes).

        ``grid="cells"`` gives the slab's cell planes, ``"nodes"`` the node planes it holds.
        A view; the batch axes are kept.
        """
        axis = field.dim() - dim
        if grid == "cells":
            planes = self.cells(int(field.shape[axis]))
        elif grid == "nodes":
            planes = self.nodes(int(field.shape[axis]) - 1)
        else:
            raise ValueError(f"grid must be 'cells' or 'nodes' (got {grid!r})")
        return field.narrow(axis, planes.start, planes.stop - planes.start)
