"""Multigrid pieces against explicit sparse matrices: transfers, Galerkin stencils, bounds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mgtoolkit.fem import assemble
from mgtoolkit.fem.element import max_eig_ratio
from mgtoolkit.fem.multigrid import (
    Hierarchy,
    apply_stencil,
    coarsen_stencil,
    full_stencil,
    prolong,
    restrict,
    stencil_from_cells,
)


def _interpolation(dim: int, coarse_cells: int) -> sp.csr_array:
    """Explicit trilinear (bilinear) interpolation matrix, coarse nodes → fine nodes."""
    m = coarse_cells
    p1 = sp.lil_array((2 * m + 1, m + 1))
    for i in range(m + 1):
        p1[2 * i, i] = 1.0
        if i < m:
            p1[2 * i + 1, i] = 0.5
            p1[2 * i + 1, i + 1] = 0.5
    out = sp.csr_array(p1)
    for _ in range(dim - 1):
        out = sp.kron(out, p1)
    return sp.csr_array(out)


def _as_matrix(stencil: torch.Tensor, dim: int) -> np.ndarray:
    size = stencil.shape[-1] ** dim
    eye = torch.eye(size, dtype=stencil.dtype).reshape((size, *stencil.shape[2:]))
    cols = apply_stencil(stencil.expand((size, *stencil.shape[1:])), eye, dim)
    full = full_stencil(stencil, dim)  # the same coefficients, all 3^d of them
    cols_full = torch.zeros_like(cols)
    padded = torch.nn.functional.pad(eye, [1, 1] * dim)
    nodes = eye.shape[1:]
    for k, offs in enumerate(itertools.product((0, 1, 2), repeat=dim)):
        view = padded[(slice(None), *(slice(o, o + m) for o, m in zip(offs, nodes, strict=True)))]
        cols_full += full[:, k] * view
    assert torch.allclose(cols, cols_full, rtol=1e-13, atol=0)
    return cols.reshape(size, size).T.numpy()


@pytest.mark.parametrize("dim", [2, 3])
def test_transfers_are_the_interpolation_matrix_and_its_transpose(dim):
    rng = np.random.default_rng(0)
    p = _interpolation(dim, 4)
    xc = torch.tensor(rng.standard_normal((1,) + (5,) * dim))
    xf = torch.tensor(rng.standard_normal((1,) + (9,) * dim))
    assert np.allclose(prolong(xc, dim).numpy().ravel(), p @ xc.numpy().ravel(), atol=1e-15)
    assert np.allclose(restrict(xf, dim).numpy().ravel(), p.T @ xf.numpy().ravel(), atol=1e-14)


@pytest.mark.parametrize("dim", [2, 3])
def test_galerkin_stencils_equal_ptap(dim):
    rng = np.random.default_rng(1)
    n = 8
    nu = np.exp(rng.uniform(-7.0, 7.0, size=(n,) * dim))  # contrast ~1e6, cell to cell
    k = assemble(nu)
    p1, p2 = _interpolation(dim, n // 2), _interpolation(dim, n // 4)
    k2 = (p1.T @ k @ p1).toarray()
    k3 = p2.T @ k2 @ p2
    s2 = stencil_from_cells(torch.tensor(nu)[None], dim)
    s3 = coarsen_stencil(s2, dim)
    assert np.abs(_as_matrix(s2, dim) - k2).max() <= 1e-12 * np.abs(k2).max()
    assert np.abs(_as_matrix(s3, dim) - k3).max() <= 1e-12 * np.abs(k3).max()


@pytest.mark.parametrize("dim", [2, 3])
def test_jacobi_spectrum_bound_of_level_one(dim):
    """λmax(diag(K)⁻¹K) ≤ 3/2 for any ν (the Chebyshev smoother relies on it)."""
    rng = np.random.default_rng(2)
    k = assemble(np.exp(rng.uniform(-7.0, 7.0, size=(4,) * dim))).toarray()
    d = 1.0 / np.sqrt(k.diagonal())
    lam = np.linalg.eigvalsh(d[:, None] * k * d[None, :]).max()
    assert lam <= max_eig_ratio(dim) * (1 + 1e-12)
    assert max_eig_ratio(dim) == pytest.approx(1.5)


@pytest.mark.parametrize("dim", [2, 3])
def test_vcycle_is_symmetric_and_positive(dim):
    """A symmetric positive preconditioner is what CG needs: ⟨Bx, y⟩ = ⟨x, By⟩, ⟨Bx, x⟩ > 0."""
    rng = np.random.default_rng(3)
    n = 64 if dim == 2 else 16
    nu = torch.tensor(np.exp(rng.uniform(-3.0, 3.0, size=(1,) + (n,) * dim)))
    hierarchy = Hierarchy.build(nu, dim=dim)
    assert len(hierarchy.levels) >= 2
    x, y = (torch.tensor(rng.standard_normal((1,) + (n + 1,) * dim)) for _ in range(2))
    for v in (x, y):
        v[..., 0] = 0
        v[..., -1] = 0
    bx = hierarchy.vcycle(x).clone()  # the result is a work array, reused by the next call
    by = hierarchy.vcycle(y).clone()
    assert float((bx * y).sum()) == pytest.approx(float((x * by).sum()), rel=1e-10)
    assert float((bx * x).sum()) > 0


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("chunk", ["one application", "one sample each", "two samples each"])
def test_coarsest_dense_matrices_of_a_batch_are_each_fields_matrix(dim, chunk, monkeypatch):
    """The coarsest level's dense matrices, built for a whole batch at once (or in chunks of
    samples), are each field's own matrix on the free nodes, against explicit sparse ones: the
    Galerkin product Pᵀ K(ν) P on a stencil level, K(ν) where the finest level is the
    coarsest (a field already small enough)."""
    from mgtoolkit.fem import multigrid

    rng = np.random.default_rng(11)
    n = 4 if dim == 3 else 8
    nu = torch.tensor(np.exp(rng.uniform(-3.0, 3.0, size=(3,) + (n,) * dim)))
    coarse = multigrid.stencil_level(stencil_from_cells(nu, dim), dim)
    finest = multigrid.Level(dim, n, coarse.dinv, coarse.lam_max, nu=nu)
    p = _interpolation(dim, n // 2)
    per = {"one application": 3, "one sample each": 1, "two samples each": 2}[chunk]
    for lv in (coarse, finest):
        m = lv.n
        size = (m + 1) ** dim
        coeffs = (lv.nu if lv.nu is not None else lv.stencil)[0].numel()
        monkeypatch.setattr(multigrid, "_DENSE_CHUNK", per * size * max(size, coeffs))
        dense = multigrid._dense_matrix(lv).numpy()
        free = np.ones((m + 1,) * dim, bool)
        free[..., 0] = free[..., -1] = False
        free = free.ravel()
        for b in range(3):
            k = assemble(nu[b].numpy())
            expected = (p.T @ k @ p if lv is coarse else k).toarray()
            np.testing.assert_allclose(
                dense[b][np.ix_(free, free)], expected[np.ix_(free, free)], rtol=1e-12, atol=1e-12
            )
            assert not dense[b][~free].any() and not dense[b][:, ~free].any()
