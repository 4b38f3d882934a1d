"""Loss integrity: parameters after 20 steps do not depend on the world size.

See docs/math.md, 'Loss integrity'.

p = 1 runs in this process without any process group (plain BatchNorm, no communication);
p = 2 and 4 run on real local processes with the synchronized batch norm. The pool (14
samples) is not a multiple of the global batch (8) nor of 4, so padding is exercised.

The batch-norm running statistics are compared like the parameters, and agree as closely: they
are updated once per forward pass from the global batch statistics, so an optimizer that
evaluates its closure several times per step (L-BFGS with ``max_iter > 1`` or a line search)
updates them as many times — on every p alike. What does *not* hold for such L-BFGS settings in
float32 is the agreement itself, of parameters and statistics together: the curvature pairs
amplify rounding by roughly 2–3× per inner iteration (measured with the trainer's default,
``max_iter = 5`` with strong-Wolfe line search: 1e-7 after the first step, 3e-2 after 9 steps
between p = 1 and p = 2, for the parameters and the running statistics alike; float64 keeps
~1e-7 after 20 steps). One inner iteration, as here, keeps float32 within 1e-4.
"""

from __future__ import annotations

import pytest
import torch
import toy

from mgtoolkit.launch import spawn


def _all() -> dict:
    return {
        (dtype, opt): toy.train(optimizer=opt, dtype=dtype, buffers=True)
        for dtype in (torch.float64, torch.float32)
        for opt in ("adam", "lbfgs")
    }


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(((x - y).norm() / x.norm()).item() for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("size", [2, 4])
def test_parameters_after_20_steps_agree_with_one_process(size):
    ref = _all()
    ranks = spawn(_all, size)
    for (dtype, opt), expected in ref.items():
        # every rank holds bit-identical parameters ...
        for other in ranks[1:]:
            pairs = zip(ranks[0][dtype, opt], other[dtype, opt], strict=True)
            assert all(torch.equal(a, b) for a, b in pairs)
        # ... which match the single process up to rounding. L-BFGS's curvature pairs amplify
        # float32 rounding to ~3e-5 in 20 steps (measured); float64 gives ~1e-12.
        tol = 1e-4 if (opt == "lbfgs" and dtype == torch.float32) else 1e-5
        err = _rel(expected, ranks[0][dtype, opt])
        assert err < tol, f"{opt} {dtype} p={size}: relative difference {err:.2e}"
        # and training did move parameters and statistics (the comparison is not vacuous)
        assert _rel(toy.snapshot(toy.make_model(dtype), buffers=True), expected) > 1e-2
