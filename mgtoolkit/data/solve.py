"""FEM reference solutions for a store: u_fem on nodes, sample by sample, on dask."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mgtoolkit.cluster import client_context
from mgtoolkit.data.mapping import check_source, map_samples
from mgtoolkit.data.store import check_store

__all__ = ["FemSolveFn", "solve_store"]


@dataclass(frozen=True)
class FemSolveFn:
    """Picklable ``nu -> u_fem`` for :func:`mgtoolkit.data.map_samples` (runs on dask workers).

    ``rtol``, ``maxiter``: as for :func:`mgtoolkit.fem.solve` (None: its defaults).
    ``threads`` bounds torch's intra-op threads per task: workers already run in parallel.
    The solve keeps freed memory in the heap (:func:`mgtoolkit.runtime.heap_reuse`): dask
    starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, under which glibc would map and unmap
    every large temporary of every PCG iteration afresh. A sample whose solve fails its
    checks raises :class:`mgtoolkit.fem.ConvergenceError`, so nothing is written for it.
    """

    rtol: float = 1e-8
    maxiter: int | None = None
    threads: int = 1

    def __call__(self, nu):
        import torch

        from mgtoolkit.fem import solve
        from mgtoolkit.runtime import heap_reuse

        torch.set_num_threads(self.threads)
        options = {"rtol": self.rtol}
        if self.maxiter is not None:
            options["maxiter"] = self.maxiter
        with heap_reuse():
            return solve(nu, **options)


def solve_store(
    store: str | os.PathLike,
    *,
    levels: int | Iterable[int] | None = None,
    rtol: float = 1e-8,
    maxiter: int | None = None,
    threads: int = 1,
    client=None,
    progress: bool = True,
    repair: bool = False,
) -> Path:
    """Add the FEM solution ``u_fem`` (nodes) to every sample of the given levels of ``store``.

    Parameters
    ----------
    store : path-like
        A dataset store (:mod:`mgtoolkit.data.store`).
    levels : int or iterable of int, optional
        Which levels (1 = finest); default every level.
    rtol, maxiter, threads
        See :class:`FemSolveFn`.
    client : distributed.Client or str, optional
        See :func:`mgtoolkit.cluster.client_context` (default: a local cluster for the call).
    progress : bool
        Progress bars (one per level, in samples).
    repair : bool
        Read every stored u_fem first and re-solve the damaged samples (NaN, outside [0, 1],
        unreadable); samples whose files are missing or truncated are re-solved in any case.

    Returns
    -------
    Path
        The store.

    Notes
    -----
    Samples already solved are kept: rerunning after an interruption solves only the rest.
    """
    attrs = check_store(store)
    if levels is None:
        levels = range(1, attrs["levels"] + 1)
    elif isinstance(levels, int):
        levels = [levels]
    levels = list(levels)
    for level in levels:
        if not isinstance(level, int) or not 1 <= level <= attrs["levels"]:
            raise ValueError(
                f"level must be 1 (finest) .. {attrs['levels']} for {store} (got {level!r})"
            )
    if not (isinstance(rtol, float | int) and rtol > 0):
        raise ValueError(f"rtol must be > 0 (got {rtol!r}); the default is 1e-8")
    if maxiter is not None and (not isinstance(maxiter, int) or maxiter < 1):
        raise ValueError(f"maxiter must be a positive integer (got {maxiter!r})")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer (got {threads!r})")
    fn = FemSolveFn(rtol=float(rtol), maxiter=maxiter, threads=threads)
    for level in levels:  # refuse damaged or unfinished ν before starting a cluster
        check_source(store, level)
    with client_context(client) as c:
        for level in levels:
            map_samples(
                store, fn, level=level, name="u_fem", client=c, progress=progress, repair=repair
            )
    return Path(store)
