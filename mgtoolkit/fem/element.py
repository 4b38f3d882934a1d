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
modes are separable shifted-view sums and differences (:func:`cell_modes`), which give the
energy ``J = ½ Σ_e ν_e h^(d-2) u_eᵀ K̂ u_e`` as a sum of squares — well conditioned in
float32, every term being a local difference. (Sums rather than means: one multiplication
less per mode.)

The modes are the eigenvectors of K̂ and its eigenvalue on a mode depends only on k, affinely
for k ≥ 1. Equivalently (:func:`node_edge_cell_coefficients`)

    K̂ = α I + β E + γ 𝟙𝟙ᵀ

with E the adjacency of the cell's edges (corners one axis apart) and 𝟙𝟙ᵀ the all-ones
matrix: 2D α, β, γ = 1, 1/6, -1/3; 3D 5/12, 1/12, -1/12. Summed over cells this gives
``K(ν) u`` in three separable pieces — ν summed around each node times u, ν summed around
each grid edge times the edge's other end, and the cell sums of u weighted by ν and spread
back — about half the array passes of applying the modes' transpose. The operator uses this
form; tests hold it to the autograd gradient of the mode-form energy, to the sparse matrix
and to scikit-fem.
Array axes follow :mod:`mgtoolkit.grids`: the last ``dim`` axes are spatial, (z, y, x), and
any leading axes are batch axes.
"""

from __future__ import annotations

import functools
import itertools
from fractions import Fraction

import numpy as np
import torch

__all__ = [
    "MODES",
    "cell_modes",
    "diagonal_factor",
    "max_eig_ratio",
    "mode_weight",
    "node_edge_cell_coefficients",
    "reference_stiffness",
    "segment_matrices",
    "spread_to_nodes",
    "sum_pairs",
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


def segment_matrices() -> tuple[np.ndarray, np.ndarray]:
    """1D Q1 stiffness K1 and mass M1 of the unit segment, exact fractions (object arrays)."""
    one, third, sixth = Fraction(1), Fraction(1, 3), Fraction(1, 6)
    k1 = np.array([[one, -one], [-one, one]], dtype=object)
    m1 = np.array([[third, sixth], [sixth, third]], dtype=object)
    return k1, m1


@functools.cache
def reference_stiffness(dim: int) -> np.ndarray:
    """Q1 stiffness matrix of the unit square (dim 2) or cube (dim 3), exact.

    Computed once per dimension in exact fractions (operator set-up asks for it several times
    per call) and returned read-only: copy it to modify it.

    Returns
    -------
    numpy.ndarray, shape ``(2**dim, 2**dim)``, float64
        Row/column ``a`` is the corner whose local offsets, in array axis order (z, y, x),
        are the binary digits of ``a`` (x is the last digit), i.e. C order of a
        ``(2,) * dim`` block of nodes. The Kronecker sum ``Σ_axes K1 ⊗ M1 ⊗ …``.
    """
    k1, m1 = segment_matrices()
    total = None
    for axis in range(dim):
        term = np.array([[Fraction(1)]], dtype=object)
        for other in range(dim):
            term = np.kron(term, k1 if other == axis else m1)
        total = term if total is None else total + term
    k = total.astype(np.float64)  # exact fractions: the six face-neighbour zeros stay zero
    k.flags.writeable = False
    return k


@functools.cache
def node_edge_cell_coefficients(dim: int) -> tuple[float, float, float]:
    """``(α, β, γ)`` with ``K̂ = α I + β E + γ 𝟙𝟙ᵀ`` (E: corners one axis apart), exact.

    Derived from :func:`reference_stiffness`, which is checked to have this structure (its
    entries depend only on how many axes two corners differ in, equally for 2 and 3).
    """
    k = reference_stiffness(dim)
    corners = np.arange(2**dim)
    dist = np.array([[bin(a ^ b).count("1") for b in corners] for a in corners])
    gamma = float(k[dist == dim][0])
    beta = float(k[dist == 1][0]) - gamma
    alpha = float(k[0, 0]) - gamma
    rebuilt = alpha * (dist == 0) + beta * (dist == 1) + gamma
    if not np.allclose(rebuilt, k, rtol=0, atol=1e-15):
        raise AssertionError("the Q1 reference stiffness lost its node/edge/cell structure")
    return alpha, beta, gamma


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


def sum_pairs(v, axis: int):
    """Nodes → cells along one axis: ``u0 + u1`` of each two-node segment (the S mode)."""
    n = v.shape[axis]
    return v.narrow(axis, 0, n - 1) + v.narrow(axis, 1, n - 1)


def _diff(v, axis: int):
    n = v.shape[axis]
    return v.narrow(axis, 1, n - 1) - v.narrow(axis, 0, n - 1)


def spread_to_nodes(v, axis: int):
    """Cells → nodes along one axis: each node gets the sum of its (one or two) cells.

    The transpose of :func:`sum_pairs` along that axis; shape grows by one along ``axis``.
    """
    c = v.shape[axis]
    shape = list(v.shape)
    shape[axis] = c + 1
    out = v.new_empty(shape)
    out.narrow(axis, 0, 1).copy_(v.narrow(axis, 0, 1))
    out.narrow(axis, c, 1).copy_(v.narrow(axis, c - 1, 1))
    if c > 1:
        torch.add(
            v.narrow(axis, 0, c - 1), v.narrow(axis, 1, c - 1), out=out.narrow(axis, 1, c - 1)
        )
    return out


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
                nxt[(*key, 0)] = sum_pairs(v, axis)
            nxt[(*key, 1)] = _diff(v, axis)
        level = nxt
    return level
