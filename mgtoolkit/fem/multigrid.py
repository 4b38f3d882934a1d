"""Geometric multigrid on the nested node grids, with Galerkin coarse operators.

Why Galerkin: within one KL field ν varies by up to ~10^6, and a coarse operator
re-discretized with averaged ν misrepresents that. ``A_c = Pᵀ A P`` with trilinear P is the
Q1 operator of the coarse space for the *fine* ν, so coarse corrections stay accurate.

Levels (finest first, :mod:`mgtoolkit.grids` numbering):

- level 1 applies K(ν) matrix-free from ν on cells (:func:`~mgtoolkit.fem.apply_operator`);
- level 2's stencil (3^d coefficients per node: 27 in 3D, 9 in 2D; symmetric, so only the
  centre and the positive offsets are stored: 14 in 3D, 5 in 2D) comes straight from ν by
  one strided convolution whose 4^d kernel is Pᵀ K̂ P per fine cell (:func:`galerkin_kernel`);
- each coarser stencil is ``Pᵀ S P`` of the one above, computed one axis at a time
  (:func:`coarsen_stencil`: P is a tensor product, so three 1D Galerkin products suffice);
- the coarsest (≤ ``coarsest_nodes`` nodes) is solved by a dense Cholesky factorization.

Smoothing is Chebyshev-accelerated Jacobi on an interval ``[λ/ratio, λ]`` of
``diag(A)⁻¹A``'s spectrum: λ = 3/2 exactly on level 1
(:func:`~mgtoolkit.fem.element.max_eig_ratio`), a Gershgorin bound on stencil levels.
Pre- and post-smoothing are the same polynomial, so the V-cycle is a symmetric
preconditioner for CG. Stencils are Galerkin products of the full (Neumann) operator; the
Dirichlet nodes are kept at zero by zeroing them in every operator output, in the inverse
diagonal and in restricted residuals.
All arrays carry one leading batch axis ``B``.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

import numpy as np
import torch

from mgtoolkit.fem.boundary import free_mask
from mgtoolkit.fem.element import max_eig_ratio, segment_matrices
from mgtoolkit.fem.operator import SLAB_ELEMENTS, apply_operator, operator_diagonal

__all__ = [
    "PRECONDITIONER_COARSEST_NODES",
    "CoarseFactorError",
    "Hierarchy",
    "Level",
    "MultigridConfig",
    "apply_stencil",
    "coarsen_stencil",
    "full_stencil",
    "galerkin_kernel",
    "power_weights",
    "preconditioned_gradient",
    "prolong",
    "prolong_add",
    "restrict",
    "stencil_level",
]


@dataclass(frozen=True)
class MultigridConfig:
    """Settings of the multigrid V-cycle.

    Parameters
    ----------
    degree : int
        Chebyshev smoothing steps before and after the coarse correction.
    ratio : float
        The smoother targets eigenvalues of ``diag(A)⁻¹A`` in ``[λmax / ratio, λmax]``.
    coarsest_nodes : int
        Coarsen until a level has at most this many nodes, then factorize it densely.
    """

    degree: int = 2
    ratio: float = 6.0
    coarsest_nodes: int = 1200

    def __post_init__(self) -> None:
        if self.degree < 1:
            raise ValueError(f"degree must be ≥ 1 (got {self.degree})")
        if self.ratio <= 1:
            raise ValueError(f"ratio must be > 1 (got {self.ratio})")


class CoarseFactorError(RuntimeError):
    """The coarsest operator could not be Cholesky-factorized (not numerically positive
    definite in the arithmetic its stencils were computed in).

    At high contrast, float32 Galerkin stencils lose the small couplings of low-ν regions
    next to the rounding errors of high-ν ones; :func:`~mgtoolkit.fem.solve` then rebuilds
    the hierarchy in float64.
    """


def _zero_faces(x: torch.Tensor) -> torch.Tensor:
    """Zero the Dirichlet faces (x-index 0 and n, x last) in place."""
    x[..., 0] = 0
    x[..., -1] = 0
    return x


def _hat(r: np.ndarray) -> np.ndarray:
    """Coarse 1D hat function at fine node offsets r (coarse node at r = 0, width 2 cells)."""
    return np.maximum(0.0, 1.0 - np.abs(r) / 2.0)


@functools.cache
def galerkin_kernel(dim: int) -> np.ndarray:
    """Weights turning fine ν into the level-2 Galerkin stencil by a stride-2 convolution.

    Returns
    -------
    numpy.ndarray, shape ``(3**dim, 1) + (4,) * dim``
        Entry ``[O, 0, j]`` is ``φ_Iᵀ K̂ φ_{I+O}`` restricted to the fine cell at offset
        ``j - 2`` (per axis) from the coarse node I, for coarse offsets O in C order of
        ``{-1, 0, 1}^dim``; multiply the convolution by ``h_fine^(dim-2)``.

    K̂ is the Kronecker sum of the 1D stiffness K1 and mass M1 (:mod:`~mgtoolkit.fem.element`),
    and the coarse hat functions are tensor products, so every entry is a sum over axes of
    products of 1D tables ``φ_iᵀ X φ_o`` (X = K1 or M1) — checked against the assembled
    ``Pᵀ K P`` in the tests.
    """
    k1, m1 = (m.astype(np.float64) for m in segment_matrices())
    cells = np.arange(4) - 2  # first fine node of each cell, relative to the coarse node
    corners = np.stack([cells, cells + 1], axis=1).astype(np.float64)  # (4 cells, 2 nodes)
    here = _hat(corners)  # φ_I on the corners of each cell
    tables = {}
    for name, mat in (("k", k1), ("m", m1)):
        # table[o, j] = φ_I|_jᵀ X φ_{I+o}|_j for coarse offset o = -1, 0, 1
        tables[name] = np.stack(
            [np.einsum("ja,ab,jb->j", here, mat, _hat(corners - 2 * o)) for o in (-1, 0, 1)]
        )
    kernel = np.zeros((3,) * dim + (4,) * dim)
    for axis in range(dim):
        term = np.ones(())
        for other in range(dim):
            table = tables["k" if other == axis else "m"]
            term = np.multiply.outer(term, table)  # axes: (o_0, j_0, o_1, j_1, ...)
        # reorder (o_0, j_0, o_1, j_1, ...) to (o_0, o_1, ..., j_0, j_1, ...)
        order = [2 * a for a in range(dim)] + [2 * a + 1 for a in range(dim)]
        kernel += term.transpose(order)
    kernel = kernel.reshape((3**dim, 1) + (4,) * dim)
    kernel.flags.writeable = False  # cached: shared by every call
    return kernel


def _offsets(dim: int) -> list[tuple[int, ...]]:
    """Stencil offsets in C order of ``{-1, 0, 1}^dim``; the centre is in the middle."""
    return list(itertools.product((-1, 0, 1), repeat=dim))


def stencil_from_cells(nu: torch.Tensor, dim: int) -> torch.Tensor:
    """Level-2 Galerkin stencil ``Pᵀ K(ν) P`` from fine ν ``(B,) + (n,)*d``, half-stored.

    Returns
    -------
    torch.Tensor, shape ``(B, (3**d + 1) / 2) + (n/2 + 1,) * d``, ν's dtype and device
        Entry ``[b, j, i] = S[i, i + o_j]`` for the centre (j = 0) and the positive offsets
        ``o_j`` (the second half of :func:`_offsets`); the others follow by symmetry.
    """
    n = nu.shape[-1]
    centre = 3**dim // 2
    weight = torch.tensor(galerkin_kernel(dim)[centre:], dtype=nu.dtype, device=nu.device)
    conv = torch.nn.functional.conv3d if dim == 3 else torch.nn.functional.conv2d
    out = conv(nu.unsqueeze(1), weight, stride=2, padding=2)
    return out.mul_((1.0 / n) ** (dim - 2))


def _ranges(offset: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices of the nodes i and of their neighbours i + offset, where both are in the grid."""
    here = tuple(
        slice(None, -1) if o > 0 else slice(1, None) if o < 0 else slice(None) for o in offset
    )
    there = tuple(
        slice(1, None) if o > 0 else slice(None, -1) if o < 0 else slice(None) for o in offset
    )
    return (slice(None), *here), (slice(None), *there)


def full_stencil(half: torch.Tensor, dim: int) -> torch.Tensor:
    """All ``3**d`` coefficients ``(B, 3**d) + nodes`` from the half storage, by symmetry:
    ``S[i, i - o] = S[i - o, i]``."""
    centre = 3**dim // 2
    offsets = _offsets(dim)
    full = half.new_zeros((half.shape[0], 3**dim, *half.shape[2:]))
    full[:, centre:] = half
    for k in range(centre):
        mirror = 3**dim - 1 - k  # the offset -o_k, stored at half[:, mirror - centre]
        here, there = _ranges(offsets[mirror])
        full[:, k][there] = half[:, mirror - centre][here]
    return full


def coarsen_stencil(stencil: torch.Tensor, dim: int) -> torch.Tensor:
    """Galerkin product ``Pᵀ S P`` of a symmetric 3^d-point stencil with trilinear P.

    Parameters
    ----------
    stencil : torch.Tensor, shape ``(B, (3**d + 1) / 2) + (N,) * d`` on nodes, N odd
        Half-stored as in :func:`stencil_from_cells`; zero where ``i + o`` is outside.

    Returns
    -------
    torch.Tensor, shape ``(B, (3**d + 1) / 2) + ((N + 1) / 2,) * d``
        P is a tensor product, so the product is taken one axis at a time (three 1D
        Galerkin products on shrinking arrays instead of one 3D one).
    """
    batch = stencil.shape[0]
    full = full_stencil(stencil, dim)
    s = full.reshape((batch,) + (3,) * dim + tuple(full.shape[2:]))
    del full
    for j in range(dim):
        s = _coarsen_axis(s, off_axis=1 + j, node_axis=1 + dim + j)
    s = s.reshape((batch, 3**dim, *s.shape[1 + dim :]))
    return s[:, 3**dim // 2 :].clone()


def _coarsen_axis(s: torch.Tensor, *, off_axis: int, node_axis: int) -> torch.Tensor:
    """1D Galerkin product along one axis: ``S'[O, I] = Σ w(p) w(q) S[o, 2I + p]``.

    Here p is the fine node's offset from 2I (interpolation weight w(p)), o the fine
    stencil offset and q = p + o - 2O the offset of the fine column from 2(I + O);
    w(0) = 1, w(±1) = ½, and only |q| ≤ 1 contributes.
    """
    fine = s.shape[node_axis]
    coarse = (fine - 1) // 2 + 1
    # Coarse nodes I whose fine node 2I + p exists, and those fine nodes (stride 2).
    coarse_range = {-1: slice(1, None), 0: slice(None), 1: slice(None, -1)}
    fine_range = {-1: slice(1, fine - 1, 2), 0: slice(0, fine, 2), 1: slice(1, fine - 1, 2)}
    shape = list(s.shape)
    shape[node_axis] = coarse
    out = s.new_zeros(shape)
    weight = {-1: 0.5, 0: 1.0, 1: 0.5}
    for p, o, big_o in itertools.product((-1, 0, 1), repeat=3):
        q = p + o - 2 * big_o
        if abs(q) > 1:
            continue
        src = [slice(None)] * s.ndim
        src[off_axis] = slice(o + 1, o + 2)
        src[node_axis] = fine_range[p]
        dst = [slice(None)] * s.ndim
        dst[off_axis] = slice(big_o + 1, big_o + 2)
        dst[node_axis] = coarse_range[p]
        out[tuple(dst)].add_(s[tuple(src)], alpha=weight[p] * weight[q])
    return out


def apply_stencil(
    stencil: torch.Tensor, x: torch.Tensor, dim: int, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``y[i] = Σ_o S[i, i + o] x[i + o]`` for a half-stored symmetric 3^d-point stencil.

    Parameters
    ----------
    stencil : torch.Tensor, shape ``(B, (3**d + 1) / 2) + nodes`` (:func:`stencil_from_cells`)
    x : torch.Tensor, shape ``(B,) + nodes``

    Each stored coefficient serves twice: ``S[i, i+o] x[i+o]`` and ``S[i+o, i] x[i]``.
    ``out`` (x's shape) receives the result when given.
    """
    out = torch.mul(stencil[:, 0], x, out=out)
    positive = _offsets(dim)[3**dim // 2 + 1 :]  # first nonzero component is +1
    rows = x.shape[1]
    # Row blocks along the first spatial axis keep x and out blocks in cache across the
    # (3**d - 1) / 2 coefficient passes; only the coefficients stream from memory.
    step = max(1, SLAB_ELEMENTS // max(1, x[:, 0].numel()))
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        for j, offset in enumerate(positive, start=1):
            here, there = _ranges(offset)
            lo, hi = r0, min(r1, rows - offset[0])  # rows i with i + o inside the grid
            if hi <= lo:
                continue
            here = (slice(None), slice(lo, hi), *here[2:])
            there = (slice(None), slice(lo + offset[0], hi + offset[0]), *there[2:])
            coef = stencil[:, j][here]
            out[here].addcmul_(coef, x[there])
            out[there].addcmul_(coef, x[here])
    return out


def _prolong_axis(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Linear interpolation along one axis: M nodes → 2M - 1."""
    m = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = 2 * m - 1
    out = x.new_empty(shape)
    even = [slice(None)] * x.ndim
    odd = [slice(None)] * x.ndim
    even[axis] = slice(0, None, 2)
    odd[axis] = slice(1, None, 2)
    out[tuple(even)] = x
    a, b = x.narrow(axis, 0, m - 1), x.narrow(axis, 1, m - 1)
    if x.requires_grad:  # a cascaded network trains through it; out= is not differentiable
        out[tuple(odd)] = (a + b) * 0.5
    else:
        torch.add(a, b, out=out[tuple(odd)])
        out[tuple(odd)] *= 0.5
    return out


def prolong(xc: torch.Tensor, dim: int) -> torch.Tensor:
    """Trilinear (bilinear) interpolation from coarse nodes ``(B,) + (M,)*d`` to ``2M - 1``."""
    x = xc
    for j in range(dim):
        x = _prolong_axis(x, x.ndim - dim + j)
    return x


def prolong_add(xc: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x += prolong(xc)`` without a fine-sized temporary (the last axis adds into x)."""
    y = xc
    for j in range(dim - 1):
        y = _prolong_axis(y, y.ndim - dim + j)
    m = y.shape[-1]
    x[..., 0::2].add_(y)
    odd = x[..., 1::2]
    odd.add_(y[..., : m - 1], alpha=0.5)
    odd.add_(y[..., 1:], alpha=0.5)
    return x


def restrict(xf: torch.Tensor, dim: int) -> torch.Tensor:
    """Transpose of :func:`prolong`: fine nodes ``(B,) + (2M - 1,)*d`` → coarse ``(M,)*d``."""
    x = xf
    for j in range(dim):
        axis = x.ndim - dim + j
        m = (x.shape[axis] + 1) // 2
        even = [slice(None)] * x.ndim
        odd = [slice(None)] * x.ndim
        even[axis] = slice(0, None, 2)
        odd[axis] = slice(1, None, 2)
        out = x[tuple(even)].clone()
        half = x[tuple(odd)] * 0.5
        out.narrow(axis, 0, m - 1).add_(half)
        out.narrow(axis, 1, m - 1).add_(half)
        x = out
    return x


@dataclass(eq=False)
class Level:
    """One level of the hierarchy (arrays batched, leading axis B).

    Exactly one of ``nu`` (cells, level 1: matrix-free) and ``stencil`` (half-stored
    3^d-point stencil, :func:`stencil_from_cells`) is set. ``dinv`` is ``1/diag(A)`` on
    free nodes, 0 on Dirichlet nodes; ``lam_max`` bounds the spectrum of ``diag(A)⁻¹A``
    per sample, shape ``(B,) + (1,)*d``.
    """

    dim: int
    n: int
    dinv: torch.Tensor = field(repr=False)
    lam_max: torch.Tensor = field(repr=False)
    nu: torch.Tensor | None = field(default=None, repr=False)
    stencil: torch.Tensor | None = field(default=None, repr=False)

    def apply(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """A x on free nodes (x zero on Dirichlet nodes; the result is too), into ``out``."""
        if self.nu is not None:
            return _zero_faces(apply_operator(self.nu, x, dim=self.dim, out=out))
        return _zero_faces(apply_stencil(self.stencil, x, self.dim, out=out))

    def nbytes(self) -> int:
        arrays = (self.dinv, self.nu, self.stencil)
        return sum(a.numel() * a.element_size() for a in arrays if a is not None)


@dataclass(eq=False)
class Hierarchy:
    """The multigrid hierarchy of one batch of fields and its V-cycle.

    Build with :meth:`build`; call :meth:`vcycle` as the preconditioner.
    """

    levels: list[Level]
    config: MultigridConfig
    #: (B, F, F) Cholesky factor of the coarsest operator on its F free nodes.
    coarse_factor: torch.Tensor = field(repr=False)
    #: Flat indices of the coarsest level's free nodes.
    coarse_free: torch.Tensor = field(repr=False)
    stats: dict = field(default_factory=dict)
    #: Per level, four work arrays (x, r, d, Ad) reused by every V-cycle.
    _work: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls, nu: torch.Tensor, *, dim: int, config: MultigridConfig | None = None
    ) -> Hierarchy:
        """Set up all levels from ν ``(B,) + (n,)*d`` on cells, in ν's dtype and device."""
        config = config or MultigridConfig()
        n = nu.shape[-1]
        batch = nu.shape[0]
        ones = (1,) * dim
        fine_dinv = _zero_faces(operator_diagonal(nu, dim=dim).reciprocal_())
        lam = torch.full((batch, *ones), max_eig_ratio(dim), dtype=nu.dtype, device=nu.device)
        return cls._coarsened([Level(dim, n, fine_dinv, lam, nu=nu)], config)

    @classmethod
    def from_stencil(
        cls, stencil: torch.Tensor, *, dim: int, config: MultigridConfig | None = None
    ) -> Hierarchy:
        """The hierarchy whose finest level is the half-stored ``stencil`` (the coarse part of
        a V-cycle whose fine levels live elsewhere: :mod:`mgtoolkit.spatial.multigrid`)."""
        return cls._coarsened([stencil_level(stencil, dim)], config or MultigridConfig())

    @classmethod
    def _coarsened(cls, levels: list[Level], config: MultigridConfig) -> Hierarchy:
        """Coarsen ``levels[-1]`` until the coarsest is small enough; factorize that one."""
        dim = levels[0].dim
        stencil = levels[-1].stencil
        while (levels[-1].n + 1) ** dim > config.coarsest_nodes and levels[-1].n >= 4:
            if stencil is None:
                stencil = stencil_from_cells(levels[0].nu, dim)
            else:
                stencil = coarsen_stencil(stencil, dim)
            levels.append(stencil_level(stencil, dim))
        coarsest = levels[-1]
        dense = _dense_matrix(coarsest)
        nodes = (coarsest.n + 1) ** dim
        device, dtype = coarsest.dinv.device, coarsest.dinv.dtype
        free = _zero_faces(torch.ones((coarsest.n + 1,) * dim)).flatten().nonzero().flatten()
        free = free.to(device)
        dense = dense[:, free][:, :, free].to(torch.float64)
        factor, failed = torch.linalg.cholesky_ex(dense)
        if bool(failed.any()) or not bool(torch.isfinite(factor).all()):
            bad = failed.nonzero().flatten().tolist() or "non-finite factor"
            raise CoarseFactorError(
                f"the coarsest-level operator ({dense.shape[-1]} free nodes, {dtype} "
                f"stencils) is not numerically positive definite (samples {bad})"
            )
        stats = {
            "levels": len(levels),
            "coarsest_nodes": nodes,
            "operator_bytes": sum(lv.nbytes() for lv in levels),
        }
        return cls(levels, config, factor, free, stats)

    def vcycle(self, b: torch.Tensor) -> torch.Tensor:
        """One V-cycle for ``A x = b`` from x = 0; b and the result ``(B,) + nodes``.

        The result is a work array of the hierarchy: the next call overwrites it.
        """
        return self._cycle(0, b)

    def _buffers(self, index: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Level ``index``'s work arrays, allocated once: fresh multi-GB arrays cost page
        faults on every use."""
        work = self._work.get(index)
        if work is None or work[0].shape != like.shape or work[0].dtype != like.dtype:
            work = tuple(torch.empty_like(like) for _ in range(4))
            self._work[index] = work
        return work

    def _cycle(self, index: int, b: torch.Tensor) -> torch.Tensor:
        """V-cycle on level ``index`` from zero; returns the level's x work array."""
        level = self.levels[index]
        if index == len(self.levels) - 1:
            return self._coarse_solve(b)
        work = self._buffers(index, b)
        _, r, _, ad = work
        x = self._smooth(level, b, None, work)
        torch.sub(b, level.apply(x, out=ad), out=r)
        rc = self._restrict(index, r)
        prolong_add(self._cycle(index + 1, rc), x, level.dim)
        del rc
        return self._smooth(level, b, x, work)

    def _restrict(self, index: int, r: torch.Tensor) -> torch.Tensor:
        """Level ``index``'s residual on the next level (zero on the Dirichlet nodes)."""
        return _zero_faces(restrict(r, self.levels[index].dim))

    def _smooth(self, level: Level, b: torch.Tensor, x: torch.Tensor | None, work) -> torch.Tensor:
        """Chebyshev–Jacobi smoothing, ``config.degree`` steps (Saad, Alg. 12.1), in place in
        the level's work arrays; starts from zero when x is None."""
        x_buf, r_buf, d, ad = work
        hi = level.lam_max
        lo = hi / self.config.ratio
        theta, delta = (hi + lo) / 2, (hi - lo) / 2
        sigma = theta / delta
        rho = 1.0 / sigma
        if x is None:
            r = b  # read only: b belongs to the caller
            torch.mul(level.dinv, r, out=d).div_(theta)
            x = x_buf.copy_(d)
        else:
            r = torch.sub(b, level.apply(x, out=ad), out=r_buf)
            torch.mul(level.dinv, r, out=d).div_(theta)
            x.add_(d)
        for _ in range(1, self.config.degree):
            level.apply(d, out=ad)
            r = torch.sub(b, ad, out=r_buf) if r is b else r.sub_(ad)
            rho_new = 1.0 / (2.0 * sigma - rho)
            d.mul_(rho_new * rho).add_(torch.mul(level.dinv, r, out=ad).mul_(2.0 * rho_new / delta))
            x.add_(d)
            rho = rho_new
        return x

    def _coarse_solve(self, b: torch.Tensor) -> torch.Tensor:
        flat = b.flatten(1)
        rhs = flat[:, self.coarse_free].to(torch.float64).unsqueeze(-1)
        sol = torch.cholesky_solve(rhs, self.coarse_factor).squeeze(-1)
        out = torch.zeros_like(flat)
        out[:, self.coarse_free] = sol.to(b.dtype)
        return out.reshape(b.shape)


def stencil_level(stencil: torch.Tensor, dim: int) -> Level:
    """A stencil level: its inverse diagonal and Gershgorin bound from the half-stored stencil."""
    batch, ones = stencil.shape[0], (1,) * dim
    dinv = _zero_faces(stencil[:, 0].reciprocal())
    row_abs = apply_stencil(stencil.abs(), torch.ones_like(dinv), dim)  # Σ_j |S_ij|
    gersh = (row_abs * dinv).flatten(1).amax(dim=1).reshape(batch, *ones)
    return Level(dim, stencil.shape[-1] - 1, dinv, gersh, stencil=stencil)


def _dense_matrix(level: Level) -> torch.Tensor:
    """Dense matrix ``(B, N, N)`` of a (small) level's operator, by applying it to unit vectors.

    The samples' unit vectors go through one operator application where they fit
    :data:`_DENSE_CHUNK` elements: the training loss builds a hierarchy for every mini-batch,
    and one application per sample is mostly per-call overhead at these sizes.
    """
    dim = level.dim
    shape = (level.n + 1,) * dim
    size = int(np.prod(shape))
    ref = level.nu if level.nu is not None else level.stencil
    units = _zero_faces(torch.eye(size, dtype=ref.dtype, device=ref.device).reshape((size, *shape)))
    # Several samples per application copy their unit vectors and coefficients; one sample
    # needs no copy (expand), so a level too large to batch costs no more memory than itself.
    per = max(1, _DENSE_CHUNK // (size * max(size, ref[0].numel())))
    mats = []
    for part in ref.split(per):
        k = part.shape[0]
        if k == 1:
            coeffs, x = part.expand((size, *part.shape[1:])), units
        else:
            coeffs, x = part.repeat_interleave(size, dim=0), units.repeat(k, *(1,) * dim)
        if level.nu is not None:
            cols = apply_operator(coeffs, x, dim=dim)
        else:
            cols = apply_stencil(coeffs, x, dim)
        mats.append(_zero_faces(cols).reshape(k, size, size).transpose(1, 2))
    return torch.cat(mats)


#: Elements of the unit vectors (and of the coefficients) one operator application in
#: :func:`_dense_matrix` takes.
_DENSE_CHUNK = 2**22


#: Coarsest grid of the preconditioning V-cycle of :func:`preconditioned_gradient` (nodes):
#: small enough that its dense factorization per sample costs little next to the network
#: (9² nodes in 2D, 5³ in 3D).
PRECONDITIONER_COARSEST_NODES = 125


@torch.no_grad()
def preconditioned_gradient(nu: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``c = B ∇_u J``: one V-cycle applied to ``K(ν) u`` on the free nodes (no autograd).

    Since B ≈ K⁻¹, ``c ≈ u − u_fem`` (the multigrid loss's correction, see
    :func:`mgtoolkit.train.losses.multigrid_loss`).

    Parameters
    ----------
    nu : Tensor, shape (B,) + (n,) * d on cells
    u : Tensor, shape (B,) + (n + 1,) * d on nodes (Dirichlet values included)

    Returns
    -------
    Tensor, u's shape, dtype and device; zero on the Dirichlet nodes
    """
    dim = nu.dim() - 1
    mg = MultigridConfig(coarsest_nodes=PRECONDITIONER_COARSEST_NODES)
    hierarchy = Hierarchy.build(nu, dim=dim, config=mg)
    grad = apply_operator(nu, u.detach()) * free_mask(u.shape[1:], dtype=u.dtype)
    return hierarchy.vcycle(grad).clone()


def power_weights(c: torch.Tensor, power: float, *, mean=None) -> torch.Tensor | None:
    """Per-node weights ``|c|^(p−2)`` over each sample's mean of them; None for p = 2.

    ``c``: (B,) + nodes, the correction of each whole field. Weighting the multigrid loss's
    terms by them makes its gradient ≈ that of mean |u − u_fem|^p / p per sample. ``mean``
    (optional) maps the unnormalized weights to each sample's mean over its whole field,
    shape (B,), when ``c`` holds only part of it (a slab).
    """
    if power == 2:
        return None
    spatial = tuple(range(1, c.dim()))
    w = c.abs().pow(power - 2)
    if mean is None:
        scale = w.mean(dim=spatial, keepdim=True)
    else:
        scale = mean(w).reshape((-1,) + (1,) * len(spatial))
    return w / scale.clamp_min(torch.finfo(w.dtype).tiny)
