"""Resumable per-sample work on dask, shared by generation and ``map_samples``.

A *unit* is the work of one task: a range of samples of one level, or one row of chunks of a
single sample. Units write whole zarr chunks or shards only, so no two tasks ever write the
same object. The coordinating process sets a sample's completion marker once every unit
covering it has finished — markers are therefore written by one process only, last.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mgtoolkit.data.store import level_group, marker_name

__all__ = [
    "Unit",
    "chunk_regions",
    "plan_units",
    "remove_partials",
    "run_units",
    "write_blocks",
]

#: A task writes about this many bytes of whole samples: fewer, larger tasks amortise the fixed
#: cost of a task (scheduling, opening the store: 10-20 ms)...
TASK_BYTES = 16 * 2**20
#: ...but a call makes at least this many tasks when it has enough samples, to feed the workers.
MIN_TASKS = 8
#: Objects larger than this (pickled) are scattered once instead of riding in every task.
_SHIP_INLINE_BYTES = 1 << 20


@dataclass(frozen=True)
class Unit:
    """Work of one task: samples ``start:stop`` of ``level``, or one row of chunks of one sample.

    ``row`` holds ``(first, last)`` cell ranges along the first two spatial axes — one chunk
    thick in each — when a sample is split into spatial chunks (then ``stop == start + 1``);
    the row runs along the remaining axis. None covers whole samples.
    """

    level: int
    start: int
    stop: int
    row: tuple[tuple[int, int], tuple[int, int]] | None = None


def plan_units(array, done: np.ndarray, level: int, *, split: bool = True) -> list[Unit]:
    """Units that (re)write every sample of ``array`` whose marker in ``done`` is False.

    A *write block* is a shard (or, unsharded, a chunk's samples); units cover whole write
    blocks, so no two tasks write the same object. Consecutive incomplete blocks are grouped
    into units of about ``TASK_BYTES`` (at least ``MIN_TASKS`` units when there are enough
    blocks); complete blocks are never part of a unit. A spatially chunked sample is cut into
    rows of chunks when ``split`` (a 512³ sample in 128³ chunks: 16 rows of 4 chunks, enough
    to keep several workers busy on one sample), else it is one unit.
    """
    block = array.shards or array.chunks
    samples, n = array.shape[0], array.shape[1]
    if block[1] < n and split:
        c0, c1 = block[1], block[2]
        return [
            Unit(level, int(s), int(s) + 1, ((a, min(a + c0, n)), (b, min(b + c1, n))))
            for s in np.flatnonzero(~done)
            for a in range(0, n, c0)
            for b in range(0, n, c1)
        ]
    step = block[0]
    block_bytes = array.dtype.itemsize * step * math.prod(array.shape[1:])
    per = max(1, min(TASK_BYTES // block_bytes, math.ceil(samples / step) // MIN_TASKS))
    units: list[Unit] = []
    run: list[int] = []  # starts of consecutive incomplete blocks
    for start in range(0, samples, step):
        if done[start : start + step].all() or len(run) == per:
            if run:
                units.append(Unit(level, run[0], min(run[-1] + step, samples)))
            run = []
        if not done[start : start + step].all():
            run.append(start)
    if run:
        units.append(Unit(level, run[0], min(run[-1] + step, samples)))
    return units


def chunk_regions(
    shape: tuple[int, ...], chunks: tuple[int, ...], row: tuple[tuple[int, int], ...]
):
    """Chunk-aligned regions (tuples of slices) covering the cells of ``row``.

    ``shape`` and ``chunks`` are spatial (no sample axis); ``row`` gives chunk-aligned
    ``(first, last)`` ranges on the leading axes, the other axes are covered whole.
    """
    bounds = [*row, *((0, s) for s in shape[len(row) :])]
    per_axis = [
        [slice(a, min(a + c, hi)) for a in range(lo, hi, c)]
        for (lo, hi), c in zip(bounds, chunks, strict=True)
    ]
    yield from itertools.product(*per_axis)


def remove_partials(path: Path, variable: str) -> None:
    """Delete temp files that writes of ``variable`` left when their process was killed.

    zarr's local store writes each object to ``<key>.<uuid>.partial`` and renames it into
    place, so a killed writer leaves such a file and never a torn chunk. Only ``variable``'s
    arrays are swept: other variables may be written by another process right now.
    """
    for stray in path.glob(f"level*/{variable}/**/*.partial"):
        stray.unlink(missing_ok=True)


def write_blocks(array, unit: Unit):
    """``(start, stop)`` sample ranges of the write blocks (shards or chunks) of a unit."""
    step = (array.shards or array.chunks)[0]
    for start in range(unit.start, unit.stop, step):
        yield start, min(start + step, unit.stop)


def _ship(client, obj):
    """Send ``obj`` to the workers once (if big) and return what tasks should receive."""
    import cloudpickle  # what dask uses: closures and notebook functions pickle by value

    buffers: list = []  # large arrays go out of band: measured without being copied
    head = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    if len(head) + sum(b.raw().nbytes for b in buffers) <= _SHIP_INLINE_BYTES:
        return obj
    return client.scatter(obj, broadcast=True, hash=False)


def run_units(
    client,
    task: Callable[..., Any],
    payload: Any,
    units: list[Unit],
    *,
    path: Path,
    variable: str,
    desc: str,
    progress: bool,
) -> None:
    """Run ``task(str(path), payload, unit)`` for every unit and set markers as samples finish.

    The progress bar counts samples whose ``variable`` is complete at every level involved.
    On a failed task the remaining ones are cancelled and a RuntimeError says how to resume.
    """
    import zarr
    from distributed import as_completed
    from tqdm.auto import tqdm

    root = zarr.open_group(str(path), mode="r+")
    markers = {lv: root[level_group(lv)][marker_name(variable)] for lv in {u.level for u in units}}
    left: dict[tuple[int, int], int] = {}
    levels_left: dict[int, int] = {}
    for u in units:
        for s in range(u.start, u.stop):
            if (u.level, s) not in left:
                levels_left[s] = levels_left.get(s, 0) + 1
            left[(u.level, s)] = left.get((u.level, s), 0) + 1

    shipped = _ship(client, payload)
    target = str(Path(path).absolute())  # workers may run in another directory
    run = uuid.uuid4().hex[:8]  # keys unique per call, readable on the dashboard
    futures = {
        client.submit(task, target, shipped, u, key=f"{desc}-{run}-L{u.level}-{u.start}-{i}"): u
        for i, u in enumerate(units)
    }
    bar = tqdm(total=len(levels_left), desc=desc, unit="sample", disable=not progress)
    try:
        for future in as_completed(list(futures)):
            future.result()  # re-raises the task's error here
            u = futures.pop(future)
            bar.set_postfix_str(f"tasks {len(units) - len(futures)}/{len(units)}", refresh=False)
            finished = []
            for s in range(u.start, u.stop):
                left[(u.level, s)] -= 1
                if not left[(u.level, s)]:
                    finished.append(s)
            if finished:
                # Units cover contiguous samples, so the finished ones are one range.
                markers[u.level][finished[0] : finished[-1] + 1] = True
                for s in finished:
                    levels_left[s] -= 1
                    if not levels_left[s]:
                        bar.update(1)
    except BaseException as exc:
        client.cancel(list(futures))
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise RuntimeError(
            f"{desc} stopped before finishing ({type(exc).__name__}: {exc}); finished samples "
            "are kept in the store; rerun the same command or call to fill in only the missing ones"
        ) from exc
    finally:
        bar.close()
