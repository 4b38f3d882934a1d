"""Dirichlet conditions of the problem: u = 1 on the face x = 0, u = 0 on the face x = 1.

x is the last array axis (:mod:`mgtoolkit.grids`), so the Dirichlet nodes are x-index 0 and
x-index n of a node field; every other node is free (natural Neumann condition).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["DIRICHLET_HIGH", "DIRICHLET_LOW", "free_mask", "impose_dirichlet"]

#: u on the face x = 0 (x-index 0).
DIRICHLET_HIGH = 1.0
#: u on the face x = 1 (x-index n).
DIRICHLET_LOW = 0.0


def impose_dirichlet(u):
    """Return a new node field equal to u with the Dirichlet values set exactly.

    Parameters
    ----------
    u : torch.Tensor or numpy.ndarray, shape ``(..., n + 1)`` on nodes (x last)
        Any leading axes (batch, z, y) are kept.

    Returns
    -------
    Same type, shape, dtype and device as u
        x-index 0 set to 1, x-index n set to 0. For a tensor the result is built with
        differentiable operations: the gradient reaches the free nodes only.
    """
    if isinstance(u, np.ndarray):
        out = np.array(u, copy=True)
        out[..., 0] = DIRICHLET_HIGH
        out[..., -1] = DIRICHLET_LOW
        return out
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"u must be a torch.Tensor or numpy.ndarray (got {type(u).__name__})")
    if u.shape[-1] < 2:
        raise ValueError(f"u needs at least 2 nodes along x (got shape {tuple(u.shape)})")
    high = torch.full_like(u[..., :1], DIRICHLET_HIGH)
    low = torch.full_like(u[..., :1], DIRICHLET_LOW)
    return torch.cat([high, u[..., 1:-1], low], dim=-1)


def free_mask(shape, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """1 on free nodes, 0 on the Dirichlet faces, for a node field of ``shape`` (x last)."""
    mask = torch.ones(tuple(shape), dtype=dtype, device=device)
    mask[..., 0] = 0
    mask[..., -1] = 0
    return mask
