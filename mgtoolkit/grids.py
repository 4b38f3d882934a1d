"""Uniform grids on the unit square/cube and the multigrid level hierarchy.

Conventions (docs/math.md, 'Grids'), shared by every module:

- A resolution ``n = 2**k`` is the number of *cells* per side; ``h = 1/n``.
- The diffusivity ν lives on cells: shape ``(n,) * dim``.
- The solution u lives on nodes: shape ``(n + 1,) * dim``.
- Axis order is ``(z, y, x)`` in 3D and ``(y, x)`` in 2D; x is the last axis.
  The Dirichlet faces are x-index 0 (u = 1) and x-index n (u = 0).
- Level 1 is the finest; level ℓ has ``n / 2**(ℓ - 1)`` cells per side.
  Coarse node grids nest exactly in fine ones (every second node).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "AXES",
    "Grid",
    "check_diffusivity",
    "check_resolution",
    "hierarchy",
    "level_resolution",
    "max_levels",
]

#: Spatial axis names per dimension, in array order (x last).
AXES: dict[int, tuple[str, ...]] = {2: ("y", "x"), 3: ("z", "y", "x")}

#: The coarsest grid any level may have, in cells per side.
MIN_CELLS = 2


def _is_power_of_two(n: int) -> bool:
    return isinstance(n, int | np.integer) and n > 0 and (int(n) & (int(n) - 1)) == 0


def check_dim(dim: int) -> int:
    """Return ``dim`` if it is 2 or 3, else raise a ValueError naming the fix."""
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3 (got {dim!r}); mgtoolkit solves on 2D and 3D grids")
    return int(dim)


def max_levels(n: int) -> int:
    """Most multigrid levels a resolution ``n`` allows (the coarsest keeps ≥ 2 cells per side)."""
    check_resolution(n)
    return int(np.log2(n)) - int(np.log2(MIN_CELLS)) + 1


def check_resolution(n: int, levels: int = 1) -> int:
    """Validate a finest resolution ``n`` (cells per side) for ``levels`` levels.

    Raises
    ------
    ValueError
        If ``n`` is not a power of two ≥ 2, or too small for ``levels`` levels.
    """
    if not _is_power_of_two(n) or n < MIN_CELLS:
        below = 1 << max(int(n).bit_length() - 1, 1) if isinstance(n, int | np.integer) else 2
        raise ValueError(
            f"resolution must be a power of two ≥ {MIN_CELLS} cells per side (got {n!r}); "
            f"try {below} or {below * 2}"
        )
    if not isinstance(levels, int | np.integer) or levels < 1:
        raise ValueError(f"levels must be a positive integer (got {levels!r})")
    coarsest = int(n) >> (int(levels) - 1)
    if coarsest < MIN_CELLS:
        most = int(np.log2(n)) - int(np.log2(MIN_CELLS)) + 1
        raise ValueError(
            f"{levels} levels need a finest resolution of at least {MIN_CELLS << (levels - 1)} "
            f"cells per side (got {n}); use at most {most} levels at n = {n}"
        )
    return int(n)


def level_resolution(n: int, level: int) -> int:
    """Cells per side at multigrid ``level`` (1 = finest, resolution ``n``)."""
    check_resolution(n, level)
    return int(n) >> (int(level) - 1)


@dataclass(frozen=True)
class Grid:
    """A uniform grid of ``n**dim`` cells on the unit square (dim 2) or cube (dim 3).

    Parameters
    ----------
    dim : int
        2 or 3.
    n : int
        Cells per side, a power of two.
    """

    dim: int
    n: int

    def __post_init__(self) -> None:
        check_dim(self.dim)
        check_resolution(self.n)

    @property
    def h(self) -> float:
        """Cell width (the domain has unit side)."""
        return 1.0 / self.n

    @property
    def axes(self) -> tuple[str, ...]:
        """Axis names in array order, x last."""
        return AXES[self.dim]

    @property
    def cell_shape(self) -> tuple[int, ...]:
        """Shape of a cell field such as ν: ``(n,) * dim``."""
        return (self.n,) * self.dim

    @property
    def node_shape(self) -> tuple[int, ...]:
        """Shape of a node field such as u: ``(n + 1,) * dim``."""
        return (self.n + 1,) * self.dim

    def cell_centres(self) -> np.ndarray:
        """1D coordinates of cell centres along any axis, shape ``(n,)``: ``(i + ½) h``."""
        return (np.arange(self.n, dtype=np.float64) + 0.5) * self.h

    def node_coords(self) -> np.ndarray:
        """1D coordinates of nodes along any axis, shape ``(n + 1,)``: ``i h``."""
        return np.arange(self.n + 1, dtype=np.float64) * self.h

    def coarser(self) -> Grid:
        """The next coarser grid (half the cells per side)."""
        if self.n // 2 < MIN_CELLS:
            raise ValueError(f"a grid of {self.n} cells per side has no coarser level")
        return Grid(self.dim, self.n // 2)


def hierarchy(dim: int, n: int, levels: int) -> list[Grid]:
    """Grids of levels ``1..levels``, finest first."""
    check_dim(dim)
    check_resolution(n, levels)
    return [Grid(dim, level_resolution(n, lv)) for lv in range(1, levels + 1)]


def check_diffusivity(
    nu, *, dim: int | None = None, batched: bool | None = None
) -> tuple[int, int]:
    """Validate a diffusivity array on cells and return ``(dim, n)``.

    Parameters
    ----------
    nu : array-like (numpy or torch)
        Shape ``(n,) * dim`` or, batched, ``(batch,) + (n,) * dim``; strictly positive, finite.
    dim : int, optional
        Expected spatial dimension. If omitted it is inferred: an array of rank 2 or 3 whose
        trailing axes are equal is taken as unbatched unless ``batched`` is True.
    batched : bool, optional
        Whether the leading axis is a batch axis. Inferred when omitted.

    Raises
    ------
    ValueError
        Wrong rank, unequal sides, a side that is not a power of two, non-finite or ≤ 0 values.
    """
    shape = tuple(int(s) for s in nu.shape)
    if dim is None:
        if batched is None:
            batched = len(shape) == 4 or (len(shape) == 3 and shape[0] != shape[1])
        dim = len(shape) - int(bool(batched))
    else:
        check_dim(dim)
        if batched is None:
            batched = len(shape) == dim + 1
    spatial = shape[1:] if batched else shape
    if len(spatial) != dim or dim not in (2, 3):
        raise ValueError(
            f"diffusivity must have shape (n,)*{dim} on cells"
            f"{' with a leading batch axis' if batched else ''} (got shape {shape})"
        )
    if len(set(spatial)) != 1:
        raise ValueError(
            f"diffusivity must have equal sides (n,)*{dim}: a uniform grid on the unit "
            f"{'square' if dim == 2 else 'cube'} (got shape {shape})"
        )
    check_resolution(spatial[0])
    values = nu.detach().cpu().numpy() if hasattr(nu, "detach") else np.asarray(nu)
    if not np.all(np.isfinite(values)):
        raise ValueError("diffusivity contains NaN or inf values; every cell needs a finite ν > 0")
    if np.any(values <= 0):
        raise ValueError(
            f"diffusivity must be strictly positive (min {values.min():.3g}); "
            "ν ≤ 0 makes the energy indefinite — pass exp(log ν) for log-permeability data"
        )
    return dim, spatial[0]
