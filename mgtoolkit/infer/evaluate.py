"""A network's error against the FEM reference on fresh KL fields: an unseen seed and the ω corners.

The two groups every accuracy figure of the toolkit is reported on: fields whose ω were drawn
with a seed no training store uses, and the fields at the 2⁴ corners of the ω box (the hardest,
contrast ≈ 10⁶). Used by the accuracy benchmark and when a pretrained model's card is written.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["corner_fields", "score", "unseen_fields"]

#: Added to a training seed to draw the unseen fields (``generate`` draws ω with Sobol, not this).
UNSEEN_SEED_OFFSET = 10_000


def unseen_fields(*, dim: int, n: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` KL diffusivities with ω uniform in the box, drawn from ``seed + 10000``.

    Returns
    -------
    list of ndarray, each of shape (n,) * dim, float64
        ν on cells.
    """
    from mgtoolkit.fields import OMEGA_BOUND, KLFamily

    family = KLFamily()
    rng = np.random.default_rng(UNSEEN_SEED_OFFSET + seed)
    omegas = [rng.uniform(-OMEGA_BOUND, OMEGA_BOUND, 4) for _ in range(count)]
    return [family.field(w, dim=dim, n=n) for w in omegas]


def corner_fields(*, dim: int, n: int) -> list[np.ndarray]:
    """The 16 KL diffusivities at the corners of the ω box, each of shape (n,) * dim."""
    from mgtoolkit.fields import OMEGA_BOUND, KLFamily

    family = KLFamily()
    corners = itertools.product((-OMEGA_BOUND, OMEGA_BOUND), repeat=4)
    return [family.field(np.array(c), dim=dim, n=n) for c in corners]


def score(
    model: Callable[[torch.Tensor], torch.Tensor],
    fields: Sequence[np.ndarray],
    *,
    references: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    """Mean relative L2 error and the mean and worst per-field max abs error of ``model``.

    Parameters
    ----------
    model : callable
        Maps ν of shape (1,) + (n,) * d (cells, float32) to u of shape (1,) + (n + 1,) * d
        (nodes), e.g. a :class:`~mgtoolkit.nn.UNet` in eval mode.
    fields : sequence of ndarray, each of shape (n,) * d
        Diffusivities on cells.
    references : sequence of ndarray, each of shape (n + 1,) * d, optional
        The FEM solutions of ``fields``; solved here (:func:`mgtoolkit.fem.solve`) if omitted.

    Returns
    -------
    dict
        ``rel_l2`` (mean over fields of ‖u − u_fem‖ / ‖u_fem‖ over nodes), ``max_abs`` (mean
        over fields of max |u − u_fem|), ``worst_max_abs`` and ``fields`` (their number).
    """
    from mgtoolkit.fem import error_metrics, solve

    if references is None:
        references = [solve(nu) for nu in fields]
    rel, mx = [], []
    with torch.no_grad():
        for nu, ref in zip(fields, references, strict=True):
            x = torch.as_tensor(nu, dtype=torch.float32)[None]
            e = error_metrics(x[0], model(x)[0], torch.as_tensor(ref))
            rel.append(float(e["rel_l2"]))
            mx.append(float(e["max_abs"]))
    return {
        "rel_l2": float(np.mean(rel)),
        "max_abs": float(np.mean(mx)),
        "worst_max_abs": float(np.max(mx)),
        "fields": len(rel),
    }
