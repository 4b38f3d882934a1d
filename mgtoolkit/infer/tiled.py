"""Tiled prediction: a trained U-Net over ν volumes of any size, equal to untiled inference.

Why tiles and streams: untiled inference of a 512³ field holds several 16-channel
full-resolution activations at once (tens of GiB). Each tile's box is streamed along z
(:mod:`mgtoolkit.infer.stream`), so its memory is set by its z-plane area; tiles split y and x
only when one plane of the field is too large, at the price of recomputing their halo.
Why it is exact (see :mod:`mgtoolkit.infer.tiles` for the geometry): every owned node is
computed from a box that contains its whole receptive field, aligned to the pooling grid; batch
norm in eval mode is pointwise. The one global quantity, the per-sample mean of log ν that
:meth:`~mgtoolkit.nn.UNet.inputs` subtracts, is computed once over the whole volume and passed
to every tile, and the x-coordinate channel uses global cell positions. Instance and group
normalization use statistics of the whole field and cannot be tiled exactly: they are refused.
A network with ``mirror_average`` runs the tiles of every image of a field under its symmetry
maps (read through a view, box by box) and averages the images mapped back, as untiled
inference does. A network with ``predict_at`` runs the tiles of ν coarsened to that resolution
and interpolates u back, as untiled inference does.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mgtoolkit.grids import level_resolution
from mgtoolkit.infer.tiles import Tile, downsampling, tiles
from mgtoolkit.nn.unet import coarsening, interpolate_nodes

__all__ = [
    "TiledPredictor",
    "log_nu_mean",
    "predict_store",
    "predict_tiled",
]

#: Planes of ν read at once when summing log ν (bounds the temporaries of a 512³ field).
_MEAN_PLANES = 32
#: One tile at a time per worker process, using all of its threads: a worker with several
#: threads would otherwise run several tiles at once and multiply the memory a tile sets.
_TILE_LOCK = threading.Lock()


def log_nu_mean(nu) -> float:
    """Mean of log ν over a whole field, accumulated in float64, a few planes at a time.

    ``nu``: array-like ``(n,) * dim`` on cells (numpy, zarr or anything sliceable).
    """
    total, count = 0.0, 0
    for z in range(0, nu.shape[0], _MEAN_PLANES):
        block = np.asarray(nu[z : z + _MEAN_PLANES], dtype=np.float64)
        total += float(np.log(block).sum())
        count += block.size
    return total / count


class _Image:
    """Read-only view of a field's image under a symmetry map: reads only the box asked for."""

    def __init__(self, array, m) -> None:
        self.array, self.map, self.shape = array, m, tuple(array.shape)

    def __getitem__(self, key) -> np.ndarray:
        from mgtoolkit.nn import symmetry

        key = key if isinstance(key, tuple) else (key,)
        key += (slice(None),) * (len(self.shape) - len(key))
        box = np.asarray(self.array[self.map.source_box(key, self.shape)])
        return np.ascontiguousarray(symmetry.apply(self.map, box))


def _check_tileable(model) -> None:
    if model.config.norm in ("instance", "group"):
        raise ValueError(
            f"a U-Net with norm={model.config.norm!r} normalizes by statistics of the whole "
            "field, so tiles cannot reproduce it exactly; predict such a network untiled "
            "(tile=None on a grid that fits) or train with norm='batch' or 'none'"
        )
    if model.training:
        raise ValueError(
            "the network is in training mode (batch norm would use tile statistics); "
            "call model.eval() before tiled prediction"
        )


@dataclass
class TiledPredictor:
    """Picklable ``nu -> u`` running a U-Net tile by tile (for dask workers and map_samples).

    Each tile's box is streamed through the network along z
    (:class:`~mgtoolkit.infer.stream.StreamedUNet`: batch norm folded, nothing recomputed
    within the box), so a box spanning the whole field costs memory in proportion to its
    z-plane area only; tiles split y and x when that is too much.

    Parameters
    ----------
    model : mgtoolkit.nn.UNet
        In eval mode; norm "batch" or "none".
    tile : int or tuple of int, optional
        Owned nodes per side of a tile (or per axis, z y x); None runs the field as one tile.
        A cascaded network (:meth:`~mgtoolkit.nn.UNet.cascade`) runs each field whole: its
        coarse stage needs the whole field, so ``tile`` does not apply.
    threads : int, optional
        torch intra-op threads in the process running it (default: leave torch's setting).
    planes : int, optional
        Node planes streamed per step (memory grows with it); default
        :data:`mgtoolkit.infer.stream.DEFAULT_PLANES`.
    """

    model: object
    tile: int | tuple[int, ...] | None = None
    threads: int | None = None
    planes: int | None = None
    _stream: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        _check_tileable(self.model)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_stream": None}

    def inputs(self, nu_planes, *, x_cells: tuple[int, int], n: int, mean: float):
        """Input channels ``(1, C) + shape`` of cells ``nu_planes`` of an ``(n,) * dim`` field.

        :meth:`mgtoolkit.nn.UNet.inputs` with the whole field's mean of log ν and the global
        cell range ``x_cells`` (half-open) of the last axis of ``nu_planes``.
        """
        import torch

        dtype = self.model.log_nu_scale.dtype
        nu = torch.as_tensor(np.asarray(nu_planes), dtype=dtype)[None]
        return self.model.inputs(nu, log_nu_mean=mean, x_cells=x_cells, n=n)

    def tile_list(self, n: int, dim: int) -> list[Tile]:
        """The tiles of an ``(n,) * dim`` field (one tile when untiled)."""
        size = n + 1 if self.tile is None else self.tile
        return tiles(self.model.config, n=n, dim=dim, tile=size, growth=self.model.growth)

    def predict_tile(self, nu, t: Tile, *, n: int, mean: float) -> np.ndarray:
        """u on the owned nodes of tile ``t`` (ndarray of the network's dtype).

        ν's box is read from ``nu`` a few z-planes at a time.
        """
        import torch

        from mgtoolkit.infer.stream import DEFAULT_PLANES, StreamedUNet

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        if self._stream is None:
            self._stream = StreamedUNet(self.model, planes=self.planes or DEFAULT_PLANES)
        (z0, z1), rest = t.cells[0], t.cell_slices[1:]

        def source(a: int, b: int):
            return self.inputs(
                nu[(slice(z0 + a, z0 + b), *rest)], x_cells=t.cells[-1], n=n, mean=mean
            )

        inner = t.inner_slices
        owned = inner[0]
        dtype = torch.empty((), dtype=self.model.log_nu_scale.dtype).numpy().dtype
        out = np.empty([s.stop - s.start for s in inner], dtype=dtype)

        def keep(a: int, b: int, u) -> None:
            lo, hi = max(a, owned.start), min(b, owned.stop)
            if lo < hi:
                out[lo - owned.start : hi - owned.start] = u[(slice(lo - a, hi - a), *inner[1:])]

        self._stream(source, cells=z1 - z0, out=keep)
        return out

    def __call__(self, nu) -> np.ndarray:
        """u on nodes ``(n + 1,) * dim`` of one field ν ``(n,) * dim`` (any array-like)."""
        import torch

        dim, n = self.model.config.dim, int(nu.shape[-1])
        if tuple(nu.shape) != (n,) * dim:
            raise ValueError(
                f"expected one field of shape (n,)*{dim} on cells (got {tuple(nu.shape)})"
            )
        factor = coarsening(n, self.model.predict_at)
        if factor == 1:
            return self._predict(nu, n=n, dim=dim)
        from mgtoolkit.fields import geometric_coarsen

        coarse = self._predict(geometric_coarsen(np.asarray(nu), factor), n=n // factor, dim=dim)
        return interpolate_nodes(torch.from_numpy(coarse)[None], factor, dim)[0].numpy()

    def _predict(self, nu, *, n: int, dim: int) -> np.ndarray:
        """u of one field at its own resolution, tile by tile (the model's ``predict_at`` aside)."""
        import torch

        # A coarse grid (the network pads it itself) or a cascaded network (its coarse stage
        # needs the whole field): the network runs the field whole.
        if n % downsampling(self.model.config) or self.model.cascades:
            with torch.inference_mode():
                x = torch.as_tensor(np.asarray(nu), dtype=self.model.log_nu_scale.dtype)
                return self.model(x[None])[0].float().numpy()
        from mgtoolkit.nn import symmetry

        mean = log_nu_mean(nu)  # the same for every image
        maps = self.model.symmetry_maps
        total = None
        for m in maps:
            identity = m.name == "identity"
            source = nu if identity else _Image(nu, m)
            u = np.empty((n + 1,) * dim, dtype=np.float32)
            for t in self.tile_list(n, dim):
                u[t.node_slices] = self.predict_tile(source, t, n=n, mean=mean)
            if not identity:
                u = np.ascontiguousarray(symmetry.map_back(m, u))
            total = u if total is None else total + u
        return total / len(maps) if len(maps) > 1 else total


def predict_tiled(model, nu, *, tile: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Predict u for one field in memory, tile by tile, equal to ``model(nu)`` up to rounding.

    Parameters
    ----------
    model : mgtoolkit.nn.UNet
        In eval mode, norm "batch" or "none".
    nu : array-like, shape ``(n,) * dim`` on cells
        numpy, torch (CPU) or zarr array; only one tile's box is read at a time.
    tile : int or tuple of int, optional
        Owned nodes per side of a tile, or per axis (peak memory grows with the box,
        ``(tile + 2 halo)**dim``); None: one tile.

    Returns
    -------
    numpy.ndarray, float32, shape ``(n + 1,) * dim`` on nodes
    """
    if hasattr(nu, "detach"):
        nu = nu.detach().cpu().numpy()
    return TiledPredictor(model, tile=tile)(nu)


def _sample_mean(path: str, level: int, sample: int) -> float:
    """Task: mean of log ν of one stored sample."""
    import zarr

    from mgtoolkit.data.store import level_group

    nu = zarr.open_group(path, mode="r")[level_group(level)]["nu"]
    return log_nu_mean(_SampleView(nu, sample))


@dataclass(frozen=True)
class _SampleView:
    """``array[sample]`` sliced lazily: indexing reads only the requested box from zarr."""

    array: object
    sample: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        return self.array[(self.sample, *index)]


def _tile_task(
    path: str, predictor: TiledPredictor, level: int, sample: int, t: Tile, mean: float
) -> np.ndarray:
    """Task: u on the owned nodes of one tile of one stored sample (ν read from zarr)."""
    import zarr
    from distributed import get_worker

    from mgtoolkit.data.store import level_group

    with _TILE_LOCK:
        if predictor.threads is None:
            import torch

            torch.set_num_threads(get_worker().state.nthreads)
        nu = zarr.open_group(path, mode="r")[level_group(level)]["nu"]
        return predictor.predict_tile(_SampleView(nu, sample), t, n=nu.shape[-1], mean=mean)


class _SlabWriter:
    """Collect tile results of one sample and write each slab of chunk rows once it is whole.

    The slabs follow the node field's chunks along z, so every write covers whole chunks and
    each chunk is compressed once; at most the slabs still waiting for tiles are in memory.
    """

    def __init__(self, field, sample: int, layout: list[Tile]) -> None:
        self.field, self.sample = field, sample
        size, chunk = field.shape[1], field.chunks[1]
        self.slabs = [(z, min(z + chunk, size)) for z in range(0, size, chunk)]
        self.waiting = {
            z: {i for i, t in enumerate(layout) if t.nodes[0][0] < z1 and z < t.nodes[0][1]}
            for z, z1 in self.slabs
        }
        self.buffers: dict[int, np.ndarray] = {}

    def add(self, index: int, t: Tile, u: np.ndarray) -> None:
        shape = self.field.shape[2:]
        for z0, z1 in self.slabs:
            a, b = max(z0, t.nodes[0][0]), min(z1, t.nodes[0][1])
            if a >= b:
                continue
            buf = self.buffers.get(z0)
            if buf is None:
                buf = self.buffers[z0] = np.empty((z1 - z0, *shape), dtype=self.field.dtype)
            rest = t.node_slices[1:]
            buf[(slice(a - z0, b - z0), *rest)] = u[a - t.nodes[0][0] : b - t.nodes[0][0]]
            self.waiting[z0].discard(index)
            if not self.waiting[z0]:
                self.field[self.sample, z0:z1] = self.buffers.pop(z0)

    @property
    def done(self) -> bool:
        return not any(self.waiting.values())


def predict_store(
    path: str | os.PathLike,
    model,
    *,
    level: int = 1,
    name: str = "u_pred",
    tile: int | tuple[int, ...] | None = None,
    client=None,
    progress: bool = True,
) -> Path:
    """Write the network's prediction as node field ``name`` at ``level``, tile by tile on dask.

    Parameters
    ----------
    path : path-like
        Dataset store (:func:`mgtoolkit.data.generate`).
    model : mgtoolkit.nn.UNet
        In eval mode, norm "batch" or "none".
    level : int
        Level to predict (1 = finest).
    name : str
        Node field (created by :func:`mgtoolkit.data.allocate_node_field` if absent).
    tile : int or tuple of int, optional
        Owned nodes per side of a tile, or per axis (z, y, x). Default: one tile per sample,
        for samples stored whole; required for spatially chunked (large) samples:
        :func:`mgtoolkit.plan.suggest_tile` gives the largest that fits this machine's memory.
    client : distributed.Client, optional
        Default: an embedded LocalCluster for the duration of the call.
    progress : bool
        tqdm progress bar (in tiles for large samples, in samples for small ones).

    Notes
    -----
    Large samples: each task reads its box of ν from zarr and returns its block of u; the
    calling process writes u slab by slab (whole chunks) as soon as a slab is complete, so no
    two writers ever share a chunk. Small samples (one chunk per sample) run through
    :func:`mgtoolkit.data.map_samples`, one sample per task. Samples whose
    ``<name>_complete`` marker is set are skipped (resumable); a marker is set once all of
    its sample's tiles are written.
    """
    import zarr

    from mgtoolkit.cluster import client_context
    from mgtoolkit.data import allocate_node_field, check_store, completed, map_samples
    from mgtoolkit.data.store import level_group, marker_name

    attrs = check_store(path)
    if not isinstance(level, int | np.integer) or not 1 <= level <= attrs["levels"]:
        raise ValueError(f"level must be 1 (finest) .. {attrs['levels']} (got {level!r})")
    n, dim = level_resolution(attrs["resolution"], level), attrs["dim"]
    if dim != model.config.dim:
        raise ValueError(f"the network is {model.config.dim}D but {path} holds {dim}D fields")
    _check_tileable(model)
    allocate_node_field(path, level, name)
    group = zarr.open_group(str(path), mode="r+")[level_group(level)]
    field, marker = group[name], group[marker_name(name)]
    # predict_at: each sample is read whole, coarsened and predicted in one task (the network
    # runs on the coarse field, small), and u interpolated back; a cascaded network runs
    # whole fields
    whole = model.predict_at or model.cascades
    if field.chunks[1] >= n + 1 or n % downsampling(model.config) or whole:
        coarsening(n, model.predict_at)  # a level coarser than predict_at: refused here
        fn = TiledPredictor(model, tile=tile, threads=1)
        map_samples(path, fn, level=level, name=name, client=client, progress=progress)
        return Path(path)
    if model.mirror_average:
        raise ValueError(
            f"mirror averaging is not available for spatially chunked samples ({n}^{dim} "
            "cells, written slab by slab across workers); set model.mirror_average = False, "
            "or predict each sample in memory with predict_tiled(model, nu)"
        )
    todo = np.flatnonzero(~completed(path, level, name))
    if not todo.size:
        return Path(path)
    if tile is None:
        raise ValueError(
            f"{path} stores each {n}^{dim} sample in spatial chunks, predicted tile by tile: "
            "pass tile= (mgtoolkit.plan.suggest_tile gives the largest that fits this "
            "machine's memory)"
        )
    from distributed import as_completed
    from tqdm.auto import tqdm

    predictor = TiledPredictor(model, tile=tile)
    layout = predictor.tile_list(n, dim)
    with contextlib.ExitStack() as stack:
        c = stack.enter_context(client_context(client, single_arena=True))
        shipped = c.scatter(predictor, broadcast=True, hash=False)
        futures, writers = {}, {}
        for s in map(int, todo):
            writers[s] = _SlabWriter(field, s, layout)
            mean = c.submit(_sample_mean, str(path), level, s, pure=False)
            for i, t in enumerate(layout):
                f = c.submit(_tile_task, str(path), shipped, level, s, t, mean, pure=False)
                futures[f] = (s, i, t)
        bar = tqdm(total=len(futures), desc=f"predict {name}", unit="tile", disable=not progress)
        try:
            for f in as_completed(futures):
                s, i, t = futures.pop(f)
                writers[s].add(i, t, f.result())
                del f
                if writers[s].done:
                    marker[s] = True
                bar.update()
        except BaseException as exc:
            c.cancel(list(futures))
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise RuntimeError(
                f"tiled prediction stopped ({type(exc).__name__}: {exc}); finished samples are "
                "kept in the store — rerun the same call to predict only the missing ones"
            ) from exc
        finally:
            bar.close()
    return Path(path)
