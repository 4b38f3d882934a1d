"""User-supplied voxel arrays as a coefficient family.

The finest level is the data itself; coarse levels are the geometric mean of the 2^d children
of each cell, ``exp(mean(log ν))`` — the average that keeps a log-normal field log-normal and
sits between the harmonic and arithmetic means that bound the effective coefficient. Because
the geometric mean of equal-size nested groups equals the geometric mean of their geometric
means, level ℓ is computed directly from the 2^(d(ℓ-1)) finest cells below each coarse cell.
"""

from __future__ import annotations

import hashlib
import sys
from contextlib import nullcontext
from typing import Any, ClassVar

import numpy as np

from mgtoolkit.fields.base import register_family
from mgtoolkit.grids import check_dim, check_resolution

__all__ = ["ArrayFamily", "geometric_coarsen"]

#: Largest piece of fine data (bytes, float64) read at once when averaging or validating.
_PIECE_BYTES = 64 * 2**20


def geometric_coarsen(nu, factor: int, *, batched: bool = False):
    """Geometric mean over ``factor**d`` blocks of cells.

    Parameters
    ----------
    nu : ndarray or torch.Tensor
        Cell field ``(n,) * d`` (or ``(batch,) + (n,) * d`` when ``batched``), positive.
    factor : int
        Cells per side merged into one coarse cell (a power of two dividing n).

    Returns
    -------
    ndarray, float64, shape ``(n // factor,) * d`` (batch axis kept); a tensor of ``nu``'s
    dtype and device when ``nu`` is one (differentiable).
    """
    tensor = hasattr(nu, "detach")
    if not tensor:
        nu = np.asarray(nu, dtype=np.float64)
    if factor == 1:
        return nu.clone() if tensor else nu.copy()
    lead = nu.shape[:1] if batched else ()
    spatial = nu.shape[len(lead) :]
    split: list[int] = list(lead)
    for s in spatial:
        if s % factor:
            raise ValueError(f"a side of {s} cells cannot be coarsened by a factor {factor}")
        split += [s // factor, factor]
    axes = tuple(len(lead) + 2 * k + 1 for k in range(len(spatial)))
    if tensor:
        return nu.log().reshape(split).mean(dim=axes).exp()
    return np.exp(np.log(nu).reshape(split).mean(axis=axes))


class ArrayFamily:
    """Diffusivity fields given as arrays on cells: numpy, xarray, zarr or dask arrays.

    Parameters
    ----------
    data : array-like
        Shape ``(samples,) + (n,) * dim`` or, for one field, ``(n,) * dim``; finite and > 0.
        numpy arrays travel to the workers; zarr, xarray (lazily opened) and dask arrays are read
        there block by block, so data larger than memory works.
    dim : int, optional
        2 or 3. Needed only when the rank is ambiguous: a rank-3 array with three equal sides is
        taken as one 3D field, any other rank-3 array as a batch of 2D fields.
    source : str, optional
        Description recorded in the store (e.g. the input path).

    Raises
    ------
    ValueError
        Wrong rank, unequal sides, a side that is not a power of two, NaN, inf or ≤ 0 values.
        Every value is checked here, block by block, before anything is written.
    """

    name: ClassVar[str] = "array"
    coarsening: ClassVar[str] = "geometric-mean"
    modes: ClassVar[int] = 0

    def __init__(self, data: Any, *, dim: int | None = None, source: str | None = None) -> None:
        if data is None:
            raise ValueError("no user array given (got None); pass a numpy, zarr or dask array")
        dtype = getattr(data, "dtype", None)
        dtype = np.dtype(dtype) if dtype is not None else np.asarray(data).dtype
        if dtype.kind not in "fiu":
            what = {"c": "complex", "O": "Python objects", "b": "booleans"}.get(
                dtype.kind, f"dtype {dtype}"
            )
            raise ValueError(
                f"user arrays must hold real numbers (got {what}); ν is a real positive field — "
                "pass e.g. the real part or the modulus as a float array"
            )
        shape = tuple(int(s) for s in np.shape(data))
        if dim is None:
            if len(shape) not in (2, 3, 4):
                raise ValueError(
                    f"user arrays must have shape (n, n), (n, n, n) or (samples,) + (n,)*dim "
                    f"(got rank {len(shape)}, shape {shape})"
                )
            dim = 3 if len(shape) == 4 or (len(shape) == 3 and len(set(shape)) == 1) else 2
        check_dim(dim)
        if len(shape) == dim:
            data, shape = _add_sample_axis(data), (1, *shape)
        if len(shape) != dim + 1:
            raise ValueError(
                f"a {dim}D user array must have shape (samples,) + (n,)*{dim} or (n,)*{dim} "
                f"(got rank {len(shape)}, shape {shape}); pass dim= if the rank is ambiguous"
            )
        if len(set(shape[1:])) != 1:
            raise ValueError(
                f"user arrays must have equal sides (n,)*{dim} on a uniform grid (got {shape[1:]})"
            )
        check_resolution(shape[1])
        if shape[0] == 0:
            raise ValueError("the user array holds no samples")
        self.data = data
        self.data_shape = (shape[0], dim, shape[1])
        self.source = source or type(data).__name__
        self.checksum = self._validate()

    def parameters(self) -> dict[str, Any]:
        samples, dim, n = self.data_shape
        return {
            "source": self.source,
            "shape": [samples] + [n] * dim,
            "sha256": self.checksum,
        }

    def draw(self, samples: int, seed: int | None) -> np.ndarray:
        return np.zeros((samples, 0))

    def check_omega(self, omega: Any) -> np.ndarray:
        raise ValueError("user arrays have no parameters ω; pass the arrays themselves")

    def block(
        self, sample: int, omega: np.ndarray, *, dim: int, n: int, region: tuple[slice, ...]
    ) -> np.ndarray:
        factor = self.data_shape[2] // n
        if factor * n != self.data_shape[2]:
            raise ValueError(f"level with {n} cells does not divide the data's {self.data_shape}")
        out = np.empty(tuple(r.stop - r.start for r in region))
        # Split the first axis so that each fine piece read stays within _PIECE_BYTES.
        per_row = 8 * factor**dim * int(np.prod(out.shape[1:]))
        rows = max(1, _PIECE_BYTES // per_row)
        for r0 in range(0, out.shape[0], rows):
            r1 = min(r0 + rows, out.shape[0])
            first = slice((region[0].start + r0) * factor, (region[0].start + r1) * factor)
            fine = [slice(r.start * factor, r.stop * factor) for r in region[1:]]
            out[r0:r1] = geometric_coarsen(self._read(sample, (first, *fine)), factor)
        return out

    def _read(self, sample: int, region: tuple[slice, ...]) -> np.ndarray:
        block = self.data[(sample, *region)]
        with _sync_dask():
            return np.asarray(getattr(block, "values", block), dtype=np.float64)

    def _validate(self) -> str:
        """Check every value block by block; return the sha256 of the data as float64 bytes."""
        samples, dim, n = self.data_shape
        digest = hashlib.sha256()
        rows = max(1, _PIECE_BYTES // (8 * n ** (dim - 1)))
        for s in range(samples):
            for r0 in range(0, n, rows):
                piece = self._read(s, (slice(r0, min(r0 + rows, n)), *[slice(0, n)] * (dim - 1)))
                if not np.all(np.isfinite(piece)):
                    raise ValueError(
                        f"user array sample {s} contains NaN or inf values; every cell needs a "
                        "finite ν > 0 — fill or mask them before importing"
                    )
                if np.any(piece <= 0):
                    raise ValueError(
                        f"user array sample {s} has values ≤ 0 (min {piece.min():.3g}); ν must be "
                        "strictly positive — pass exp(log ν) if the data is log-permeability"
                    )
                with np.errstate(over="ignore", under="ignore"):
                    stored = piece.astype(np.float32)  # what the store holds at the finest level
                if not np.all(np.isfinite(stored)):
                    raise ValueError(
                        f"user array sample {s} has values beyond the float32 range (max "
                        f"{piece.max():.3g} overflows to inf when stored); rescale ν (only "
                        "contrasts matter) into about 1e-30 .. 1e30"
                    )
                if np.any(stored <= 0):
                    raise ValueError(
                        f"user array sample {s} has values that round to 0 in float32 (min "
                        f"{piece.min():.3g}); rescale ν (only contrasts matter) into about "
                        "1e-30 .. 1e30"
                    )
                digest.update(piece.tobytes())
        return digest.hexdigest()


def _add_sample_axis(data: Any) -> Any:
    if hasattr(data, "expand_dims"):  # xarray
        return data.expand_dims("sample")
    if hasattr(data, "reshape") and not hasattr(data, "store_path"):  # numpy, dask
        return data.reshape((1, *np.shape(data)))
    return np.asarray(data)[None]


def _sync_dask():
    """Compute dask-backed blocks in this thread (also inside a dask worker task)."""
    if "dask" not in sys.modules:
        return nullcontext()
    import dask

    return dask.config.set(scheduler="sync")


def _from_params(**params: Any) -> ArrayFamily:
    raise ValueError(
        "the 'array' family needs the arrays themselves: use mgtoolkit.data.import_arrays(path, "
        "data) or `mgtoolkit data import`"
    )


register_family("array", _from_params)
