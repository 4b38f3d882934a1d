"""Apply a per-sample function to a level and store its node field, resumably, on dask."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mgtoolkit.cluster import client_context
from mgtoolkit.data._tasks import (
    Unit,
    plan_units,
    remove_partials,
    run_units,
    write_blocks,
)
from mgtoolkit.data.store import (
    allocate_node_field,
    check_store,
    completed,
    level_group,
)

__all__ = ["map_samples"]

_RESERVED = ("nu", "omega", "sample", "mode")


def check_source(path: str | os.PathLike, level: int) -> None:
    """Refuse a level whose ν is unfinished or damaged (cheap: no chunk is decoded).

    Raises
    ------
    ValueError
        Naming the store, the level, the first damaged sample and file, and the fix.
    """
    from mgtoolkit.data.verify import quick_check

    nu_done = completed(path, level, "nu")
    if not nu_done.all():
        raise ValueError(
            f"{int((~nu_done).sum())} samples of {path} have no complete ν yet; finish the "
            "dataset first (rerun `mgtoolkit data generate` with the same arguments)"
        )
    broken = quick_check(path, level, "nu")
    if broken:
        first = next(iter(broken.values()))
        raise ValueError(
            f"ν of {len(broken)} samples at level {level} of {path} is damaged (first: sample "
            f"{first.sample}, {first.reason}: {first.file}); repair it with `mgtoolkit data "
            "generate --repair` (same arguments) or `mgtoolkit data verify` for the full list"
        )


def map_samples(
    path: str | os.PathLike,
    fn: Callable[[np.ndarray], np.ndarray],
    *,
    level: int,
    name: str,
    client=None,
    progress: bool = True,
    dtype: str = "float32",
    repair: bool = False,
) -> Path:
    """Compute ``fn(ν)`` for every sample of ``level`` lacking node field ``name``, and store it.

    Parameters
    ----------
    path : path-like
        A dataset store (:func:`~mgtoolkit.data.generate`).
    fn : callable
        ``fn(nu) -> u``: ``nu`` float32 ndarray ``(n,) * dim`` on cells, ``u`` array-like
        ``(n + 1,) * dim`` on nodes (numpy, or a CPU torch tensor). It runs on the dask workers,
        so it must pickle (a module-level function or a callable object).
    level : int
        1 (finest) .. levels.
    name : str
        The node field, e.g. ``"u_fem"`` or ``"u_pred"``; created on first use with dims
        ``(sample, [z_node,] y_node, x_node)`` (:func:`~mgtoolkit.data.store.node_dims`).
    client : distributed.Client, optional
        Default: an embedded LocalCluster created and closed by this call.
    progress : bool
        tqdm progress bar in samples.
    dtype : str
        Storage type of the field when it is created.
    repair : bool
        Read every stored value of ``name`` first and recompute the damaged samples
        (:func:`mgtoolkit.data.verify.verify_store`); samples whose files are missing or
        truncated are recomputed in any case.

    Notes
    -----
    Samples already marked complete are skipped, so a rerun after an interruption computes only
    the rest. Each task holds the samples of one shard (small fields) or one sample.
    """
    attrs = check_store(path)
    if not isinstance(level, int | np.integer) or not 1 <= level <= attrs["levels"]:
        raise ValueError(f"level must be 1 (finest) .. {attrs['levels']} (got {level!r})")
    if not name.isidentifier() or name in _RESERVED or name.endswith("_complete"):
        raise ValueError(
            f"{name!r} cannot name a node field: use an identifier such as 'u_fem' that is not "
            f"one of {_RESERVED} and does not end in '_complete'"
        )
    if not callable(fn):
        raise TypeError(f"fn must be callable nu -> u (got {type(fn).__name__})")
    check_source(path, level)
    path = Path(path)
    from mgtoolkit.data.verify import mark_for_repair, quick_check, verify_store

    allocate_node_field(path, level, name, dtype=dtype)
    damaged = list(quick_check(path, level, name).values())
    if repair:
        damaged = verify_store(path, levels=[level], variables=[name], record=False).damaged
    if damaged:
        mark_for_repair(path, damaged)
    import zarr

    field = zarr.open_group(str(path), mode="r")[level_group(level)][name]
    units = plan_units(field, completed(path, level, name), level, split=False)
    if units:
        remove_partials(path, name)
        with client_context(client) as c:
            run_units(
                c,
                _apply,
                (fn, name),
                units,
                path=path,
                variable=name,
                desc=f"map {name}",
                progress=progress,
            )
    return path


def _apply(path: str, payload: tuple[Callable, str], unit: Unit) -> None:
    """Task: read ν of the unit's samples, apply ``fn``, write the node field."""
    import zarr

    fn, name = payload
    group = zarr.open_group(path, mode="r+")[level_group(unit.level)]
    nu, field = group["nu"], group[name]
    expected = field.shape[1:]
    for start, stop in write_blocks(field, unit):
        out = np.empty((stop - start, *expected), dtype=field.dtype)
        for s in range(start, stop):
            where = f"sample {s} of level {unit.level} of {path}"
            try:
                values = np.asarray(nu[s])
            except Exception as exc:  # codec and checksum errors of several types
                raise ValueError(
                    f"cannot read ν of {where} ({type(exc).__name__}: {str(exc)[:120]}); run "
                    f"`mgtoolkit data verify {path}` and repair with `mgtoolkit data generate "
                    "--repair`"
                ) from None
            if not np.all(np.isfinite(values)):
                raise ValueError(
                    f"ν of {where} holds NaN or inf (a missing or damaged chunk); run "
                    f"`mgtoolkit data verify {path}` and repair with `mgtoolkit data generate "
                    "--repair`"
                )
            try:
                u = fn(values)
            except Exception as exc:  # name the sample: the task's error reaches the user
                raise RuntimeError(f"{where}: {type(exc).__name__}: {exc}") from exc
            u = u.detach().cpu().numpy() if hasattr(u, "detach") else np.asarray(u)
            if u.shape != expected:
                raise ValueError(
                    f"map_samples fn returned shape {u.shape} for sample {s}; node field "
                    f"{name!r} needs {expected} (n + 1 nodes per side for n cells)"
                )
            out[s - start] = u
        field[start:stop] = out
