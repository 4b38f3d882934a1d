"""The training loss on slabs: each rank's cells' part of J, combined over the mesh.

Each cell belongs to one slab, so the parts of :func:`~mgtoolkit.fem.slab_energy` sum to J
(the node plane two slabs share is in both of their u, computed identically by both: each
copy carries the gradient of its own side's cells back through the network). The Dirichlet
faces x = 0 and x = 1 are not on the split axis: every slab holds its part of both, already
in u; the Neumann faces of the split axis are natural (nothing to impose).
"""

from __future__ import annotations

import torch

from mgtoolkit.fem import slab_energy
from mgtoolkit.fem.multigrid import power_weights
from mgtoolkit.spatial.halo import field_sum
from mgtoolkit.spatial.layout import SlabLayout
from mgtoolkit.spatial.multigrid import slab_preconditioned_gradient

__all__ = ["SLAB_LOSSES", "slab_loss"]

#: Loss kinds computed on slabs (``OptimConfig.loss``).
SLAB_LOSSES = ("energy", "scaled_energy", "multigrid")


def slab_loss(
    kind: str, nu: torch.Tensor, u: torch.Tensor, layout: SlabLayout, *, power: float = 2.0
) -> torch.Tensor:
    """The batch's mean loss (0-d) from this rank's slabs, with the gradient the mesh needs.

    Its **value** is the mean loss of the whole fields of this data group's local batch, the
    same on every slab of the group (what a data-parallel rank's loss is). Its **gradient** is
    ``S`` times that of this rank's part (``S = layout.size``), so that after
    :func:`mgtoolkit.comm.average_gradients` (a mean over all ``D × S`` ranks) every rank holds
    the gradient of the global mean loss: the sum over slabs, the mean over data groups.

    Parameters
    ----------
    kind : {"energy", "scaled_energy", "multigrid"}
        As :func:`mgtoolkit.train.losses.batch_loss`; "scaled_energy" divides ν by each whole
        field's geometric mean. "multigrid": the V-cycle of its correction runs on the
        slabs (:mod:`mgtoolkit.spatial.multigrid`; its coarse levels whole); the mean over
        nodes counts each node plane once, by its owner.
    nu : torch.Tensor, shape ``(B, m) + (n,) * (d − 1)`` on cells
        This rank's slab of ν.
    u : torch.Tensor, shape ``(B, m + 1) + (n + 1,) * (d − 1)`` on nodes
        The node planes the slab holds (:meth:`SlabUNet.forward`'s output).
    layout : SlabLayout
    power : float
        As :func:`mgtoolkit.train.losses.multigrid_loss` ("multigrid" only).
    """
    if kind not in SLAB_LOSSES:
        raise ValueError(
            f"loss {kind!r} does not run on slabs: use one of {', '.join(SLAB_LOSSES)} with "
            "spatial parallelism (or spatial = 1)"
        )
    dim = nu.dim() - 1
    n = int(nu.shape[-1])
    if kind == "scaled_energy":
        spatial = tuple(range(1, dim + 1))
        log_mean = field_sum(torch.log(nu).sum(dim=spatial), layout) / n**dim
        nu = nu / torch.exp(log_mean).view(-1, *[1] * dim)
    if kind == "multigrid":
        part = _multigrid_part(nu, u, layout, power=power).mean() * layout.size
    else:
        part = slab_energy(nu, u, n=n, dim=dim).mean() * layout.size
    whole = field_sum(part.detach(), layout) / layout.size
    return part + (whole - part).detach()


def _multigrid_part(
    nu: torch.Tensor, u: torch.Tensor, layout: SlabLayout, *, power: float
) -> torch.Tensor:
    """This slab's part ``(B,)`` of the multigrid loss: ½ Σ over its own nodes of the terms,
    over the whole field's node count."""
    dim = nu.dim() - 1
    n = int(nu.shape[-1])
    spatial = tuple(range(1, dim + 1))
    own = layout.nodes(n, held=False)
    owned = own.stop - own.start  # the next slab counts the plane both hold

    def field_mean(w: torch.Tensor) -> torch.Tensor:
        return field_sum(w.narrow(1, 0, owned).sum(dim=spatial), layout) / (n + 1) ** dim

    c = slab_preconditioned_gradient(nu, u, layout)
    terms = (u - (u.detach() - c)).square()
    w = power_weights(c, power, mean=field_mean)
    if w is not None:
        terms = terms * w
    return 0.5 * terms.narrow(1, 0, owned).sum(dim=spatial) / (n + 1) ** dim
