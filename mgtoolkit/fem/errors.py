"""Errors of an approximate solution against a reference (the FEM solution), per sample."""

from __future__ import annotations

import torch

from mgtoolkit.fem.operator import energy, split_shapes

__all__ = ["error_metrics"]


def error_metrics(
    nu: torch.Tensor, u: torch.Tensor, ref: torch.Tensor, *, dim: int | None = None
) -> dict[str, torch.Tensor]:
    """Relative L2 error, max abs error and energy gap of ``u`` against ``ref``, in float64.

    Parameters
    ----------
    nu : Tensor, shape (B,) + (n,) * d or (n,) * d
        Diffusivity on cells.
    u, ref : Tensor, shape (B,) + (n + 1,) * d or (n + 1,) * d
        Solution and reference on nodes.
    dim : int, optional
        Spatial dimension, inferred from the shapes when omitted.

    Returns
    -------
    dict of str to Tensor, each of shape (B,) (0-d for a single sample)
        ``rel_l2`` = ‖u − ref‖ / ‖ref‖ over nodes, ``max_abs`` = max |u − ref| and
        ``energy_gap`` = (J(u) − J(ref)) / J(ref), J the discrete energy.
    """
    nu, u, ref = (
        torch.as_tensor(nu).double(),
        torch.as_tensor(u).double(),
        torch.as_tensor(ref).double(),
    )
    dim, _, batch = split_shapes(nu, u, dim=dim)
    if not batch:
        nu, u, ref = nu[None], u[None], ref[None]
    diff = (u - ref).flatten(1)
    j, j_ref = energy(nu, u, dim=dim), energy(nu, ref, dim=dim)
    out = {
        "rel_l2": diff.norm(dim=1) / ref.flatten(1).norm(dim=1),
        "max_abs": diff.abs().amax(dim=1),
        "energy_gap": (j - j_ref) / j_ref,
    }
    return out if batch else {k: v[0] for k, v in out.items()}
