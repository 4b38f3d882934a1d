"""Matrix-free Q1 energy J(ν, u) and operator K(ν)u on the uniform grid (torch, batched).

Both are built from :mod:`mgtoolkit.fem.element` (the cell modes and their transpose), so
``apply_operator(nu, u)`` is exactly the gradient of ``energy(nu, u)`` with respect to u.
Large grids are processed in slabs of cells along the first spatial axis: the temporaries
of one slab stay in cache, and memory stays a few node fields whatever the resolution.
"""

from __future__ import annotations

import torch

from mgtoolkit.fem.element import (
    MODES,
    cell_modes,
    diagonal_factor,
    mode_weight,
    node_edge_cell_coefficients,
    spread_to_nodes,
    sum_pairs,
)
from mgtoolkit.grids import check_resolution

__all__ = [
    "apply_block",
    "apply_operator",
    "energy",
    "operator_coefficients",
    "operator_diagonal",
    "slab_energy",
    "split_shapes",
]

#: Elements (batch included) per slab temporary on CPU: ~1-2 MB, so a slab's temporaries
#: stay in L2/L3 cache.
SLAB_ELEMENTS = 1 << 18
#: On GPUs kernel launches, not caches, are the cost: slabs of ~32M elements.
SLAB_ELEMENTS_GPU = 1 << 25


def split_shapes(nu, u=None, *, dim: int | None = None) -> tuple[int, int, tuple[int, ...]]:
    """Check the shapes of ν (cells) and u (nodes) and return ``(dim, n, batch_shape)``.

    Parameters
    ----------
    nu : array-like, shape ``batch + (n,) * dim`` on cells
    u : array-like, shape ``batch + (n + 1,) * dim`` on nodes, optional
    dim : int, optional
        Inferred when omitted: rank 2 → 2D, rank 4 → 3D batched; rank 3 is 3D unbatched
        when ``u`` has one more node than ν has cells along the first axis (or, without
        ``u``, when all three sides are equal), else 2D batched.

    Raises
    ------
    ValueError
        Unequal sides, a side that is not a power of two, or u not matching ν.
    """
    shape = tuple(int(s) for s in nu.shape)
    if dim is None:
        if len(shape) == 2:
            dim = 2
        elif len(shape) == 4:
            dim = 3
        elif len(shape) == 3:
            if u is not None and len(u.shape) == 3:
                dim = 3 if int(u.shape[0]) == shape[0] + 1 else 2
            else:
                dim = 3 if len(set(shape)) == 1 else 2
        else:
            raise ValueError(
                f"diffusivity must have shape (n,)*dim on cells, optionally with one leading "
                f"batch axis (got shape {shape}); pass dim= for more batch axes"
            )
    if dim not in (2, 3) or len(shape) < dim:
        raise ValueError(f"dim must be 2 or 3 and ν must have at least dim axes (got {shape})")
    spatial = shape[len(shape) - dim :]
    if len(set(spatial)) != 1:
        raise ValueError(
            f"diffusivity must have equal sides (n,)*{dim} on cells (got shape {shape}); "
            "the grid is uniform on the unit square/cube"
        )
    n = check_resolution(spatial[0])
    batch = shape[: len(shape) - dim]
    if u is not None:
        ushape = tuple(int(s) for s in u.shape)
        want = batch + (n + 1,) * dim
        if ushape != want:
            raise ValueError(
                f"u must live on the nodes of ν's grid: ν of shape {shape} (cells) needs u of "
                f"shape {want} (nodes, one more per side), got {ushape}"
            )
    return dim, n, batch


def _slabs(n: int, plane: int, device: torch.device):
    """Cell ranges ``(start, count)`` along the first spatial axis."""
    size = SLAB_ELEMENTS if device.type == "cpu" else SLAB_ELEMENTS_GPU
    step = max(1, size // max(plane, 1))
    for c0 in range(0, n, step):
        yield c0, min(step, n - c0)


def _boxes(n: int, dim: int, batch: int, device: torch.device):
    """Boxes of cells covering the grid, as ``(start, count)`` per spatial axis.

    Slabs along the first axis while one plane of nodes fits the size target; on larger
    grids the slabs (one cell thick) are cut along the second axis too, so that a box's
    temporaries stay in cache whatever n is.
    """
    size = SLAB_ELEMENTS if device.type == "cpu" else SLAB_ELEMENTS_GPU
    plane = (n + 1) ** (dim - 1) * batch
    if plane <= size:
        step = size // plane
        for c0 in range(0, n, step):
            yield ((c0, min(step, n - c0)),) + ((0, n),) * (dim - 1)
        return
    row = (n + 1) ** (dim - 2) * batch * 2  # one cell along axis 0 spans two node planes
    step = max(1, size // row)
    for c0 in range(n):
        for c1 in range(0, n, step):
            yield ((c0, 1), (c1, min(step, n - c1))) + ((0, n),) * (dim - 2)


def _as_tensor(x):
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)


def energy(nu, u, *, dim: int | None = None) -> torch.Tensor:
    """Discrete Q1 energy ``J(u) = ½ Σ_e ν_e h^(d-2) u_eᵀ K̂ u_e`` (docs/math.md, 'Discrete energy').

    Parameters
    ----------
    nu : torch.Tensor, shape ``(n,) * d`` or ``(B,) + (n,) * d`` on cells
        Diffusivity per cell (dimensionless). Values are not checked here (this is the
        training loss, called every step): validate data once with
        :func:`mgtoolkit.grids.check_diffusivity`.
    u : torch.Tensor, shape ``(n + 1,) * d`` or ``(B,) + (n + 1,) * d`` on nodes
        The Dirichlet values must already be in u (:func:`~mgtoolkit.fem.impose_dirichlet`).
    dim : int, optional
        Spatial dimension, inferred from the shapes when omitted.

    Returns
    -------
    torch.Tensor, shape ``(B,)`` (or 0-d unbatched), u's dtype and device
        Differentiable with respect to u and ν; ``∇_u J = K(ν) u``. For ν = 1 and
        u = 1 − x, J = ½ in 2D and 3D.
    """
    nu, u = _as_tensor(nu), _as_tensor(u)
    dim, n, batch = split_shapes(nu, u, dim=dim)
    return _cells_energy(nu, u, dim=dim, n=n, batch=batch)


def slab_energy(nu, u, *, n: int, dim: int) -> torch.Tensor:
    """The part of J from a slab of cells along the first spatial axis (a rank's share).

    The sum of the parts of slabs that cover the grid, each cell in one slab, is
    :func:`energy`; the node plane two neighbouring slabs share is in both of their ``u``.

    Parameters
    ----------
    nu : torch.Tensor, shape ``batch + (m,) + (n,) * (d - 1)`` on cells
        ν of ``m`` consecutive cell planes of a grid of ``n`` cells per side.
    u : torch.Tensor, shape ``batch + (m + 1,) + (n + 1,) * (d - 1)`` on nodes
        u on the node planes bounding those cells (both end planes included).
    n : int
        Cells per side of the whole grid (sets h = 1/n).
    dim : int
        Spatial dimension, 2 or 3.

    Returns
    -------
    torch.Tensor, shape ``batch``, u's dtype and device
        Differentiable with respect to u and ν.
    """
    nu, u = _as_tensor(nu), _as_tensor(u)
    shape = tuple(int(s) for s in nu.shape)
    if dim not in (2, 3) or len(shape) < dim:
        raise ValueError(f"dim must be 2 or 3 and ν must have at least dim axes (got {shape})")
    batch, m = shape[: len(shape) - dim], shape[len(shape) - dim]
    want_nu = batch + (m,) + (n,) * (dim - 1)
    want_u = batch + (m + 1,) + (n + 1,) * (dim - 1)
    if shape != want_nu or tuple(u.shape) != want_u:
        raise ValueError(
            f"a slab of m cell planes of a grid of n = {n} cells per side needs ν of shape "
            f"{want_nu} (cells) and u of shape {want_u} (nodes, both end planes); got ν "
            f"{shape} and u {tuple(u.shape)}"
        )
    return _cells_energy(nu, u, dim=dim, n=n, batch=batch)


def _cells_energy(nu, u, *, dim: int, n: int, batch: tuple[int, ...]) -> torch.Tensor:
    """``½ Σ ν_e h^(d-2) u_eᵀ K̂ u_e`` over the cells of ``nu`` (checked shapes), per sample."""
    scale = 0.5 * (1.0 / n) ** (dim - 2)
    ax = len(batch)
    cells = int(nu.shape[ax])
    plane = (n + 1) ** (dim - 1) * max(1, int(torch.Size(batch).numel()))
    total = u.new_zeros(batch)
    spatial = tuple(range(ax, ax + dim))
    for c0, c in _slabs(cells, plane, u.device):
        modes = cell_modes(u.narrow(ax, c0, c + 1), dim)
        nu_s = nu.narrow(ax, c0, c).to(u.dtype)
        dens = None
        for mode in MODES[dim]:
            term = modes[mode].square() * mode_weight(mode)
            dens = term if dens is None else dens + term
        total = total + (nu_s * dens).sum(dim=spatial)
    return scale * total


def apply_operator(nu, u, *, dim: int | None = None, out: torch.Tensor | None = None):
    """Matrix-free ``K(ν) u`` of the Q1 operator on all nodes (no Dirichlet rows removed).

    Parameters
    ----------
    nu : torch.Tensor, shape ``batch + (n,) * d`` on cells
    u : torch.Tensor, shape ``batch + (n + 1,) * d`` on nodes
    out : torch.Tensor, optional
        Buffer of u's shape and dtype to write the result into (solvers reuse one: fresh
        multi-GB allocations cost page faults). Not with autograd.

    Returns
    -------
    torch.Tensor, shape of u, u's dtype and device
        ``K(ν) u = ∇_u J(ν, u)``; on free nodes this is the residual of the PDE. Equal to
        :func:`mgtoolkit.fem.assemble` ``(ν) @ u`` to rounding. When u or ν requires grad,
        it is computed as the autograd gradient of :func:`energy` (differentiable again).
    """
    nu, u = _as_tensor(nu), _as_tensor(u)
    dim, n, batch = split_shapes(nu, u, dim=dim)
    if torch.is_grad_enabled() and (u.requires_grad or nu.requires_grad):
        if out is not None:
            raise ValueError("apply_operator(out=...) does not support autograd; drop out=")
        with torch.enable_grad():
            v = u if u.requires_grad else u.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(energy(nu, v, dim=dim).sum(), v, create_graph=True)
        return grad
    coef = operator_coefficients(dim, n)
    ax = len(batch)
    if out is None:
        out = torch.zeros_like(u)
    else:
        out.zero_()
    for box in _boxes(n, dim, int(torch.Size(batch).numel()), u.device):
        nu_b, u_b, out_b = nu, u, out
        for j, (c0, c) in enumerate(box):
            nu_b = nu_b.narrow(ax + j, c0, c)
            u_b = u_b.narrow(ax + j, c0, c + 1)
            out_b = out_b.narrow(ax + j, c0, c + 1)
        # Boxes share their boundary nodes; each adds its own cells' part (K is a sum over
        # cells), so the sum over boxes is exact.
        apply_block(nu_b.to(u.dtype), u_b, out_b, dim, coef)
    return out


def apply_block(nu_b, u_b, out_b, dim: int, coef: tuple[float, float, float]) -> None:
    """Add the contributions of a block of cells to ``out_b`` (``+= K_block u_b``), in place.

    Parameters
    ----------
    nu_b : torch.Tensor, shape ``batch + (c_1, …, c_dim)``, u's dtype
        ν of any box of cells.
    u_b, out_b : torch.Tensor, shape ``batch + (c_1 + 1, …, c_dim + 1)``
        u on the box's nodes, and where its contributions accumulate.
    coef : (α, β, γ)
        :func:`~mgtoolkit.fem.element.node_edge_cell_coefficients` times ``h^(d-2)``.
    """
    alpha, beta, gamma = coef
    spatial = range(u_b.ndim - dim, u_b.ndim)
    # γ: cell sums of u, weighted by ν, spread back to the cells' corners.
    cells = u_b
    for axis in spatial:
        cells = sum_pairs(cells, axis)
    cells.mul_(nu_b)
    for axis in spatial:
        cells = spread_to_nodes(cells, axis)
    out_b.add_(cells, alpha=gamma)
    del cells
    # β: along each axis, ν summed over the cells around each grid edge couples its ends.
    for axis in spatial:
        w = nu_b
        for other in spatial:
            if other != axis:
                w = spread_to_nodes(w, other)
        m = w.shape[axis]
        lo, hi = out_b.narrow(axis, 0, m), out_b.narrow(axis, 1, m)
        lo.addcmul_(w, u_b.narrow(axis, 1, m), value=beta)
        hi.addcmul_(w, u_b.narrow(axis, 0, m), value=beta)
        if axis == spatial[0]:  # α: ν summed around each node, from the edges along this axis
            out_b.addcmul_(spread_to_nodes(w, axis), u_b, value=alpha)


def operator_coefficients(dim: int, n: int) -> tuple[float, float, float]:
    """(α, β, γ) of :func:`apply_block` for ``n`` cells per side."""
    return tuple(c * (1.0 / n) ** (dim - 2) for c in node_edge_cell_coefficients(dim))


def node_cell_sum(nu, dim: int) -> torch.Tensor:
    """Sum of ν over the (up to 2^d) cells around each node: cells → nodes."""
    out = nu
    for j in range(dim):
        out = spread_to_nodes(out, out.ndim - dim + j)
    return out


def operator_diagonal(nu, *, dim: int | None = None) -> torch.Tensor:
    """Diagonal of K(ν) on nodes: ``h^(d-2) K̂[a, a] Σ_{cells ∋ node} ν``.

    Returns
    -------
    torch.Tensor, shape ``batch + (n + 1,) * d``, ν's dtype
    """
    nu = _as_tensor(nu)
    dim, n, _ = split_shapes(nu, dim=dim)
    return node_cell_sum(nu, dim) * (diagonal_factor(dim) * (1.0 / n) ** (dim - 2))
