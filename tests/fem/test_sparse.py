"""The sparse matrix against an independent Q1 assembly: scikit-fem with piecewise-constant ν."""

from __future__ import annotations

import numpy as np
import pytest
import skfem
from skfem.helpers import dot, grad

from mgtoolkit.fem import assemble, sparse


def _skfem_matrix(nu: np.ndarray) -> np.ndarray:
    """scikit-fem's Q1 stiffness for ν constant per cell, renumbered to our node order."""
    dim, n = nu.ndim, nu.shape[0]
    coords = [np.linspace(0.0, 1.0, n + 1)] * dim
    if dim == 3:
        mesh = skfem.MeshHex.init_tensor(*coords)
        elem, elem0 = skfem.ElementHex1(), skfem.ElementHex0()
    else:
        mesh = skfem.MeshQuad.init_tensor(*coords)
        elem, elem0 = skfem.ElementQuad1(), skfem.ElementQuad0()
    basis = skfem.Basis(mesh, elem, intorder=4)
    basis0 = basis.with_element(elem0)
    # skfem points are (x, y[, z]); our arrays are (z, y, x) with x last.
    centres = mesh.p[:, mesh.t].mean(axis=1)  # (dim, cells)
    cell_idx = tuple(np.floor(centres[::-1] * n).astype(int))
    nu_field = basis0.interpolate(nu[cell_idx])

    @skfem.BilinearForm
    def stiffness(u, v, w):
        return w["nu"] * dot(grad(u), grad(v))

    mat = stiffness.assemble(basis, nu=nu_field).toarray()
    node_idx = np.rint(mesh.p[::-1] * n).astype(int)  # (dim, nodes) in (z, y, x) order
    ours = np.ravel_multi_index(tuple(node_idx), (n + 1,) * dim)
    perm = np.empty_like(ours)
    perm[ours] = np.arange(ours.size)  # perm[our id] = skfem id
    return mat[np.ix_(perm, perm)]


@pytest.mark.parametrize("planes_per_slab", [None, 1, 2])
@pytest.mark.parametrize("dim", [2, 3])
def test_sparse_matrix_equals_scikit_fem(dim, planes_per_slab, monkeypatch):
    """Also with the rows assembled in slabs of 1 and 2 node planes (as at 257³ nodes)."""
    rng = np.random.default_rng(0)
    n = 4
    if planes_per_slab is not None:
        monkeypatch.setattr(sparse, "_BLOCK_ROWS", planes_per_slab * (n + 1) ** (dim - 1))
    nu = np.exp(rng.uniform(-3.0, 3.0, size=(n,) * dim))
    ours = assemble(nu).toarray()
    theirs = _skfem_matrix(nu)
    assert np.abs(ours - theirs).max() <= 1e-12 * np.abs(theirs).max()


def test_stencil_width():
    """Interior rows: 21 nonzeros in 3D (the trilinear cube has no face couplings), 9 in 2D."""
    k3 = assemble(np.ones((4, 4, 4)))
    k2 = assemble(np.ones((4, 4)))
    centre3 = np.ravel_multi_index((2, 2, 2), (5, 5, 5))
    centre2 = np.ravel_multi_index((2, 2), (5, 5))
    assert k3[[centre3]].nnz == 21
    assert k2[[centre2]].nnz == 9


def test_assemble_rejects_batches():
    with pytest.raises(ValueError, match="one field"):
        assemble(np.ones((2, 4, 4, 4)))
