"""The multigrid loss's V-cycle on slabs: fine levels split like the fields, coarse ones whole.

The V-cycle of :func:`mgtoolkit.fem.multigrid.preconditioned_gradient` is a chain of local
stencil operations, so each rank runs it on its slab: every operation extends the slab's
arrays by the few planes it reads across a slab face (:func:`node_halo`, zeros beyond the
outer faces, as outside the whole grid) and keeps the planes the slab holds. Each rank thus
computes, plane for plane, the numbers the whole-field cycle computes there. Levels whose
slabs would be thinner than :data:`MIN_PLANES` cell planes are gathered (their stencil once,
a residual per cycle) and run whole on every rank: they are small. Only the spectrum bounds of
the smoother need a reduction over the slabs (a maximum).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mgtoolkit.fem.element import diagonal_factor, max_eig_ratio
from mgtoolkit.fem.multigrid import (
    PRECONDITIONER_COARSEST_NODES,
    Hierarchy,
    MultigridConfig,
    _zero_faces,
    apply_stencil,
    coarsen_stencil,
    galerkin_kernel,
    restrict,
)
from mgtoolkit.fem.operator import apply_block, node_cell_sum, operator_coefficients
from mgtoolkit.spatial.halo import field_sum, gather, halo
from mgtoolkit.spatial.layout import SlabLayout

__all__ = ["MIN_PLANES", "SlabHierarchy", "node_halo", "slab_preconditioned_gradient"]

#: Fewest cell planes per slab a level keeps on slabs: coarsening reads two node planes past
#: each face and needs an even count.
MIN_PLANES = 4


def node_halo(x: torch.Tensor, layout: SlabLayout, *, dim: int, planes: int) -> torch.Tensor:
    """The node planes a slab holds, extended by ``planes`` more on each side.

    ``x`` holds ``m + 1`` node planes along its split axis (``x.dim() − dim``), the first and
    last shared with the neighbours; the planes added are the neighbours' next ones (zeros
    beyond the outer faces). Every rank of the spatial group must call it.
    """
    axis = x.dim() - dim
    m = x.shape[axis] - 1
    inner = x.narrow(axis, 1, m - 1)  # the shared planes are not sent: the receiver has them
    ext = halo(inner, layout, axis=axis, lo=planes, hi=planes, outer="zeros")
    below = ext.narrow(axis, 0, planes)
    above = ext.narrow(axis, ext.shape[axis] - planes, planes)
    return torch.cat([below, x, above], dim=axis)


def _field_max(t: torch.Tensor, layout: SlabLayout) -> torch.Tensor:
    """Maximum of ``t`` (B,) over the slabs of each field."""
    table = t.new_zeros((layout.size, *t.shape))
    table[layout.index] = t
    return field_sum(table, layout).amax(dim=0)


@dataclass(eq=False)
class SlabLevel:
    """One level on slabs: the held node planes ``(B, M + 1, …)`` of a field of ``n`` cells.

    Level 1 keeps ν with one halo cell plane on each side (``nu``), stencil levels their
    half-stored stencil with one halo node plane on each side (``stencil``).
    """

    dim: int
    n: int
    layout: SlabLayout = field(repr=False)
    dinv: torch.Tensor = field(repr=False)
    lam_max: torch.Tensor = field(repr=False)
    nu: torch.Tensor | None = field(default=None, repr=False)
    stencil: torch.Tensor | None = field(default=None, repr=False)

    def apply(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """A x on the held planes (zero on the Dirichlet nodes), into ``out``."""
        x_ext = node_halo(x, self.layout, dim=self.dim, planes=1)
        if self.nu is not None:
            y = torch.zeros_like(x_ext)
            coef = operator_coefficients(self.dim, self.n)
            apply_block(self.nu.to(x.dtype), x_ext, y, self.dim, coef)
        else:
            y = apply_stencil(self.stencil, x_ext, self.dim)
        y = y.narrow(1, 1, x.shape[1])
        out = y.clone() if out is None else out.copy_(y)
        return _zero_faces(out)


def _stencil_from_cells(nu: torch.Tensor, layout: SlabLayout) -> torch.Tensor:
    """Level 2's half-stored stencil on the slab's held coarse node planes, from its cells."""
    dim = nu.dim() - 1
    n = nu.shape[-1]
    centre = 3**dim // 2
    weight = torch.tensor(galerkin_kernel(dim)[centre:], dtype=nu.dtype, device=nu.device)
    # coarse node I reads fine cells 2I − 2 … 2I + 1: two cell planes past each face
    ext = halo(nu, layout, axis=1, lo=2, hi=2, outer="zeros")
    conv = torch.nn.functional.conv3d if dim == 3 else torch.nn.functional.conv2d
    out = conv(ext.unsqueeze(1), weight, stride=2, padding=(0,) + (2,) * (dim - 1))
    return out.mul_((1.0 / n) ** (dim - 2))


def _coarsened(stencil: torch.Tensor, layout: SlabLayout, dim: int) -> torch.Tensor:
    """The next level's stencil on the held planes (the Galerkin product reads two past)."""
    held = (stencil.shape[2] - 1) // 2 + 1
    return coarsen_stencil(node_halo(stencil, layout, dim=dim, planes=2), dim).narrow(2, 1, held)


def _stencil_level(stencil: torch.Tensor, layout: SlabLayout, dim: int, n: int) -> SlabLevel:
    ext = node_halo(stencil, layout, dim=dim, planes=1)
    dinv = _zero_faces(stencil[:, 0].reciprocal())
    ones = node_halo(torch.ones_like(dinv), layout, dim=dim, planes=1)
    row_abs = apply_stencil(ext.abs(), ones, dim).narrow(1, 1, dinv.shape[1])  # Σ_j |S_ij|
    local = (row_abs * dinv).flatten(1).amax(dim=1)
    gersh = _field_max(local, layout).reshape((-1,) + (1,) * dim)
    return SlabLevel(dim, n, layout, dinv, gersh, stencil=ext)


@dataclass(eq=False)
class SlabHierarchy(Hierarchy):
    """A V-cycle whose fine levels run on slabs and whose coarse part runs whole (``whole``).

    ``levels`` are the slab levels and, last, a placeholder for the whole part: the V-cycle
    of :class:`~mgtoolkit.fem.multigrid.Hierarchy` runs unchanged, with its restriction and its
    coarse solve replaced.
    """

    layout: SlabLayout | None = None
    whole: Hierarchy | None = None

    @classmethod
    def build_slabs(
        cls, nu: torch.Tensor, layout: SlabLayout, *, config: MultigridConfig | None = None
    ) -> SlabHierarchy:
        """All levels for the slab ν ``(B, m) + (n,) * (d − 1)`` on cells.

        The fine level must not be the coarsest (then there is nothing to split: see
        :func:`slab_preconditioned_gradient`).

        Raises
        ------
        ValueError
            The slab has fewer than :data:`MIN_PLANES` cell planes.
        """
        config = config or MultigridConfig()
        dim = nu.dim() - 1
        n = nu.shape[-1]
        m = nu.shape[1]
        if m < MIN_PLANES:
            raise ValueError(f"a slab of {m} cell planes is too thin for the V-cycle on slabs")
        ones = (1,) * dim
        ext = halo(nu, layout, axis=1, lo=1, hi=1, outer="zeros")
        diag = node_cell_sum(ext, dim).narrow(1, 1, m + 1)
        dinv = _zero_faces(diag.mul_(diagonal_factor(dim) * (1.0 / n) ** (dim - 2)).reciprocal_())
        lam = torch.full((nu.shape[0], *ones), max_eig_ratio(dim), dtype=nu.dtype)
        levels: list = [SlabLevel(dim, n, layout, dinv, lam.to(nu.device), nu=ext)]
        stencil = _stencil_from_cells(nu, layout)
        while True:  # the fine level is not the coarsest (slab_preconditioned_gradient)
            if len(levels) > 1:
                stencil = _coarsened(stencil, layout, dim)
            coarse_n = levels[-1].n // 2
            last = (coarse_n + 1) ** dim <= config.coarsest_nodes or coarse_n < 4
            if last or coarse_n // layout.size < MIN_PLANES:
                # the rest of the cycle is small: whole, on every rank of the group
                whole = gather(stencil, layout, grid="nodes", dim=dim)
                levels.append(None)
                return cls(
                    levels, config, None, None, layout=layout,
                    whole=Hierarchy.from_stencil(whole, dim=dim, config=config),
                )  # fmt: skip
            levels.append(_stencil_level(stencil, layout, dim, coarse_n))

    def _restrict(self, index: int, r: torch.Tensor) -> torch.Tensor:
        # restriction reads one fine plane past each face; two keep the arrays' first plane
        # a coarse node
        held = (r.shape[1] - 1) // 2 + 1
        ext = node_halo(r, self.layout, dim=self.levels[0].dim, planes=2)
        return _zero_faces(restrict(ext, self.levels[0].dim).narrow(1, 1, held))

    def _coarse_solve(self, b: torch.Tensor) -> torch.Tensor:
        dim = self.levels[0].dim
        x = self.whole.vcycle(gather(b, self.layout, grid="nodes", dim=dim))
        return self.layout.split(x, grid="nodes", dim=dim).clone()


@torch.no_grad()
def slab_preconditioned_gradient(
    nu: torch.Tensor, u: torch.Tensor, layout: SlabLayout
) -> torch.Tensor:
    """:func:`~mgtoolkit.fem.multigrid.preconditioned_gradient` of the slabs' whole fields, on
    this slab's held node planes (no autograd).

    Slabs thinner than :data:`MIN_PLANES` cell planes gather ν and u and run the whole cycle.

    Parameters
    ----------
    nu : Tensor, shape ``(B, m) + (n,) * (d − 1)`` on cells (the slab)
    u : Tensor, shape ``(B, m + 1) + (n + 1,) * (d − 1)`` on the held node planes
    layout : SlabLayout

    Returns
    -------
    Tensor, u's shape; zero on the Dirichlet nodes
    """
    from mgtoolkit.fem.multigrid import preconditioned_gradient

    dim = nu.dim() - 1
    n = nu.shape[-1]
    if layout.size == 1:
        return preconditioned_gradient(nu, u)
    config = MultigridConfig(coarsest_nodes=PRECONDITIONER_COARSEST_NODES)
    if nu.shape[1] < MIN_PLANES or (n + 1) ** dim <= config.coarsest_nodes:
        whole = preconditioned_gradient(
            gather(nu, layout, grid="cells", dim=dim), gather(u, layout, grid="nodes", dim=dim)
        )
        return layout.split(whole, grid="nodes", dim=dim).clone()
    hierarchy = SlabHierarchy.build_slabs(nu, layout, config=config)
    gradient = hierarchy.levels[0].apply(u.detach())
    return hierarchy.vcycle(gradient).clone()
