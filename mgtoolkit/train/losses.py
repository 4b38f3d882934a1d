"""The training losses: label-free functions of (ν, u) whose minimizer is the FEM solution.

- "energy": the mean discrete energy J over the batch (the paper's loss);
- "scaled_energy": J with ν divided by each sample's geometric mean (same minimizer per
  sample, J being linear in ν), so that samples of large mean ν do not dominate the gradient;
- "multigrid": J's gradient preconditioned by one multigrid V-cycle, ≈ the mean squared
  error of u against the FEM solution at any contrast (see :func:`multigrid_loss`).
"""

from __future__ import annotations

import torch

from mgtoolkit.fem import energy
from mgtoolkit.fem.multigrid import (
    PRECONDITIONER_COARSEST_NODES,
    power_weights,
    preconditioned_gradient,
)

__all__ = ["PRECONDITIONER_COARSEST_NODES", "batch_loss", "multigrid_loss"]


def multigrid_loss(nu: torch.Tensor, u: torch.Tensor, *, power: float = 2.0) -> torch.Tensor:
    """½ mean over nodes of ``c²`` with ``c = B ∇_u J`` held fixed, B one multigrid V-cycle.

    Its gradient with respect to u is ``c``: a multigrid-preconditioned energy gradient, with
    the same stationary point as J (``c = 0`` ⇔ ``K u = 0`` on free nodes ⇔ the FEM solution)
    and no labels. Since B ≈ K⁻¹, ``c ≈ u − u_fem``: the loss is close to half the mean
    squared error of u, in every region and at any contrast, where J's own gradient ``K u``
    scales with ν and with the error's frequency (smooth errors in low-ν regions barely move
    an energy-trained network).

    With ``power`` p > 2 each node's term is weighted by ``|c|^(p−2)`` over its sample's mean
    of that, so the gradient is ≈ that of mean |u − u_fem|^p / p (scaled per sample): the
    largest errors of each sample weigh most. Per sample, not per batch, so that a batch
    split over processes has the same gradient.

    Parameters
    ----------
    nu : Tensor, shape (B,) + (n,) * d
        Diffusivity on cells.
    u : Tensor, shape (B,) + (n + 1,) * d
        The network's prediction on nodes (Dirichlet values included).
    """
    c = preconditioned_gradient(nu, u)
    spatial = tuple(range(1, u.dim()))
    terms = (u - (u.detach() - c)).square()
    w = power_weights(c, power)
    if w is not None:
        terms = terms * w
    return 0.5 * terms.mean(dim=spatial).mean()


def batch_loss(kind: str, nu: torch.Tensor, u: torch.Tensor, *, power: float = 2.0) -> torch.Tensor:
    """The mean loss of a batch (0-d tensor) of the kind ``OptimConfig.loss`` names.

    ``nu``: (B,) + (n,) * d on cells; ``u``: (B,) + (n + 1,) * d on nodes. ``power`` applies to
    "multigrid" only.
    """
    if kind == "multigrid":
        return multigrid_loss(nu, u, power=power)
    if kind == "scaled_energy":
        spatial = tuple(range(1, nu.dim()))
        nu = nu / torch.exp(torch.log(nu).mean(dim=spatial, keepdim=True))
    elif kind != "energy":
        raise ValueError(f"unknown loss {kind!r}: use 'energy', 'scaled_energy' or 'multigrid'")
    return energy(nu, u).mean()
