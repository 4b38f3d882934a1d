"""The KL log-permeability family (the paper's Eq. 10 in d dimensions).

See docs/math.md, 'Coefficient family'.

For a cell centre s = (x, y[, z]) of the unit square or cube,

    ν(s) = exp( Σ_{i=1..m} ω_i λ_i^(d/2) Π_axes ξ_i(s_axis) ),
    m = 4, a = (1.72, 4.05, 6.85, 9.82), λ_i = 1 / (1 + a_i²/4),
    ξ_i(t) = (a_i / 2) cos(a_i t) + sin(a_i t),   ω ∈ [-3, 3]^m.

The sum is separable, so any block of cells is evaluated from one 1D table per axis without
ever forming the whole volume: memory is that of the block.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from mgtoolkit.fields.base import register_family
from mgtoolkit.grids import check_dim, check_resolution

__all__ = ["KL_A", "KL_LAMBDA", "OMEGA_BOUND", "KLFamily", "kl_xi"]

#: Frequencies a_i of the four KL modes.
KL_A: np.ndarray = np.array([1.72, 4.05, 6.85, 9.82])
#: Eigenvalues per dimension, λ_i = 1 / (1 + a_i²/4) (correlation length 0.5).
KL_LAMBDA: np.ndarray = 1.0 / (1.0 + 0.25 * KL_A**2)
#: ω lies in the box [-OMEGA_BOUND, OMEGA_BOUND]^m.
OMEGA_BOUND = 3.0


def kl_xi(t: np.ndarray) -> np.ndarray:
    """Mode functions ξ_i(t) = (a_i/2) cos(a_i t) + sin(a_i t), shape ``(m,) + t.shape``."""
    at = KL_A.reshape((-1,) + (1,) * np.ndim(t)) * np.asarray(t, dtype=np.float64)
    return 0.5 * KL_A.reshape((-1,) + (1,) * np.ndim(t)) * np.cos(at) + np.sin(at)


@dataclass(frozen=True)
class KLFamily:
    """KL log-permeability fields with ω drawn by scrambled Sobol sampling.

    ω of sample j is row j of ``scipy.stats.qmc.Sobol(d=4, scramble=True, seed=seed)``'s first
    ``samples`` points, scaled to [-3, 3]^4: the first N samples of a seed do not depend on how
    many are drawn in total.
    """

    name: ClassVar[str] = "kl"
    coarsening: ClassVar[str] = "analytic"
    modes: ClassVar[int] = len(KL_A)
    data_shape: ClassVar[None] = None

    def parameters(self) -> dict[str, Any]:
        return {
            "a": KL_A.tolist(),
            "lambda_power": "d/2",
            "omega_box": [-OMEGA_BOUND, OMEGA_BOUND],
            "sampler": "scipy.stats.qmc.Sobol(scramble=True)",
        }

    def draw(self, samples: int, seed: int | None) -> np.ndarray:
        """ω of ``samples`` samples, shape ``(samples, 4)``, in [-3, 3]^4."""
        from scipy.stats import qmc

        _check_samples(samples)
        with warnings.catch_warnings():
            # Sobol warns when N is not a power of two; any prefix is still a valid QMC design.
            warnings.simplefilter("ignore", UserWarning)
            unit = qmc.Sobol(d=self.modes, scramble=True, seed=seed).random(samples)
        return qmc.scale(unit, -OMEGA_BOUND, OMEGA_BOUND)

    def check_omega(self, omega: Any) -> np.ndarray:
        """Return ω as float64 of shape ``(samples, 4)`` (a single ``(4,)`` vector is promoted)."""
        w = np.asarray(omega, dtype=np.float64)
        if w.ndim == 1:
            w = w[None, :]
        if w.ndim != 2 or w.shape[1] != self.modes:
            raise ValueError(
                f"omega must have {self.modes} entries per sample, shape (samples, {self.modes}) "
                f"(got shape {np.shape(omega)}); the KL family has m = {self.modes} modes"
            )
        if w.shape[0] == 0:
            raise ValueError("omega holds no samples; pass at least one row of 4 values")
        if not np.all(np.isfinite(w)) or np.any(np.abs(w) > OMEGA_BOUND):
            bad = np.argwhere(~(np.abs(w) <= OMEGA_BOUND))[0]
            raise ValueError(
                f"omega must lie in [-{OMEGA_BOUND:g}, {OMEGA_BOUND:g}]^{self.modes} "
                f"(sample {bad[0]}, mode {bad[1] + 1} is {w[tuple(bad)]!r}); "
                "clip it to the box (beyond it contrasts exceed the ~1e6 the solvers are tested at)"
            )
        return w

    def block(
        self, sample: int, omega: np.ndarray, *, dim: int, n: int, region: tuple[slice, ...]
    ) -> np.ndarray:
        w = np.asarray(omega, dtype=np.float64) * KL_LAMBDA ** (dim / 2)
        # One table of ξ_i per axis at the cell centres (i + ½)/n of the region; x is last.
        tables = [kl_xi((np.arange(r.start, r.stop) + 0.5) / n) for r in region]
        tables[0] = w[:, None] * tables[0]
        spec = "iz,iy,ix->zyx" if dim == 3 else "iy,ix->yx"
        log_nu = np.einsum(spec, *tables, optimize=True)
        return np.exp(log_nu, out=log_nu)

    def field(self, omega: Any, *, dim: int, n: int) -> np.ndarray:
        """The whole field of one ω on ``n`` cells per side, float64, shape ``(n,) * dim``."""
        check_dim(dim)
        check_resolution(n)
        w = self.check_omega(omega)
        if w.shape[0] != 1:
            raise ValueError(f"field() takes one ω of shape (4,) (got {w.shape[0]} samples)")
        return self.block(0, w[0], dim=dim, n=n, region=(slice(0, n),) * dim)


def _check_samples(samples: Any) -> int:
    if not isinstance(samples, int | np.integer) or isinstance(samples, bool) or samples <= 0:
        raise ValueError(f"samples must be a positive integer (got {samples!r}); try --samples 8")
    return int(samples)


register_family("kl", KLFamily)
