"""Finest-level validation: the network's errors on held-out samples against FEM."""

from __future__ import annotations

import torch

from mgtoolkit.fem import energy, error_metrics

__all__ = ["validation_metrics"]


@torch.no_grad()
def validation_metrics(
    model: torch.nn.Module,
    nu: torch.Tensor,
    u_fem: torch.Tensor | None,
    *,
    chunk: int,
    device: torch.device,
) -> dict[str, float]:
    """Metrics of ``model`` (in eval mode) on held-out fields.

    Parameters
    ----------
    nu : Tensor, shape (N,) + (n,) * d
        Held-out diffusivities on cells (any device; evaluated ``chunk`` at a time on
        ``device``).
    u_fem : Tensor, shape (N,) + (n + 1,) * d, or None
        Their FEM solutions on nodes, when the store has them.

    Returns
    -------
    dict
        ``val_energy`` (mean J of the prediction) and, with ``u_fem``, ``val_energy_gap``
        (mean relative energy gap), ``val_rel_l2`` (mean relative L2 error over nodes) and
        ``val_max_abs`` (max abs error over all samples).
    """
    preds = [model(nu[i : i + chunk].to(device)).double().cpu() for i in range(0, len(nu), chunk)]
    u = torch.cat(preds)
    nu64 = nu.double()
    if u_fem is None:
        return {"val_energy": float(energy(nu64, u).mean())}
    errors = error_metrics(nu64, u, u_fem)
    return {
        "val_energy": float(energy(nu64, u).mean()),
        "val_energy_gap": float(errors["energy_gap"].mean()),
        "val_rel_l2": float(errors["rel_l2"].mean()),
        "val_max_abs": float(errors["max_abs"].max()),
    }
