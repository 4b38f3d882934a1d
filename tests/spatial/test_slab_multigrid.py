"""The multigrid loss's V-cycle on slabs against the whole-field V-cycle, on real ranks.

Each rank draws the same fields (same seeds), computes the whole-field correction
``preconditioned_gradient`` in its own process (the reference) and then its slab's part with
the V-cycle on slabs; they must agree on every held node plane to 1e-12 (float64). The cases
cover 2D and 3D, p = 2 and 4 and a 2 × 2 data × space mesh, and several slab levels before the
coarse part is gathered.
"""

from __future__ import annotations

import pytest
import torch

from mgtoolkit.fem.multigrid import (
    PRECONDITIONER_COARSEST_NODES,
    MultigridConfig,
    preconditioned_gradient,
)
from mgtoolkit.launch import spawn
from mgtoolkit.spatial import SlabLayout
from mgtoolkit.spatial.multigrid import MIN_PLANES, SlabHierarchy, slab_preconditioned_gradient

TOL = 1e-12


def _fields(dim: int, n: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ν with a contrast of ~e^±6 and a u that is not the solution (a residual everywhere)."""
    gen = torch.Generator().manual_seed(7)
    nu = torch.exp(2.0 * torch.randn((batch,) + (n,) * dim, generator=gen, dtype=torch.float64))
    u = torch.rand((batch,) + (n + 1,) * dim, generator=gen, dtype=torch.float64)
    u[..., 0], u[..., -1] = 1.0, 0.0  # the Dirichlet values
    return nu, u


def _errors(cases: list[tuple[int, int, int]]) -> list[dict]:
    """Per case (dim, n, spatial): the slab levels used and the largest relative difference."""
    torch.set_num_threads(1)
    out = []
    for dim, n, spatial in cases:
        layout = SlabLayout.from_world(spatial)
        nu, u = _fields(dim, n, batch=4)
        part = layout.batch(4)
        want = layout.split(preconditioned_gradient(nu[part], u[part]), grid="nodes", dim=dim)
        nu_s = layout.split(nu[part], grid="cells", dim=dim)
        u_s = layout.split(u[part], grid="nodes", dim=dim)
        got = slab_preconditioned_gradient(nu_s, u_s, layout)
        config = MultigridConfig(coarsest_nodes=PRECONDITIONER_COARSEST_NODES)
        slab_levels = len(SlabHierarchy.build_slabs(nu_s, layout, config=config).levels) - 1
        out.append(
            {
                "slab levels": slab_levels,
                "error": float((got - want).abs().max() / want.abs().max()),
            }
        )
    return out


def _check(ranks: list[list[dict]], cases, slab_levels: list[int]) -> None:
    for rank, results in enumerate(ranks):
        for case, levels, result in zip(cases, slab_levels, results, strict=True):
            assert result["slab levels"] == levels, (rank, case, result)
            assert result["error"] <= TOL, f"rank {rank}, case {case}: {result['error']:.3g}"


def test_two_slabs_equal_the_whole_cycle():
    # (dim, n, spatial): 2D 64² runs levels 64, 32, 16 on slabs, 8 whole; 3D 32³: 32, 16, 8
    cases = [(2, 64, 2), (3, 32, 2), (3, 16, 2)]
    _check(spawn(_errors, 2, cases), cases, [3, 3, 2])


def test_four_slabs_and_a_two_by_two_mesh_equal_the_whole_cycle():
    cases = [(2, 64, 4), (3, 32, 4), (3, 16, 2)]  # the last: 2 data groups × 2 slabs
    _check(spawn(_errors, 4, cases), cases, [3, 2, 2])


def test_thin_slabs_are_refused_by_the_slab_hierarchy():
    nu = torch.ones(1, MIN_PLANES - 1, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="too thin"):
        SlabHierarchy.build_slabs(nu, SlabLayout(1, 0, 1))
