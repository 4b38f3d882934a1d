"""Marching tetrahedra: vertices where the field crosses the level, closed surfaces, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from mgtoolkit.widgets.isosurface import isosurface


def check_on_crossings(triangles, values, value, *, spacing=1.0, origin=0.0):
    """Assert every vertex lies on a segment p → p + e (e a 0/1 vector) of the grid where the
    linear interpolation of ``values`` equals ``value`` (an independent check of the claim)."""
    v = (triangles.reshape(-1, 3) - origin) / spacing  # grid units
    near = np.abs(v - np.round(v)) < 1e-9
    v = np.where(near, np.round(v), v)
    p = np.floor(v).astype(int)
    frac = v - p
    e = frac > 0
    t = frac.max(axis=1)
    # a Kuhn edge: every moving coordinate moved by the same fraction
    np.testing.assert_allclose(np.where(e, frac, t[:, None]), t[:, None] * np.ones(3), atol=1e-9)
    q = p + e
    fa = values[p[:, 0], p[:, 1], p[:, 2]]
    fb = values[q[:, 0], q[:, 1], q[:, 2]]
    np.testing.assert_allclose(fa + t * (fb - fa), value, atol=1e-9 * max(1.0, abs(value)))
    moved = e.any(axis=1)
    assert np.all((fa[moved] - value) * (fb[moved] - value) <= 0)  # the level lies between


def test_vertices_lie_where_a_random_field_crosses_the_level():
    f = np.random.default_rng(0).normal(size=(9, 7, 8))
    tri = isosurface(f, 0.3, spacing=0.125, origin=0.0625)
    assert tri.shape[1:] == (3, 3) and len(tri) > 100
    check_on_crossings(tri, f, 0.3, spacing=0.125, origin=0.0625)


def test_a_linear_field_gives_its_plane_exactly():
    g = np.arange(11) / 10
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    tri = isosurface(0.3 * z + 0.5 * y - 0.2 * x, 0.2, spacing=0.1)
    pts = tri.reshape(-1, 3)
    np.testing.assert_allclose(0.3 * pts[:, 0] + 0.5 * pts[:, 1] - 0.2 * pts[:, 2], 0.2, atol=1e-12)


def test_a_sphere_is_closed_and_has_the_sphere_area():
    n = 48
    g = np.arange(n + 1) / n
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    r2 = (z - 0.5) ** 2 + (y - 0.5) ** 2 + (x - 0.5) ** 2
    tri = isosurface(r2, 0.3**2, spacing=1 / n)
    radius = np.linalg.norm(tri - 0.5, axis=-1)
    assert radius.min() > 0.29 and radius.max() < 0.3 + 1e-9
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert area.sum() == pytest.approx(4 * np.pi * 0.3**2, rel=0.01)
    # closed: every edge is shared by exactly two triangles
    _, ids = np.unique(np.round(tri * n * 1e6).reshape(-1, 3), axis=0, return_inverse=True)
    ids = ids.reshape(-1, 3)
    edges = np.sort(np.concatenate([ids[:, [0, 1]], ids[:, [1, 2]], ids[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert set(counts.tolist()) == {2}


def test_no_surface_and_bad_input():
    assert isosurface(np.ones((3, 3, 3)), 0.5).shape == (0, 3, 3)
    assert isosurface(np.ones((3, 3, 3)), 1.0).shape == (0, 3, 3)  # nothing above the level
    with pytest.raises(ValueError, match=r"3D array with ≥ 2 points per side \(got \(4, 4\)\)"):
        isosurface(np.zeros((4, 4)), 0.0)
