"""A torch Dataset over one level of a dataset store."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mgtoolkit.data.store import check_store, completed, level_group

__all__ = ["LevelDataset"]


class LevelDataset(torch.utils.data.Dataset):
    """Samples of one level as dicts of float32 tensors, read one sample at a time.

    Parameters
    ----------
    path : path-like
        A dataset store.
    level : int
        1 (finest) .. levels.
    variables : sequence of str
        Per-sample variables to return, e.g. ``("nu",)`` or ``("nu", "u_fem")``.
    indices : sequence of int, optional
        Store sample indices in dataset order (a train/validation split); default all.
    planes : slice, optional
        Read only these planes along the first spatial axis of every variable (one rank's
        slab of each field, :mod:`mgtoolkit.spatial`); only their chunks are decoded.
        Default: whole fields.

    Item ``i`` is ``{"nu": (n,)*dim, "u_fem": (n+1,)*dim, ...}`` (float32 tensors) of store sample
    ``indices[i]``. Each item decodes only that sample's chunks (one chunk per sample for small
    fields, or the sample's spatial chunks). Arrays are opened lazily in each process (and
    reopened after a fork), so the dataset is safe in DataLoader workers and in several
    data-parallel ranks at once; it only reads.

    Raises
    ------
    ValueError
        Unknown level or variable, indices out of range, or a requested sample whose variable
        is not complete (the message says which command fills it in).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        level: int,
        *,
        variables: Sequence[str] = ("nu",),
        indices: Sequence[int] | None = None,
        planes: slice | None = None,
    ) -> None:
        attrs = check_store(path)
        if not isinstance(level, int | np.integer) or not 1 <= level <= attrs["levels"]:
            raise ValueError(f"level must be 1 (finest) .. {attrs['levels']} (got {level!r})")
        if isinstance(variables, str):
            variables = (variables,)
        samples = attrs["samples"]
        idx = np.arange(samples) if indices is None else np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= samples)):
            raise ValueError(f"indices must be sample numbers in 0 .. {samples - 1}")
        import zarr

        group = zarr.open_group(str(path), mode="r")[level_group(level)]
        for var in variables:
            if var not in group:
                raise ValueError(
                    f"{path} has no variable {var!r} at level {level}; it holds "
                    f"{sorted(k for k in group.array_keys() if not k.endswith('_complete'))} "
                    "(node fields such as 'u_fem' come from `mgtoolkit fem solve`)"
                )
            missing = idx[~completed(path, level, var)[idx]]
            if missing.size:
                raise ValueError(
                    f"{missing.size} requested samples (first: {missing[0]}) have no complete "
                    f"{var!r} at level {level} in {path}; fill them in first (rerun the command "
                    "that writes it with the same arguments)"
                )
        self.path = str(path)
        self.level = int(level)
        self.variables = tuple(variables)
        self.indices = idx
        self.planes = slice(None) if planes is None else planes
        self._arrays: dict[str, Any] | None = None
        self._pid = -1

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self._arrays is None or self._pid != os.getpid():
            import zarr

            group = zarr.open_group(self.path, mode="r")[level_group(self.level)]
            self._arrays = {v: group[v] for v in self.variables}
            self._pid = os.getpid()
        s = int(self.indices[i])
        out = {}
        for v, a in self._arrays.items():
            where = f"sample {s} of {v!r} at level {self.level} of {self.path}"
            try:
                values = np.asarray(a[s, self.planes], dtype=np.float32)
            except Exception as exc:  # codec and checksum errors of several types
                raise ValueError(
                    f"cannot read {where} ({type(exc).__name__}: {str(exc)[:120]}); run "
                    f"`mgtoolkit data verify {self.path}` and repair with --repair"
                ) from None
            if not np.all(np.isfinite(values)):
                raise ValueError(
                    f"{where} holds NaN or inf (a missing or damaged chunk); run "
                    f"`mgtoolkit data verify {self.path}` and repair with --repair"
                )
            out[v] = torch.from_numpy(values)
        return out

    def __getstate__(self) -> dict[str, Any]:
        # Open zarr handles stay behind; the receiving process opens its own.
        return {**self.__dict__, "_arrays": None, "_pid": -1}
