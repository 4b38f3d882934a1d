"""The reference solver: multigrid-preconditioned CG for K(ν) u = 0 with the Dirichlet data.

``solve(nu)`` minimizes the same energy as the training loss (:func:`~mgtoolkit.fem.energy`):
on free nodes it solves ``K_ff u_f = -K_fd u_d``. Arithmetic (``precision``):

- ``"mixed"`` (default): CG in float64, the V-cycle in float32. The V-cycle only
  preconditions, so this reaches float64 residuals (rtol down to 1e-13; tested to 1e-10 with
  nodal errors < 1e-7 against a sparse direct solve) at float32 cost and memory.
- ``"double"``: everything in float64.
- ``"single"``: everything in float32 — half the memory of the CG vectors, and the fast path
  on GPUs. rtol must be ≥ 1e-6 (float32 cannot certify smaller residuals); at rtol 1e-6 the
  nodal errors stay below 1e-4 at the ω-box corners (tested).

Every returned u has passed a check (:func:`solve`): a nodal error estimate in the stopping
test, the residual recomputed in float64 and the discrete maximum principle; otherwise
:class:`ConvergenceError` is raised and no u is returned.

Memory on n³ cells (3D, mixed): about 70 bytes per node — ν, the hierarchy (ν, 1/diag and the
level-2 stencil, ~17 B), four float64 CG vectors and the float32 V-cycle work arrays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from mgtoolkit.fem.boundary import DIRICHLET_HIGH, DIRICHLET_LOW
from mgtoolkit.fem.multigrid import CoarseFactorError, Hierarchy, MultigridConfig, _zero_faces
from mgtoolkit.fem.operator import (
    apply_block,
    apply_operator,
    operator_coefficients,
    split_shapes,
)
from mgtoolkit.grids import check_diffusivity

__all__ = ["DEFAULT_MAXITER", "PRECISIONS", "ConvergenceError", "SolveInfo", "solve"]

#: precision name → (CG dtype, V-cycle dtype).
PRECISIONS = {
    "mixed": (torch.float64, torch.float32),
    "double": (torch.float64, torch.float64),
    "single": (torch.float32, torch.float32),
}

#: The smallest rtol each precision can reach reliably (rounding of the residual itself).
MIN_RTOL = {"mixed": 1e-13, "double": 1e-13, "single": 1e-6}

#: Default PCG iteration cap. KL fields need 6 to 15 iterations; random-cell fields of
#: contrast 1e6 need up to ~130 (at 64² to 128² and 32³), and their iteration count grows
#: with contrast and resolution. The cap bounds the time spent before a ConvergenceError.
DEFAULT_MAXITER = 400

#: Default ``utol`` (bound on the estimated max-norm error of u) as a multiple of rtol.
UTOL_PER_RTOL = 10.0

#: With precision="mixed", fields of larger contrast (max/min of ν) get a float64 V-cycle:
#: float32 Galerkin stencils then round the couplings of low-ν regions to noise, and the
#: preconditioner (or the coarse factorization) fails.
MIXED_MAX_CONTRAST = 1e7

#: The true residual (recomputed in float64 at the end) may exceed rtol by this factor
#: before PCG is restarted from the current iterate with the true residual.
TRUE_RESIDUAL_SLACK = 10.0

#: Restarts with the true residual (residual replacement) before giving up.
MAX_RESTARTS = 3

#: Iterations over which the contraction factor of the error estimate is averaged.
RATE_WINDOW = 8


@dataclass
class SolveInfo:
    """What :func:`solve` did.

    Attributes
    ----------
    iterations : int
        PCG iterations of the accepted attempt (the batch runs until every sample converged).
    residuals : numpy.ndarray, shape ``(iterations + 1,)`` or ``(iterations + 1, B)``
        Relative residual ``‖r_k‖₂ / ‖r_0‖₂`` on free nodes after each iteration (r_0 = b,
        the start is u_free = 0). After a restart the entry is the true residual.
    converged : bool
        Every sample passed the stopping test and the final check.
    rtol, maxiter, precision
        The settings used.
    levels : int
        Multigrid levels (1 = the finest only, solved directly).
    setup_seconds, solve_seconds : float
        Wall time of the hierarchy set-up and of the PCG iterations (all attempts).
    stats : dict
        Hierarchy statistics, plus ``vcycle_dtype``.
    utol : float
        Bound on the estimated max-norm error of u used by the stopping test.
    error_estimate, true_residual : numpy.ndarray, shape ``()`` or ``(B,)``
        Per sample: the estimated max-norm error of u when PCG stopped, and the relative
        residual of the returned u recomputed in float64.
    u_min, u_max : numpy.ndarray, shape ``()`` or ``(B,)``
        Extremes of u (the discrete maximum principle puts them in [0, 1]).
    notes : list of str
        Fallbacks taken (float64 hierarchy, restarts), in order.
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
    utol: float = float("nan")
    error_estimate: np.ndarray | None = None
    true_residual: np.ndarray | None = None
    u_min: np.ndarray | None = None
    u_max: np.ndarray | None = None
    notes: list = field(default_factory=list)


class ConvergenceError(RuntimeError):
    """No u passing the stopping test and the final check; ``.info`` holds the residual
    history (:class:`SolveInfo`, ``converged`` False)."""

    def __init__(self, message: str, info: SolveInfo) -> None:
        super().__init__(message)
        self.info = info


def solve(
    nu,
    *,
    rtol: float = 1e-8,
    utol: float | None = None,
    maxiter: int = DEFAULT_MAXITER,
    precision: str = "mixed",
    device: str | torch.device | None = None,
    config: MultigridConfig | None = None,
    return_info: bool = False,
):
    """Solve ``-div(ν grad u) = 0`` with u = 1 at x = 0, u = 0 at x = 1, Neumann elsewhere.

    The result is checked before it is returned, so that high-contrast fields never give
    a wrong u silently. PCG stops when, for every sample,

    1. the relative residual ``‖r‖₂ / ‖b‖₂`` is at most ``rtol``, and
    2. the estimated max-norm error of u is at most ``utol``: the last step
       ``‖x_{k+1} - x_k‖_∞`` times ``ρ / (1 - ρ)``, with ρ the residual's contraction
       factor over the last iterations. The residual alone is not enough at high
       contrast: a small residual in a low-ν region can hide a large error in u.

    The returned u then passes a final check: the residual recomputed in float64 from ν is
    at most ``10 rtol`` (otherwise PCG restarts from u with that residual, as the recurrence
    can drift from it at high contrast), and ``-utol ≤ u ≤ 1 + utol`` (the discrete maximum
    principle of Q1 on this grid). With ``precision="mixed"`` a float32 hierarchy that
    cannot be factorized or fails the check is rebuilt in float64 and the solve repeated;
    fields of contrast above :data:`MIXED_MAX_CONTRAST` get the float64 hierarchy at once.

    Parameters
    ----------
    nu : numpy.ndarray or torch.Tensor, shape ``(n,) * d`` or ``(B,) + (n,) * d`` on cells
        Real diffusivity, finite and > 0; d = 2 or 3, n a power of two. Rank 3 is read as
        one 3D field when all sides are equal (pass a 4D array for a batch of 3D fields).
    rtol : float
        Relative residual target (> 0, at least ``MIN_RTOL[precision]``).
    utol : float, optional
        Target for the estimated max-norm error of u (> 0; default ``10 rtol``).
    maxiter : int
        PCG iteration cap per attempt; reaching it raises :class:`ConvergenceError`.
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
        ν missing, complex, of bad shape or values; rtol or utol ≤ 0 (or rtol below what
        ``precision`` can reach), maxiter < 1, unknown precision or device.
    ConvergenceError
        No u passed the stopping test and the final check within ``maxiter`` iterations
        (the history is in ``.info``); nothing is returned.
    """
    utol = _check_settings(rtol, utol, maxiter, precision)
    is_numpy = not isinstance(nu, torch.Tensor)
    arr = _as_field(nu)
    dim, n, batch = split_shapes(arr)
    check_diffusivity(arr, dim=dim, batched=bool(batch))
    if len(batch) > 1:
        raise ValueError(f"at most one batch axis is supported (got shape {tuple(arr.shape)})")
    out_dtype = arr.dtype if arr.dtype.is_floating_point else torch.float64
    device = _device(device, arr)
    cg_dtype, mg_dtype = PRECISIONS[precision]

    nu_b = arr.detach().to(device).reshape((-1,) + (n,) * dim)
    if mg_dtype == torch.float32 and cg_dtype == torch.float64:
        contrast = float(nu_b.max()) / float(nu_b.min())
        if contrast > MIXED_MAX_CONTRAST:
            mg_dtype = torch.float64
    attempts = [mg_dtype] if mg_dtype == torch.float64 else [mg_dtype, torch.float64]
    notes: list[str] = []
    setup = run = 0.0
    for k, vcycle_dtype in enumerate(attempts):
        last = k == len(attempts) - 1
        t0 = time.perf_counter()
        try:
            hierarchy = Hierarchy.build(nu_b.to(vcycle_dtype), dim=dim, config=config)
        except CoarseFactorError as err:
            setup += time.perf_counter() - t0
            if last:
                info = _info(
                    [[1.0] * nu_b.shape[0]], batch, rtol, utol, maxiter, precision, 0,
                    setup, run, {"vcycle_dtype": str(vcycle_dtype)}, notes,
                )  # fmt: skip
                raise ConvergenceError(
                    f"{err}; ν's contrast {_contrast(nu_b)} is beyond what this solver "
                    "handles in float64. Check ν (units, mask values) or coarsen it.",
                    info,
                ) from None
            notes.append(f"{vcycle_dtype} hierarchy: {err}; rebuilt in float64")
            continue
        t1 = time.perf_counter()
        u, history, state = _solve_checked(
            nu_b, hierarchy, dim=dim, cg_dtype=cg_dtype, rtol=rtol, utol=utol,
            maxiter=maxiter, notes=notes,
        )  # fmt: skip
        _sync(device)
        setup, run = setup + t1 - t0, run + time.perf_counter() - t1
        stats = dict(hierarchy.stats, vcycle_dtype=str(vcycle_dtype).replace("torch.", ""))
        del hierarchy
        info = _info(
            history, batch, rtol, utol, maxiter, precision, stats["levels"], setup, run,
            stats, notes, state,
        )  # fmt: skip
        if info.converged:
            break
        if not last:
            notes.append(f"{vcycle_dtype} V-cycle: {state['reason']}; retried with float64")
    if not info.converged:
        raise ConvergenceError(_failure_message(state, nu_b, rtol, utol, maxiter, precision), info)
    u = u.reshape(tuple(batch) + (n + 1,) * dim).to(out_dtype)
    result = u.cpu().numpy() if is_numpy else u.to(arr.device)
    return (result, info) if return_info else result


def _check_settings(rtol, utol, maxiter, precision) -> float:
    """Validate the scalar settings; return utol (its default filled in)."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)} (got {precision!r})")
    if not (isinstance(rtol, int | float) and np.isfinite(rtol) and rtol > 0):
        raise ValueError(f"rtol must be a positive number (got {rtol!r}); the default is 1e-8")
    floor = MIN_RTOL[precision]
    if rtol < floor:
        hint = (
            "; precision='mixed' (float64 CG) reaches 1e-13"
            if precision == "single"
            else ": float64 residuals cannot certify less"
        )
        raise ValueError(
            f"rtol={rtol:g} is below what precision={precision!r} can reach; use "
            f"rtol ≥ {floor:g}{hint}"
        )
    if utol is None:
        utol = UTOL_PER_RTOL * rtol
    elif not (isinstance(utol, int | float) and np.isfinite(utol) and utol > 0):
        raise ValueError(f"utol must be a positive number or None (got {utol!r})")
    if isinstance(maxiter, bool) or not isinstance(maxiter, int | np.integer) or maxiter < 1:
        raise ValueError(f"maxiter must be a positive integer (got {maxiter!r})")
    return float(utol)


def _as_field(nu) -> torch.Tensor:
    """ν as a real tensor (numpy input converted without copying where possible)."""
    expected = "ν must be an array of shape (n,)*d on cells (d = 2 or 3, n a power of two)"
    if nu is None:
        raise ValueError(f"{expected}, optionally with a leading batch axis (got None)")
    if isinstance(nu, torch.Tensor):
        arr = nu
    else:
        values = np.asarray(nu)
        if values.dtype.kind not in "biufc":
            raise ValueError(f"{expected} of real numbers (got dtype {values.dtype})")
        arr = torch.as_tensor(values)
    if arr.is_complex():
        raise ValueError(
            f"ν must be real (got {arr.dtype}); a diffusivity has no imaginary part — pass "
            "nu.real if the imaginary part is known to be zero"
        )
    if arr.dtype == torch.bool:
        raise ValueError(f"{expected} of real numbers (got dtype bool)")
    return arr


def _device(device, arr: torch.Tensor) -> torch.device:
    """The compute device: ``device`` when given, else ν's."""
    if device is None:
        return arr.device
    valid = ["cpu"] + (["cuda", "cuda:N"] if torch.cuda.is_available() else [])
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be one of {valid} (got {device!r})") from None
    if dev.type not in ("cpu", "cuda") or (dev.type == "cuda" and not torch.cuda.is_available()):
        raise ValueError(f"device must be one of {valid} on this machine (got {device!r})")
    return dev


def _contrast(nu: torch.Tensor) -> str:
    """max/min of ν over the batch, formatted."""
    return f"{float(nu.max()) / float(nu.min()):.1e}"


def _info(history, batch, rtol, utol, maxiter, precision, levels, setup, run, stats, notes,
          state=None) -> SolveInfo:  # fmt: skip
    residuals = np.array(history)
    if not batch:
        residuals = residuals[:, 0]

    def per_sample(key):
        if state is None:
            return None
        value = np.asarray(state[key], dtype=float)
        return value if batch else value[0]

    return SolveInfo(
        iterations=len(history) - 1,
        residuals=residuals,
        converged=bool(state is not None and state["ok"]),
        rtol=float(rtol),
        maxiter=int(maxiter),
        precision=precision,
        levels=int(levels),
        setup_seconds=setup,
        solve_seconds=run,
        stats=stats,
        utol=float(utol),
        error_estimate=per_sample("estimate"),
        true_residual=per_sample("true_residual"),
        u_min=per_sample("u_min"),
        u_max=per_sample("u_max"),
        notes=list(notes),
    )


def _failure_message(state, nu, rtol, utol, maxiter, precision) -> str:
    return (
        f"the FEM solve failed its check ({state['reason']}); ν's contrast (max/min) is "
        f"{_contrast(nu)}. No solution is returned. Fixes: raise maxiter (now {maxiter}) "
        f"if the residuals were still falling, loosen rtol={rtol:g} / utol={utol:g}"
        + (", use precision='double'" if precision != "double" else "")
        + ", or reduce the contrast of ν (geometric multigrid loses accuracy and speed "
        "beyond ~1e8, float64 itself at ~1e10)"
    )


def _solve_checked(nu, hierarchy, *, dim, cg_dtype, rtol, utol, maxiter, notes):
    """PCG, then the final check; restarts from the iterate with the true residual while
    the check fails on the residual alone. Returns ``(u, history, state)``."""
    x = None
    history: list[list[float]] = []
    used = 0
    best = np.inf
    for _ in range(MAX_RESTARTS + 1):
        b = dirichlet_rhs(nu, dim=dim, dtype=cg_dtype)
        x, hist, estimate = _pcg(
            nu, b, hierarchy, dim=dim, rtol=rtol, utol=utol, maxiter=maxiter - used, x=x
        )
        used += len(hist) - 1
        if history:  # the restart's first entry is the true residual of the same iterate
            history[-1] = hist[0]
            hist = hist[1:]
        history.extend(hist)
        stopped = bool(np.all(np.array(history[-1]) <= rtol) and np.all(estimate <= utol))
        state = _final_check(nu, x, dim=dim, rtol=rtol, utol=utol)
        state["estimate"] = estimate
        if not stopped:
            state["ok"] = False
            state["reason"] = (
                f"PCG did not reach rtol={rtol:g} and an estimated max-norm error ≤ "
                f"{utol:g} in {maxiter} iterations (relative residuals "
                f"{_fmt(history[-1])}, error estimates {_fmt(estimate)})"
            )
            break
        if state["ok"] or not state["residual_only"] or used >= maxiter:
            break
        worst = float(np.max(state["true_residual"]))
        if worst >= best:  # restarting no longer helps: round-off floor
            break
        best = worst
        notes.append(
            f"true residual {_fmt(state['true_residual'])} > {TRUE_RESIDUAL_SLACK:g} rtol "
            f"after {used} iterations: restarted PCG from u"
        )
    u = x
    u[..., 0] = DIRICHLET_HIGH  # u = u_free + u_d
    u[..., -1] = DIRICHLET_LOW
    return u, history, state


def _fmt(values) -> str:
    return np.array2string(np.asarray(values, dtype=float), precision=2)


def _final_check(nu, x, *, dim: int, rtol: float, utol: float) -> dict:
    """The check a returned u must pass, per sample: the residual recomputed in float64
    from ν, and the discrete maximum principle ``-utol ≤ u ≤ 1 + utol``.

    x is u on free nodes (zero on the Dirichlet faces), in the CG dtype.
    """
    x64 = x.to(torch.float64)
    b = dirichlet_rhs(nu, dim=dim, dtype=torch.float64)
    r = _zero_faces(apply_operator(nu, x64, dim=dim)).sub_(b)
    true = (_dot(r, r).sqrt() / _dot(b, b).sqrt()).flatten()
    del r, b
    # u = x on interior x-planes; the faces hold exactly 1 and 0.
    inner = x64[..., 1:-1].flatten(1)
    u_min = inner.amin(dim=1).clamp(max=DIRICHLET_LOW)
    u_max = inner.amax(dim=1).clamp(min=DIRICHLET_HIGH)
    finite = torch.isfinite(inner).all(dim=1)
    residual_ok = true <= TRUE_RESIDUAL_SLACK * rtol
    range_ok = (u_min >= DIRICHLET_LOW - utol) & (u_max <= DIRICHLET_HIGH + utol) & finite
    state = {
        "true_residual": true.cpu().numpy(),
        "u_min": u_min.cpu().numpy(),
        "u_max": u_max.cpu().numpy(),
        "ok": bool((residual_ok & range_ok).all()),
        "residual_only": bool(range_ok.all()),
    }
    problems = []
    if not bool(residual_ok.all()):
        problems.append(
            f"residual recomputed in float64 {_fmt(state['true_residual'])} > "
            f"{TRUE_RESIDUAL_SLACK:g} rtol"
        )
    if not bool(range_ok.all()):
        problems.append(
            f"u outside [0, 1] by more than utol={utol:g}: min {_fmt(state['u_min'])}, "
            f"max {_fmt(state['u_max'])} (the discrete maximum principle is violated)"
        )
    state["reason"] = "; ".join(problems)
    return state


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


def _pcg(nu, b, hierarchy: Hierarchy, *, dim: int, rtol: float, utol: float, maxiter: int, x=None):
    """Preconditioned CG with per-sample step sizes; returns ``(x, history, estimate)``.

    Starts from x (u on free nodes, updated in place) or from zero. Takes ownership of b
    (it becomes the residual); history holds ``‖r_k‖₂ / ‖b‖₂`` per sample. It stops when
    every sample has ``‖r_k‖₂ ≤ rtol ‖b‖₂`` and an estimated max-norm error
    ``ρ / (1 - ρ) ‖x_k - x_{k-1}‖_∞ ≤ utol``, ρ being the residual's mean contraction per
    iteration over the last :data:`RATE_WINDOW` iterations (the usual bound for a
    contraction; infinite while the residual does not fall). ``estimate`` holds that
    estimate per sample (numpy, inf where not computed).

    Holds four vectors of the CG dtype — x, r, p and one buffer for q = A p and then
    z = M r, which are never needed at the same time — plus the V-cycle's work arrays;
    all allocated once.
    """
    mg_dtype = hierarchy.levels[0].dinv.dtype
    r_mg = torch.empty_like(b, dtype=mg_dtype) if mg_dtype != b.dtype else None

    def precondition(r, out):
        if r_mg is None:  # V-cycle in the CG dtype: its result is a work array, copy it
            return out.copy_(hierarchy.vcycle(r))
        return out.copy_(hierarchy.vcycle(r_mg.copy_(r)))

    batch = b.shape[0]
    b_norm = _dot(b, b).sqrt()
    zq = torch.empty_like(b)
    r = b
    del b
    if x is None:
        x = torch.zeros_like(r)
        history = [[1.0] * batch]
    else:
        r.sub_(_zero_faces(apply_operator(nu, x, dim=dim, out=zq)))
        history = [(_dot(r, r).sqrt() / b_norm).flatten().cpu().tolist()]
    estimate = np.full(batch, np.inf)
    if maxiter < 1:
        return x, history, estimate
    p = precondition(r, torch.empty_like(r))
    rz = _dot(r, p)
    for k in range(1, maxiter + 1):
        q = _zero_faces(apply_operator(nu, p, dim=dim, out=zq))
        alpha = rz / _dot(p, q)
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, q, value=-1.0)
        rel = (_dot(r, r).sqrt() / b_norm).flatten()
        history.append(rel.cpu().tolist())
        if bool((rel <= rtol).all()):
            # The step just taken, and the contraction factor of the residual: computed
            # only here, so the common path pays nothing for the estimate.
            step = alpha.flatten() * torch.linalg.vector_norm(p.flatten(1), float("inf"), dim=1)
            window = min(k, RATE_WINDOW)
            now = np.asarray(history[-1], dtype=float)
            with np.errstate(divide="ignore", invalid="ignore"):
                rho = (now / np.asarray(history[-1 - window], dtype=float)) ** (1.0 / window)
                estimate = np.abs(step.cpu().numpy()) * (rho / (1.0 - rho))
            estimate = np.where(rho < 1.0, estimate, np.inf)  # not contracting: no estimate
            estimate = np.where(now == 0.0, 0.0, estimate)  # exact solution
            if bool(np.all(estimate <= utol)):
                break
        z = precondition(r, zq)
        rz_new = _dot(r, z)
        p.mul_(rz_new / rz).add_(z)
        rz = rz_new
    return x, history, estimate
