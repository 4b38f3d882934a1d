"""The Q1 element algebra on the uniform grid: the one implementation behind J and K(ν)u.

On a cell with corner values ``u_e`` (2 per axis), write along every axis the two 1D
"modes" of a two-node segment: the sum ``S u = u0 + u1`` and the difference
``D u = u1 - u0``. The 1D Q1 matrices of the unit segment are diagonal in these modes::

    uᵀ K1 u = (D u)²               (stiffness [[1, -1], [-1, 1]])
    uᵀ M1 u = (S u)²/4 + (D u)²/12  (mass [[1/3, 1/6], [1/6, 1/3]])

and the reference stiffness of the unit square/cube is the Kronecker sum
``K̂ = Σ_axes K1 ⊗ M1 ⊗ …``. Hence, for a cell mode that takes ``D`` along a set of
``k ≥ 1`` axes and ``S`` along the other ``d - k``,

    u_eᵀ K̂ u_e = Σ_modes  w (mode u_e)²,   w = k / 12^(k-1) / 4^(d-k)

— a sum of squares, exact, with no quadrature error. Applied to every cell at once the
modes are separable shifted-view sums and differences (:func:`cell_modes`), and their
transpose (:func:`cell_modes_transpose`) scatters back to nodes, so the energy
``J = ½ Σ_e ν_e h^(d-2) u_eᵀ K̂ u_e`` and the operator ``K(ν) u = ∇_u J = h^(d-2) Tᵀ (w ν T u)``
share these two functions. (Sums rather than means: one multiplication less per mode.)
Array axes follow :mod:`mgtoolkit.grids`: the last ``dim`` axes are spatial, (z, y, x), and
any leading axes are batch axes.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import torch

__all__ = [
    "MODES",
    "cell_modes",
    "cell_modes_transpose",
    "diagonal_factor",
    "max_eig_ratio",
    "mode_weight",
    "reference_stiffness",
]

#: Per dimension, the cell modes used by the energy: tuples of 0 (S, sum) / 1 (D,
#: difference) per spatial axis in array order, with at least one difference.
MODES: dict[int, tuple[tuple[int, ...], ...]] = {
    d: tuple(m for m in itertools.product((0, 1), repeat=d) if any(m)) for d in (2, 3)
}


def mode_weight(mode: tuple[int, ...]) -> float:
    """Weight ``k / 12^(k-1) / 4^(d-k)`` of a cell mode with ``k`` of ``d`` difference axes."""
    k = sum(mode)
    return k / 12.0 ** (k - 1) / 4.0 ** (len(mode) - k)


def reference_stiffness(dim: int) -> np.ndarray:
    """Q1 stiffness matrix of the unit square (dim 2) or cube (dim 3), exact.

    Returns
    -------
    numpy.ndarray, shape ``(2**dim, 2**dim)``, float64
        Row/column ``a`` is the corner whose local offsets, in array axis order (z, y, x),
        are the binary digits of ``a`` (x is the last digit), i.e. C order of a
        ``(2,) * dim`` block of nodes.
    """
    k1 = np.array([[Fraction(1), Fraction(-1)], [Fraction(-1), Fraction(1)]], dtype=object)
    third, sixth = Fraction(1, 3), Fraction(1, 6)
    m1 = np.array([[third, sixth], [sixth, third]], dtype=object)
    total = None
    for axis in range(dim):
        term = np.array([[Fraction(1)]], dtype=object)
        for other in range(dim):
            term = np.kron(term, k1 if other == axis else m1)
        total = term if total is None else total + term
    return total.astype(np.float64)  # exact fractions: the six face-neighbour zeros stay zero


def diagonal_factor(dim: int) -> float:
    """``K̂[a, a]`` (equal for every corner): 2/3 in 2D, 1/3 in 3D."""
    return float(reference_stiffness(dim)[0, 0])


def max_eig_ratio(dim: int) -> float:
    """Upper bound of the spectrum of ``diag(K)⁻¹ K`` for any ν > 0: λmax(K̂) / K̂[a, a].

    Element by element ``ν_e K̂ ≤ c ν_e K̂[a, a] I`` in the Loewner order, and summing the
    cells gives ``K ≤ c diag(K)``. Both dimensions give c = 3/2, attained for ν constant.
    """
    k = reference_stiffness(dim)
    return float(np.linalg.eigvalsh(k).max() / k[0, 0])


def _sum(v, axis: int):
    n = v.shape[axis]
    return v.narrow(axis, 0, n - 1) + v.narrow(axis, 1, n - 1)


def _diff(v, axis: int):
    n = v.shape[axis]
    return v.narrow(axis, 1, n - 1) - v.narrow(axis, 0, n - 1)


def cell_modes(u, dim: int) -> dict[tuple[int, ...], object]:
    """All cell modes of a node field: ``{mode: T_mode u}`` for ``mode`` in ``MODES[dim]``.

    Parameters
    ----------
    u : torch.Tensor, shape ``(..., m_1, …, m_dim)`` on nodes
        The last ``dim`` axes are spatial (node counts ``m_i``; a slab of a grid is fine).
    dim : int

    Returns
    -------
    dict
        Each value has shape ``(..., m_1 - 1, …, m_dim - 1)``: one value per cell.
        Out-of-place torch operations only, so autograd differentiates through it.
    """
    level = {(): u}
    for j in range(dim):
        axis = u.ndim - dim + j
        last = j == dim - 1
        nxt = {}
        for key, v in level.items():
            if not (last and not any(key)):  # the all-sum mode has weight 0
                nxt[(*key, 0)] = _sum(v, axis)
            nxt[(*key, 1)] = _diff(v, axis)
        level = nxt
    return level


def cell_modes_transpose(modes: dict, dim: int):
    """Transpose of :func:`cell_modes`: ``Σ_mode T_modeᵀ g_mode``, scattered to nodes.

    Parameters
    ----------
    modes : dict
        ``{mode: g_mode}`` with cell-shaped tensors ``(..., c_1, …, c_dim)``; missing modes
        count as zero (at least one must be given).

    Returns
    -------
    torch.Tensor, shape ``(..., c_1 + 1, …, c_dim + 1)`` on nodes
    """
    level = dict(modes)
    for j in reversed(range(dim)):
        nxt: dict[tuple[int, ...], object] = {}
        for prefix in {key[:j] for key in level}:
            tot = level.get((*prefix, 0))
            dif = level.get((*prefix, 1))
            ref = tot if tot is not None else dif
            axis = ref.ndim - dim + j
            nxt[prefix] = _scatter(tot, dif, axis)
        level = nxt
    return level[()]


def _scatter(tot, dif, axis: int):
    """``Sᵀ tot + Dᵀ dif`` along ``axis``: cells → nodes (one more entry along the axis)."""
    if tot is not None:
        lo = tot - dif if dif is not None else tot  # contribution to the cell's first node
        hi = tot + dif if dif is not None else tot  # ... and to its second node
    else:
        lo, hi = -dif, dif
    c = lo.shape[axis]
    if torch.is_grad_enabled() and (lo.requires_grad or hi.requires_grad):
        # out= writes are not differentiable: build the same sum with autograd-visible ops.
        inner = lo.narrow(axis, 1, c - 1) + hi.narrow(axis, 0, c - 1)
        return torch.cat([lo.narrow(axis, 0, 1), inner, hi.narrow(axis, c - 1, 1)], dim=axis)
    shape = list(lo.shape)
    shape[axis] = c + 1
    out = lo.new_empty(shape)
    out.narrow(axis, 0, 1).copy_(lo.narrow(axis, 0, 1))
    out.narrow(axis, c, 1).copy_(hi.narrow(axis, c - 1, 1))
    if c > 1:
        inner = out.narrow(axis, 1, c - 1)
        torch.add(lo.narrow(axis, 1, c - 1), hi.narrow(axis, 0, c - 1), out=inner)
    return out
