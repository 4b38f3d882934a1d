"""Loss integrity (DESIGN.md §3): parameters after 20 steps do not depend on the world size.

p = 1 runs in this process without any process group (plain BatchNorm, no communication);
p = 2 and 4 run on real local processes over gloo with the synchronized batch norm. The pool
(14 samples) is not a multiple of the global batch (8) nor of 4, so padding is exercised.
"""

from __future__ import annotations

import pytest
import torch
import toy

from mgtoolkit.dist import spawn


def _both(dtype):
    return {opt: toy.train(optimizer=opt, dtype=dtype) for opt in ("adam", "lbfgs")}


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(((x - y).norm() / x.norm()).item() for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parameters_after_20_steps_agree_for_1_2_and_4_ranks(dtype):
    ref = _both(dtype)
    for size in (2, 4):
        ranks = spawn(_both, size, dtype)
        for opt in ("adam", "lbfgs"):
            # every rank holds bit-identical parameters ...
            for other in ranks[1:]:
                assert all(
                    torch.equal(a, b) for a, b in zip(ranks[0][opt], other[opt], strict=True)
                )
            # ... which match the single process up to rounding. L-BFGS's curvature pairs
            # amplify float32 rounding to ~3e-5 in 20 steps (measured); float64 gives ~1e-12.
            tol = 1e-4 if (opt == "lbfgs" and dtype == torch.float32) else 1e-5
            err = _rel(ref[opt], ranks[0][opt])
            assert err < tol, f"{opt} {dtype} p={size}: relative difference {err:.2e}"
            # and training did move the parameters (the comparison is not vacuous)
            assert _rel(list(toy.make_model(dtype).parameters()), ref[opt]) > 1e-2
