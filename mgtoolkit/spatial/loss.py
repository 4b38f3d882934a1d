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
from mgtoolkit.spatial.halo import field_sum
from mgtoolkit.spatial.layout import SlabLayout

__all__ = ["SLAB_LOSSES", "slab_loss"]

#: Loss kinds computed on slabs (``OptimConfig.loss``).
SLAB_LOSSES = ("energy", "scaled_energy")


def slab_loss(kind: str, nu: torch.Tensor, u: torch.Tensor, layout: SlabLayout) -> torch.Tensor:
    """The batch's mean loss (0-d) from this rank's slabs, with the gradient the mesh needs.

    Its **value** is the mean loss of the whole fields of this data group's local batch, the
    same on every slab of the group (what a data-parallel rank's loss is). Its **gradient** is
    ``S`` times that of this rank's part (``S = layout.size``), so that after
    :func:`mgtoolkit.comm.average_gradients` (a mean over all ``D × S`` ranks) every rank holds
    the gradient of the global mean loss: the sum over slabs, the mean over data groups.

    Parameters
    ----------
    kind : {"energy", "scaled_energy"}
        As :func:`mgtoolkit.train.losses.batch_loss`; "scaled_energy" divides ν by each whole
        field's geometric mean.
    nu : torch.Tensor, shape ``(B, m) + (n,) * (d − 1)`` on cells
        This rank's slab of ν.
    u : torch.Tensor, shape ``(B, m + 1) + (n + 1,) * (d − 1)`` on nodes
        The node planes the slab holds (:meth:`SlabUNet.forward`'s output).
    layout : SlabLayout
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
    part = slab_energy(nu, u, n=n, dim=dim).mean() * layout.size
    whole = field_sum(part.detach(), layout) / layout.size
    return part + (whole - part).detach()
