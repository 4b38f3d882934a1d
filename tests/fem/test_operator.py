"""The matrix-free energy and operator: exact cases, autograd, the sparse matrix, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import mgtoolkit.fem.operator as operator_module
from mgtoolkit.fem import (
    apply_operator,
    assemble,
    energy,
    impose_dirichlet,
    operator_diagonal,
    reference_stiffness,
    slab_energy,
)


def _linear(dim: int, n: int, dtype=torch.float64) -> torch.Tensor:
    """u = 1 - x on the nodes (x last)."""
    x = torch.linspace(0.0, 1.0, n + 1, dtype=dtype)
    return (1.0 - x).expand((n + 1,) * dim).clone()


def _random_nu(rng, shape, contrast=1e4):
    return np.exp(rng.uniform(0.0, np.log(contrast), size=shape))


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_nu_linear_u_has_energy_half_and_zero_residual(dim, dtype):
    n = 8
    u = _linear(dim, n, dtype)
    nu = torch.ones((n,) * dim, dtype=dtype)
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    assert abs(energy(nu, u).item() - 0.5) < tol
    residual = apply_operator(nu, u)[..., 1:-1]
    assert residual.abs().max().item() < tol
    # Scaling ν scales J: J is linear in ν.
    assert abs(energy(3.0 * nu, u).item() - 1.5) < 3 * tol


@pytest.mark.parametrize("dim", [2, 3])
def test_reference_stiffness_is_q1(dim):
    k = reference_stiffness(dim)
    assert np.allclose(k, k.T)
    assert np.allclose(k.sum(axis=1), 0.0, atol=1e-15)  # constants are in the kernel
    # u = x on the corners (x is the last binary digit) has energy ∫|∇x|² = 1.
    x = np.array([a & 1 for a in range(2**dim)], dtype=float)
    assert x @ k @ x == pytest.approx(1.0, abs=1e-15)
    if dim == 3:  # face neighbours (one digit apart) do not couple: the 21-point stencil
        for a in range(8):
            for b in range(8):
                if bin(a ^ b).count("1") == 1:
                    assert k[a, b] == 0.0


@pytest.mark.parametrize("dim", [2, 3])
def test_autograd_gradient_of_energy_is_the_operator(dim):
    rng = np.random.default_rng(1)
    n = 8
    nu = torch.tensor(_random_nu(rng, (3,) + (n,) * dim))
    u = torch.tensor(rng.standard_normal((3,) + (n + 1,) * dim), requires_grad=True)
    (grad,) = torch.autograd.grad(energy(nu, u).sum(), u)
    with torch.no_grad():
        ku = apply_operator(nu, u)
    assert torch.allclose(grad, ku, rtol=0, atol=1e-12 * ku.abs().max().item())


def test_operator_under_autograd_is_differentiable_and_equal():
    rng = np.random.default_rng(6)
    nu = torch.tensor(_random_nu(rng, (4, 4, 4)), requires_grad=True)
    u = torch.tensor(rng.standard_normal((5, 5, 5)), requires_grad=True)
    ku = apply_operator(nu, u)
    with torch.no_grad():
        assert torch.allclose(ku, apply_operator(nu, u), rtol=1e-12, atol=1e-14)
    # K(ν)u is linear in ν: d/dν of Σ K(ν)u ⊙ v equals the energy-like form, checked by
    # finite differences.
    v = torch.tensor(rng.standard_normal((5, 5, 5)))
    (g,) = torch.autograd.grad((ku * v).sum(), nu)
    e = torch.zeros_like(nu)
    e[1, 2, 3] = 1.0
    with torch.no_grad():
        fd = (apply_operator(nu + e, u) - apply_operator(nu, u)) * v
    assert g[1, 2, 3].item() == pytest.approx(fd.sum().item(), rel=1e-10)


@pytest.mark.parametrize("dim", [2, 3])
def test_energy_gradient_in_nu_is_the_cell_energy(dim):
    """J is linear in ν, so ∂J/∂ν_e = ½ h^(d-2) u_eᵀ K̂ u_e; compare with the sparse matrix."""
    rng = np.random.default_rng(2)
    n = 4
    nu = torch.tensor(_random_nu(rng, (n,) * dim), requires_grad=True)
    u = torch.tensor(rng.standard_normal((n + 1,) * dim))
    (grad,) = torch.autograd.grad(energy(nu, u), nu)
    expected = np.zeros((n,) * dim)
    for cell in np.ndindex(*expected.shape):
        unit = np.zeros((n,) * dim)
        unit[cell] = 1.0
        expected[cell] = 0.5 * u.numpy().ravel() @ (assemble(unit) @ u.numpy().ravel())
    assert np.allclose(grad.numpy(), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("slab", [None, 40])
def test_matrix_free_equals_sparse(dim, slab, monkeypatch):
    if slab is not None:  # force several slabs, as on large grids
        monkeypatch.setattr(operator_module, "SLAB_ELEMENTS", slab)
    rng = np.random.default_rng(3)
    n = 8
    nu = _random_nu(rng, (n,) * dim, contrast=1e6)
    u = rng.standard_normal((n + 1,) * dim)
    k = assemble(nu)
    ku = apply_operator(torch.tensor(nu), torch.tensor(u)).numpy().ravel()
    expected = k @ u.ravel()
    assert np.abs(ku - expected).max() <= 1e-12 * np.abs(expected).max()
    j = energy(torch.tensor(nu), torch.tensor(u)).item()
    assert j == pytest.approx(0.5 * u.ravel() @ expected, rel=1e-12)
    diag = operator_diagonal(torch.tensor(nu)).numpy().ravel()
    assert np.allclose(diag, k.diagonal(), rtol=1e-13)


@pytest.mark.parametrize("dim", [2, 3])
def test_batched_equals_one_by_one(dim):
    rng = np.random.default_rng(4)
    n = 4
    nu = torch.tensor(_random_nu(rng, (2,) + (n,) * dim))
    u = torch.tensor(rng.standard_normal((2,) + (n + 1,) * dim))
    batched_j, batched_ku = energy(nu, u), apply_operator(nu, u)
    assert batched_j.shape == (2,)
    for b in range(2):
        assert torch.allclose(batched_j[b], energy(nu[b], u[b]), rtol=1e-14)
        assert torch.allclose(batched_ku[b], apply_operator(nu[b], u[b]), rtol=1e-14, atol=0)
    assert energy(nu[0], u[0]).shape == ()


def test_float32_matches_float64():
    rng = np.random.default_rng(5)
    nu = torch.tensor(_random_nu(rng, (16, 16, 16), contrast=1e6))
    u = torch.tensor(rng.uniform(size=(17, 17, 17)))
    j64 = energy(nu, u).item()
    j32 = energy(nu.float(), u.float()).item()
    assert abs(j32 - j64) <= 1e-6 * abs(j64)


def test_impose_dirichlet_sets_faces_and_passes_gradients_to_free_nodes_only():
    u = torch.rand(2, 5, 5, requires_grad=True)
    v = impose_dirichlet(u)
    assert torch.equal(v[..., 0], torch.ones(2, 5)) and torch.equal(v[..., -1], torch.zeros(2, 5))
    assert torch.equal(v[..., 1:-1], u[..., 1:-1])
    v.sum().backward()
    assert torch.equal(u.grad[..., 1:-1], torch.ones(2, 5, 3))
    assert u.grad[..., 0].abs().sum() == 0 and u.grad[..., -1].abs().sum() == 0
    arr = np.zeros((3, 3))
    out = impose_dirichlet(arr)
    assert isinstance(out, np.ndarray) and out[0, 0] == 1 and arr[0, 0] == 0


@pytest.mark.parametrize(
    ("nu_shape", "u_shape", "match"),
    [
        ((8, 8), (8, 8), "one more per side"),
        ((8, 8, 8), (9, 9, 8), "one more per side"),
        ((2, 8, 8), (3, 9, 9), "equal sides"),
        ((2, 8, 8), (2, 9, 8), "one more per side"),
        ((6, 6), (7, 7), "power of two"),
        ((8, 4), (9, 5), "equal sides"),
        ((2, 2, 8, 8, 8), (2, 2, 9, 9, 9), "batch axis"),
    ],
)
def test_bad_shapes_name_the_problem(nu_shape, u_shape, match):
    with pytest.raises(ValueError, match=match):
        energy(torch.ones(nu_shape), torch.ones(u_shape))
    with pytest.raises(ValueError, match=match):
        apply_operator(torch.ones(nu_shape), torch.ones(u_shape))


@pytest.mark.parametrize("dim", [2, 3])
def test_slab_energies_sum_to_the_energy(dim):
    gen = torch.Generator().manual_seed(dim)
    n = 8
    nu = torch.exp(torch.randn((2,) + (n,) * dim, generator=gen, dtype=torch.float64))
    u = torch.rand((2,) + (n + 1,) * dim, generator=gen, dtype=torch.float64)
    bounds = [0, 3, 4, 8]  # uneven slabs, one a single plane
    parts = [
        slab_energy(nu[:, a:b], u[:, a : b + 1], n=n, dim=dim)
        for a, b in itertools.pairwise(bounds)
    ]
    torch.testing.assert_close(sum(parts), energy(nu, u), rtol=1e-13, atol=0)
    with pytest.raises(ValueError, match="both end planes"):
        slab_energy(nu[:, :3], u[:, :3], n=n, dim=dim)
