"""Isosurfaces of a 3D array by marching tetrahedra (numpy only, no scikit-image).

Each cube of neighbouring grid points is split into the six tetrahedra of its Kuhn
triangulation (all sharing the cube's main diagonal), and the field is taken linear on each
tetrahedron. The surface ``f = value`` is then a triangle or a quadrilateral (two triangles) in
every tetrahedron whose corners lie on both sides, with its vertices on the tetrahedron's edges
where the linear interpolation of ``f`` equals ``value``. Unlike marching cubes this needs no
case table and has no ambiguous cases.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np

__all__ = ["isosurface"]


def _kuhn_tetrahedra() -> np.ndarray:
    """Corner offsets of the six Kuhn tetrahedra of the unit cube, shape (6, 4, 3)."""
    out = np.zeros((6, 4, 3), dtype=np.int64)
    for t, (a, b, _) in enumerate(permutations(range(3))):
        out[t, 1, a] = 1
        out[t, 2, [a, b]] = 1
        out[t, 3] = 1
    return out


def isosurface(
    values: np.ndarray, value: float, *, spacing: float = 1.0, origin: float = 0.0
) -> np.ndarray:
    """Triangles of the surface where the piecewise-linear interpolant of ``values`` equals
    ``value``.

    Parameters
    ----------
    values : ndarray, shape (nz, ny, nx)
        The field at the points of a uniform grid (each side ≥ 2); NaN points are treated as
        lying below ``value``.
    value : float
        The level of the surface.
    spacing, origin : float
        Grid point ``(i, j, k)`` lies at ``origin + spacing * (i, j, k)`` (e.g. ``1/n`` and 0
        for the nodes of n cells per side, ``1/n`` and ``1/(2n)`` for the cell centres).

    Returns
    -------
    ndarray, shape (triangles, 3, 3)
        The three vertices of every triangle, each as (z, y, x) coordinates in the array's axis
        order. Every vertex lies on an edge of a Kuhn tetrahedron, between points ``p`` and
        ``p + e`` (``e`` a 0/1 vector), at ``p + t e`` with
        ``values[p] + t (values[p + e] - values[p]) = value``.
    """
    f = np.asarray(values, dtype=np.float64)
    if f.ndim != 3 or min(f.shape) < 2:
        raise ValueError(f"isosurface needs a 3D array with ≥ 2 points per side (got {f.shape})")
    above = f > value  # NaN compares False: below
    # Only cubes with corners on both sides can hold a piece of the surface.
    corners = [(dz, dy, dx) for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)]
    views = [
        above[dz : f.shape[0] - 1 + dz, dy : f.shape[1] - 1 + dy, dx : f.shape[2] - 1 + dx]
        for dz, dy, dx in corners
    ]
    count = np.sum(views, axis=0)
    cubes = np.argwhere((count > 0) & (count < 8))  # (cubes, 3) lowest corner of each
    tets = cubes[:, None, None, :] + _kuhn_tetrahedra()[None]  # (cubes, 6, 4, 3)
    tets = tets.reshape(-1, 4, 3)
    fv = f[tets[..., 0], tets[..., 1], tets[..., 2]]  # (tets, 4)
    inside = fv > value
    k = inside.sum(axis=1)

    def edge(idx, order, a, b):
        """Crossing points on edge (order[:, a], order[:, b]) of the tetrahedra ``idx``."""
        points, vals = tets[idx], fv[idx]
        pa = np.take_along_axis(points, order[:, [a], None], axis=1)[:, 0]
        pb = np.take_along_axis(points, order[:, [b], None], axis=1)[:, 0]
        fa = np.take_along_axis(vals, order[:, [a]], axis=1)[:, 0]
        fb = np.take_along_axis(vals, order[:, [b]], axis=1)[:, 0]
        t = (value - fa) / (fb - fa)  # fa and fb lie on both sides of value: fb ≠ fa
        return pa + t[:, None] * (pb - pa)

    pieces = []
    # One corner on its own side (1 above or 3 above): one triangle around that corner.
    for lone_above in (True, False):
        idx = np.flatnonzero(k == (1 if lone_above else 3))
        key = ~inside[idx] if lone_above else inside[idx]
        order = np.argsort(key, axis=1, kind="stable")  # the lone corner first
        pieces.append(np.stack([edge(idx, order, 0, j) for j in (1, 2, 3)], axis=1))
    # Two and two: a quadrilateral p-r, p-s, q-s, q-r (p, q above; r, s below), two triangles.
    idx = np.flatnonzero(k == 2)
    order = np.argsort(~inside[idx], axis=1, kind="stable")
    pr, ps, qs, qr = (edge(idx, order, a, b) for a, b in ((0, 2), (0, 3), (1, 3), (1, 2)))
    pieces += [np.stack([pr, ps, qs], axis=1), np.stack([pr, qs, qr], axis=1)]
    triangles = np.concatenate(pieces, axis=0)
    return origin + spacing * triangles
