"""The reference solver: multigrid-preconditioned CG for K(ν) u = 0 with the Dirichlet data.

``solve(nu)`` minimizes the same energy as the training loss (:func:`~mgtoolkit.fem.energy`):
on free nodes it solves ``K_ff u_f = -K_fd u_d``. Arithmetic (``precision``):

- ``"mixed"`` (default): CG in float64, the V-cycle in float32. The V-cycle only
  preconditions, so this reaches float64 residuals (rtol down to 1e-13; tested to 1e-10 with
  nodal errors < 1e-7 against a sparse direct solve) at float32 cost and memory.
- ``"double"``: everything in float64.
- ``"single"``: everything in float32 — half the memory of the CG vectors, and the fast path
  on GPUs. rtol must be ≥ 1e-6 (float32 cannot certify smaller residuals); at rtol 1e-6
  nodal errors measured 1e-6 to 2e-5 at the ω-box corners (tested: < 1e-4).

Memory on n³ cells (3D, mixed): about 70 bytes per node — ν, the hierarchy (ν, 1/diag and the
level-2 stencil, ~17 B), four float64 CG vectors and the float32 V-cycle work arrays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from mgtoolkit.fem.boundary import DIRICHLET_HIGH, DIRICHLET_LOW
from mgtoolkit.fem.multigrid import Hierarchy, MultigridConfig, _zero_faces
from mgtoolkit.fem.operator import (
    apply_block,
    apply_operator,
    operator_coefficients,
    split_shapes,
)
from mgtoolkit.grids import check_diffusivity

__all__ = ["PRECISIONS", "ConvergenceError", "SolveInfo", "solve"]

#: precision name → (CG dtype, V-cycle dtype).
PRECISIONS = {
    "mixed": (torch.float64, torch.float32),
    "double": (torch.float64, torch.float64),
    "single": (torch.float32, torch.float32),
}

#: The smallest rtol each precision can reach reliably (rounding of the residual itself).
MIN_RTOL = {"mixed": 1e-13, "double": 1e-13, "single": 1e-6}


@dataclass
class SolveInfo:
    """What :func:`solve` did.

    Attributes
    ----------
    iterations : int
        PCG iterations (the batch runs until every sample converged).
    residuals : numpy.ndarray, shape ``(iterations + 1,)`` or ``(iterations + 1, B)``
        Relative residual ``‖r_k‖₂ / ‖r_0‖₂`` on free nodes after each iteration (r_0 = b,
        the start is u_free = 0).
    converged : bool
        Every sample reached ``rtol``.
    rtol, maxiter, precision
        The settings used.
    levels : int
        Multigrid levels (1 = the finest only, solved directly).
    setup_seconds, solve_seconds : float
        Wall time of the hierarchy set-up and of the PCG iterations.
    """

    iterations: int
    residuals: np.ndarray
    converged: bool
    rtol: float
    maxiter: int
    precision: str
    levels: int
    setup_seconds: float
    solve_seconds: float
    stats: dict = field(default_factory=dict)


class ConvergenceError(RuntimeError):
    """PCG did not reach rtol within maxiter; ``.info`` holds the residual history."""

    def __init__(self, message: str, info: SolveInfo) -> None:
        super().__init__(message)
        self.info = info


def solve(
    nu,
    *,
    rtol: float = 1e-8,
    maxiter: int = 50,
    precision: str = "mixed",
    device: str | torch.device | None = None,
    config: MultigridConfig | None = None,
    return_info: bool = False,
):
    """Solve ``-div(ν grad u) = 0`` with u = 1 at x = 0, u = 0 at x = 1, Neumann elsewhere.

    Parameters
    ----------
    nu : numpy.ndarray or torch.Tensor, shape ``(n,) * d`` or ``(B,) + (n,) * d`` on cells
        Diffusivity, finite and > 0; d = 2 or 3, n a power of two. Rank 3 is read as one 3D
        field when all sides are equal (pass a 4D array for a batch of 3D fields).
    rtol : float
        Stop when ``‖r‖₂ ≤ rtol ‖b‖₂`` on free nodes for every sample (> 0).
    maxiter : int
        PCG iteration cap; reaching it raises :class:`ConvergenceError`.
    precision : {"mixed", "double", "single"}
        CG / V-cycle arithmetic: float64/float32, float64/float64, float32/float32.
    device : str or torch.device, optional
        Where to compute (default: ν's device; CPU for numpy). CUDA works the same way.
    config : MultigridConfig, optional
        Smoother and coarsest-level settings.
    return_info : bool
        Also return a :class:`SolveInfo`.

    Returns
    -------
    u : same kind as ν (numpy → numpy, torch → torch on ν's device), shape ``batch + (n + 1,) * d``
        Nodal solution in ν's floating dtype (float64 for integer input), Dirichlet values
        exact. ``(u, info)`` when ``return_info``.

    Raises
    ------
    ValueError
        Bad shapes or values of ν, rtol ≤ 0 (or below what ``precision`` can reach),
        maxiter < 1, unknown precision.
    ConvergenceError
        Not converged within ``maxiter`` iterations (the history is in ``.info``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)} (got {precision!r})")
    if not (isinstance(rtol, int | float) and np.isfinite(rtol) and rtol > 0):
        raise ValueError(f"rtol must be a positive number (got {rtol!r}); the default is 1e-8")
    if rtol < MIN_RTOL[precision]:
        raise ValueError(
            f"rtol={rtol:g} is below what precision={precision!r} can reach "
            f"({MIN_RTOL[precision]:g}); raise rtol or use precision='mixed'"
        )
    if not isinstance(maxiter, int | np.integer) or maxiter < 1:
        raise ValueError(f"maxiter must be a positive integer (got {maxiter!r})")

    is_numpy = not isinstance(nu, torch.Tensor)
    arr = torch.as_tensor(np.asarray(nu)) if is_numpy else nu
    dim, n, batch = split_shapes(arr)
    check_diffusivity(arr, dim=dim, batched=bool(batch))
    if len(batch) > 1:
        raise ValueError(f"at most one batch axis is supported (got shape {tuple(arr.shape)})")
    out_dtype = arr.dtype if arr.dtype.is_floating_point else torch.float64
    device = torch.device(device) if device is not None else arr.device
    cg_dtype, mg_dtype = PRECISIONS[precision]

    nu_b = arr.detach().to(device).reshape((-1,) + (n,) * dim)
    t0 = time.perf_counter()
    hierarchy = Hierarchy.build(nu_b.to(mg_dtype), dim=dim, config=config)
    t1 = time.perf_counter()

    b = dirichlet_rhs(nu_b, dim=dim, dtype=cg_dtype)
    u, history = _pcg(nu_b, b, hierarchy, dim=dim, rtol=rtol, maxiter=maxiter)
    u[..., 0] = DIRICHLET_HIGH  # u = u_free + u_d
    u[..., -1] = DIRICHLET_LOW
    _sync(device)
    t2 = time.perf_counter()

    residuals = np.array(history)
    if not batch:
        residuals = residuals[:, 0]
    converged = bool(np.all(np.array(history[-1]) <= rtol))
    info = SolveInfo(
        iterations=len(history) - 1,
        residuals=residuals,
        converged=converged,
        rtol=float(rtol),
        maxiter=int(maxiter),
        precision=precision,
        levels=len(hierarchy.levels),
        setup_seconds=t1 - t0,
        solve_seconds=t2 - t1,
        stats=hierarchy.stats,
    )
    if not converged:
        raise ConvergenceError(
            f"PCG did not reach rtol={rtol:g} in {maxiter} iterations (relative residuals "
            f"{np.array2string(np.asarray(history[-1]), precision=2)}); raise maxiter or rtol, "
            "or check ν for contrasts far beyond 1e6",
            info,
        )
    u = u.reshape(tuple(batch) + (n + 1,) * dim).to(out_dtype)
    result = u.cpu().numpy() if is_numpy else u.to(arr.device)
    return (result, info) if return_info else result


def dirichlet_rhs(nu: torch.Tensor, *, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """``b = -K_fd u_d`` on the nodes ``(B,) + (n+1,)*d`` (zero on Dirichlet nodes).

    u_d is 1 on the face x = 0 and 0 elsewhere, so only the first layer of cells along x
    contributes, and only to the nodes at x-index 1: the element algebra is applied to that
    layer alone (:func:`~mgtoolkit.fem.operator.apply_block`), not to the whole grid.
    """
    n = nu.shape[-1]
    layer = nu[..., :1].to(dtype)
    u_layer = torch.zeros((nu.shape[0], *(n + 1,) * (dim - 1), 2), dtype=dtype, device=nu.device)
    u_layer[..., 0] = DIRICHLET_HIGH
    k_layer = torch.zeros_like(u_layer)
    apply_block(layer, u_layer, k_layer, dim, operator_coefficients(dim, n))
    b = torch.zeros((nu.shape[0], *(n + 1,) * dim), dtype=dtype, device=nu.device)
    b[..., 1] = -k_layer[..., 1]
    return b


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner products, shape ``(B,) + (1,) * d`` for broadcasting (no temporary)."""
    batch = a.shape[0]
    out = torch.bmm(a.reshape(batch, 1, -1), b.reshape(batch, -1, 1))
    return out.reshape((batch,) + (1,) * (a.ndim - 1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pcg(nu, b, hierarchy: Hierarchy, *, dim: int, rtol: float, maxiter: int):
    """Preconditioned CG from x = 0 with per-sample step sizes; returns ``(x, history)``.

    Takes ownership of b (it becomes the residual). Holds four vectors of the CG dtype —
    x, r, p and one buffer for q = A p and then z = M r, which are never needed at the same
    time — plus the V-cycle's work arrays; all allocated once.
    """
    mg_dtype = hierarchy.levels[0].dinv.dtype
    r_mg = torch.empty_like(b, dtype=mg_dtype) if mg_dtype != b.dtype else None

    def precondition(r, out):
        if r_mg is None:  # V-cycle in the CG dtype: its result is a work array, copy it
            return out.copy_(hierarchy.vcycle(r))
        return out.copy_(hierarchy.vcycle(r_mg.copy_(r)))

    b_norm = _dot(b, b).sqrt()
    history = [[1.0] * b.shape[0]]
    x = torch.zeros_like(b)
    r = b
    del b
    p = precondition(r, torch.empty_like(r))
    zq = torch.empty_like(r)
    rz = _dot(r, p)
    for _ in range(maxiter):
        q = _zero_faces(apply_operator(nu, p, dim=dim, out=zq))
        alpha = rz / _dot(p, q)
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, q, value=-1.0)
        rel = (_dot(r, r).sqrt() / b_norm).flatten()
        history.append(rel.cpu().tolist())
        if bool((rel <= rtol).all()):
            break
        z = precondition(r, zq)
        rz_new = _dot(r, z)
        p.mul_(rz_new / rz).add_(z)
        rz = rz_new
    return x, history
