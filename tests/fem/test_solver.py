"""The reference solver: exact and manufactured solutions, optimality, robustness, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch

from mgtoolkit.fem import (
    ConvergenceError,
    apply_operator,
    assemble,
    energy,
    impose_dirichlet,
    solve,
)
from mgtoolkit.fields import KLFamily

OMEGA_CORNERS = [np.array(c, dtype=float) for c in itertools.product((-3.0, 3.0), repeat=4)]


def _kl(omega, dim, n):
    return KLFamily().field(omega, dim=dim, n=n)


def _direct(nu: np.ndarray) -> np.ndarray:
    """Independent reference: sparse LU on the free nodes of the assembled matrix."""
    k = assemble(nu).tocsr()
    shape = tuple(s + 1 for s in nu.shape)
    u = impose_dirichlet(np.zeros(shape))
    free = np.ones(shape, dtype=bool)
    free[..., 0] = free[..., -1] = False
    f = free.ravel()
    rhs = -(k[f] @ u.ravel())
    u.ravel()[f] = spla.spsolve(k[f][:, f].tocsc(), rhs)
    return u


@pytest.mark.parametrize("dim", [2, 3])
def test_constant_nu_gives_linear_solution_exactly(dim):
    n = 16
    u = solve(np.full((n,) * dim, 2.5), rtol=1e-13)
    x = np.arange(n + 1) / n
    assert np.abs(u - (1.0 - x)).max() < 1e-12


@pytest.mark.parametrize("dim", [2, 3])
def test_manufactured_solution_converges_at_rate_two(dim):
    """ν(x) = 1/(1 + 3x²) varies along x only; the exact solution solves (ν u')' = 0:
    u = (F(1) - F(x)) / F(1) with F(x) = x + x³ (the integral of 1/ν). ν is sampled at cell
    centres, so the discrete solution carries an O(h²) error; its L2 norm halves twice per
    refinement."""
    sizes = (8, 16, 32, 64) if dim == 2 else (8, 16, 32)
    errors = []
    for n in sizes:
        xc = (np.arange(n) + 0.5) / n
        nu = np.broadcast_to(1.0 / (1.0 + 3.0 * xc**2), (n,) * dim).copy()
        x = np.arange(n + 1) / n
        exact = (2.0 - (x + x**3)) / 2.0
        u = solve(nu, rtol=1e-11)
        errors.append(np.sqrt(np.mean((u - exact) ** 2)))
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((rates > 1.9) & (rates < 2.1)), rates


def test_kl_field_self_convergence_rate_two():
    """A genuinely 2D field: differences between successive refinements shrink at rate 2."""
    omega = np.array([1.5, -2.0, 1.0, -1.0])
    sols = {n: solve(_kl(omega, 2, n), rtol=1e-11) for n in (16, 32, 64, 128)}
    diffs = [np.sqrt(np.mean((sols[n] - sols[2 * n][::2, ::2]) ** 2)) for n in (16, 32, 64)]
    rates = np.log2(np.array(diffs[:-1]) / np.array(diffs[1:]))
    assert np.all((rates > 1.9) & (rates < 2.1)), rates


@pytest.mark.parametrize("dim", [2, 3])
def test_matches_direct_sparse_solve(dim):
    n = 32 if dim == 2 else 16
    nu = _kl(OMEGA_CORNERS[5], dim, n)
    u = solve(nu, rtol=1e-12)
    assert np.abs(u - _direct(nu)).max() < 1e-9


@pytest.mark.parametrize("dim", [2, 3])
def test_energy_gradient_vanishes_and_solution_minimizes_energy(dim):
    n = 64 if dim == 2 else 16
    nu = torch.tensor(_kl(OMEGA_CORNERS[10], dim, n))
    u, info = solve(nu, rtol=1e-10, return_info=True)
    assert info.converged and info.residuals[-1] <= 1e-10
    u = u.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(nu, u), u)
    u_d = impose_dirichlet(torch.zeros_like(u))
    (grad0,) = torch.autograd.grad(energy(nu, u_d.requires_grad_(True)), u_d)
    free = (slice(None),) * (dim - 1) + (slice(1, -1),)
    assert grad[free].norm() <= 1e-10 * grad0[free].norm() * 1.001
    j = energy(nu, u.detach())
    gen = torch.Generator().manual_seed(0)
    for scale in (1e-1, 1e-3, 1e-5):
        delta = torch.randn(u.shape, generator=gen, dtype=u.dtype) * scale
        perturbed = impose_dirichlet(u.detach() + delta)  # respects the Dirichlet values
        assert energy(nu, perturbed) >= j


@pytest.mark.parametrize(("dim", "n"), [(2, 128), (3, 32)])
def test_iterations_bounded_at_every_corner_of_the_omega_box(dim, n):
    iterations = []
    for omega in OMEGA_CORNERS:
        _, info = solve(_kl(omega, dim, n), return_info=True)
        assert info.converged and info.residuals[-1] <= 1e-8
        assert info.levels >= 3
        iterations.append(info.iterations)
    assert max(iterations) <= 15, iterations


def test_iterations_independent_of_n():
    omega = OMEGA_CORNERS[0]
    its = [solve(_kl(omega, 3, n), return_info=True)[1].iterations for n in (16, 32, 64)]
    assert max(its) - min(its) <= 2, its


def test_precisions():
    """mixed (fp32 V-cycle, fp64 CG) reaches 1e-10; single reaches its documented 1e-6."""
    nu = _kl(OMEGA_CORNERS[3], 3, 16)
    ref = _direct(nu)
    u_mixed, info = solve(nu, rtol=1e-10, return_info=True)
    assert info.converged and np.abs(u_mixed - ref).max() < 1e-7
    u_double = solve(nu, rtol=1e-10, precision="double")
    assert np.abs(u_double - ref).max() < 1e-7
    u_single, info = solve(nu.astype(np.float32), rtol=1e-6, precision="single", return_info=True)
    assert u_single.dtype == np.float32 and info.converged
    assert np.abs(u_single - ref).max() < 1e-4


def test_types_batches_and_info():
    nu = np.stack([_kl(OMEGA_CORNERS[k], 2, 32) for k in (0, 7, 15)])
    u, info = solve(nu, return_info=True)
    assert isinstance(u, np.ndarray) and u.shape == (3, 33, 33) and u.dtype == np.float64
    assert info.residuals.shape == (info.iterations + 1, 3)
    assert np.all(info.residuals[-1] <= info.rtol) and info.residuals[0, 0] == 1.0
    for k in range(3):
        assert np.abs(u[k] - solve(nu[k])).max() < 1e-7
    ut = solve(torch.tensor(nu, dtype=torch.float32))
    assert isinstance(ut, torch.Tensor) and ut.dtype == torch.float32
    assert np.abs(ut.numpy() - u).max() < 1e-6
    # The residual of the returned u, measured independently with the operator.
    r = apply_operator(torch.tensor(nu), torch.tensor(u))[..., 1:-1]
    r0 = apply_operator(torch.tensor(nu), impose_dirichlet(torch.zeros(3, 33, 33).double()))
    assert (r.norm() / r0[..., 1:-1].norm()).item() < 1e-8


def _devices():
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    return out


@pytest.mark.parametrize("device", _devices())
def test_device_generic(device):
    nu = torch.tensor(_kl(OMEGA_CORNERS[9], 3, 16), device=device)
    u = solve(nu)
    assert u.device.type == device
    assert np.abs(u.cpu().numpy() - _direct(nu.cpu().numpy())).max() < 1e-7


def test_non_convergence_raises_with_history():
    with pytest.raises(ConvergenceError, match="maxiter") as err:
        solve(_kl(OMEGA_CORNERS[0], 3, 32), maxiter=2)
    assert err.value.info.residuals.shape == (3,) and not err.value.info.converged


@pytest.mark.parametrize(
    ("nu", "kwargs", "match"),
    [
        (np.ones((6, 6)), {}, "power of two"),
        (np.ones((8, 4)), {}, "equal sides"),
        (np.ones((8,)), {}, "shape"),
        (-np.ones((8, 8)), {}, "strictly positive"),
        (np.full((8, 8), np.nan), {}, "NaN"),
        (np.ones((8, 8)), {"rtol": 0.0}, "rtol"),
        (np.ones((8, 8)), {"rtol": -1e-8}, "rtol"),
        (np.ones((8, 8)), {"rtol": 1e-9, "precision": "single"}, "below what"),
        (np.ones((8, 8)), {"maxiter": 0}, "maxiter"),
        (np.ones((8, 8)), {"precision": "half"}, "precision"),
    ],
)
def test_bad_input(nu, kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve(nu, **kwargs)


@pytest.mark.parametrize("dim", [2, 3])
def test_dirichlet_rhs_is_minus_k_times_the_boundary_data(dim):
    from mgtoolkit.fem.solver import dirichlet_rhs

    rng = np.random.default_rng(7)
    nu = np.exp(rng.uniform(-3.0, 3.0, size=(2,) + (8,) * dim))
    b = dirichlet_rhs(torch.tensor(nu), dim=dim, dtype=torch.float64).numpy()
    u_d = impose_dirichlet(np.zeros((9,) * dim))
    for s in range(2):
        expected = -(assemble(nu[s]) @ u_d.ravel()).reshape(u_d.shape)
        expected[..., 0] = expected[..., -1] = 0.0
        assert np.abs(b[s] - expected).max() <= 1e-13 * np.abs(expected).max()
