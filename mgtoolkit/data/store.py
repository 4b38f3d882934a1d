"""The dataset store: one zarr (v3) store per dataset, one group per multigrid level.

Layout (format version 1)::

    data.zarr/                         root attrs: format, format_version, mgtoolkit_version,
    │                                  family, family_parameters, coarsening, seed, omega_source,
    │                                  dim, resolution, levels, samples
    ├── level1/                        attrs: level, n (cells per side), h
    │   ├── sample (sample)            int64, 0 .. samples-1
    │   ├── z, y, x (n)                cell-centre coordinates (i + ½) h (2D: y, x)
    │   ├── mode (mode)                1 .. m (parametric families only)
    │   ├── nu (sample, z, y, x)       float32 diffusivity on cells, NaN where not yet written
    │   ├── omega (sample, mode)       float64 family parameters ω (parametric families only)
    │   ├── nu_complete (sample)       bool, set only after every chunk of the sample is written
    │   │   node fields, added on demand by :func:`allocate_node_field` (``map_samples``):
    │   ├── z_node, y_node, x_node     node coordinates i h, i = 0 .. n (2D: y_node, x_node)
    │   ├── u_fem (sample, z_node, y_node, x_node)   float32 (or as requested) on nodes
    │   └── u_fem_complete (sample)    bool completion marker, written last
    ├── level2/ …                      n / 2 cells per side
    └── levelL/

Read it with :func:`open_store` / :func:`open_level`, or with plain xarray:
``xr.open_datatree(path, engine="zarr", consolidated=False)``. Metadata is deliberately not
consolidated: node fields are added later, and a stale consolidated copy would hide them.

Every per-sample variable ``v`` written by tasks has a marker ``v_complete``; a sample counts only
once its marker is set, so an interrupted writer leaves at worst an unmarked, half-written
sample that the next run rewrites. Markers are written by the coordinating process alone.
Adding a node field creates new arrays beside ``nu`` and never rewrites it.

Chunking (see :class:`Chunking`) — uncompressed bytes per sample decide:

- *Samples up to* ``chunk_mib`` (8 MiB: 2D up to 1024², 3D up to 128³ in float32): one chunk
  per sample, so a reader of one sample (:class:`~mgtoolkit.data.LevelDataset`) decodes exactly
  that sample.
- *Tiny samples* (< ``shard_below_mib`` = 1 MiB: 3D below 64³, 2D below 512²) are moreover
  grouped into shards of ≤ ``shard_mib`` consecutive samples, so that 10⁴ small fields are a few
  hundred files per level rather than 10⁴, yet spread over at least ``min_shards`` shards so
  they still spread over the workers. A shard is written whole, by one task, so concurrent
  writers never share one (zarr rewrites a whole shard on any write). Shards pay off in writes
  and in file counts only for tiny samples, and a sharded read costs an extra index read, so
  larger samples are not sharded (docs/performance.md, "Design measurements").
- *Large samples*: cubic spatial chunks of the largest power-of-two side within ``chunk_mib``
  (8 MiB = 128³ float32), no sharding. A 512³ sample is 64 chunk objects; one task writes one
  slab of chunks along the first axis, one chunk at a time, which bounds a worker's memory by a
  few chunks whatever the resolution or the number of samples. Node fields use chunks one node
  longer per side so that their chunks cover the same cells.

Chunks are compressed with blosc (lz4, byte shuffle): training reads every sample many times,
so fast decoding wins over the last few percent of size that slower codecs save
(docs/performance.md, "Design measurements").
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mgtoolkit.grids import AXES, level_resolution

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "NU_DTYPE",
    "Chunking",
    "allocate_node_field",
    "check_store",
    "completed",
    "create_store",
    "level_group",
    "marker_name",
    "node_dims",
    "open_level",
    "open_store",
    "store_summary",
]

FORMAT = "mgtoolkit-dataset"
#: Bumped whenever a reader of the previous layout would misread a new store.
FORMAT_VERSION = 1
#: Storage type of ν: float32 keeps 7 significant digits (ample for a coefficient whose
#: contrast is ~1e6) at half the bytes of float64.
NU_DTYPE = "float32"


@dataclass(frozen=True)
class Chunking:
    """Chunk and shard sizes (uncompressed MiB); the defaults are justified in the module doc."""

    chunk_mib: float = 8.0
    shard_below_mib: float = 1.0
    shard_mib: float = 32.0
    min_shards: int = 8

    def layout(self, *, dim: int, n: int, samples: int, itemsize: int = 4) -> tuple[tuple, tuple]:
        """``(chunks, shards)`` of a cell field ``(samples,) + (n,) * dim``; shards may be None."""
        sample_bytes = itemsize * n**dim
        if sample_bytes > self.chunk_mib * 2**20:
            side = 1 << int(math.log2((self.chunk_mib * 2**20 / itemsize) ** (1.0 / dim)))
            return (1,) + (min(side, n),) * dim, None
        chunks = (1,) + (n,) * dim
        if sample_bytes >= self.shard_below_mib * 2**20:
            return chunks, None
        k = int(self.shard_mib * 2**20 // sample_bytes)
        k = max(1, min(k, math.ceil(samples / self.min_shards)))
        return chunks, ((k,) + (n,) * dim if k > 1 else None)


def level_group(level: int) -> str:
    """Group name of a level: ``"level1"`` is the finest."""
    return f"level{int(level)}"


def marker_name(variable: str) -> str:
    """Name of the per-sample completion marker of ``variable``."""
    return f"{variable}_complete"


def node_dims(dim: int) -> tuple[str, ...]:
    """Dimension names of a node field: ``("sample", "z_node", "y_node", "x_node")`` in 3D."""
    return ("sample", *(f"{a}_node" for a in AXES[dim]))


def _compressors():
    import zarr.codecs

    return (zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)


def _is_store(path: Path) -> bool:
    return (path / "zarr.json").is_file()


def check_store(path: str | os.PathLike) -> dict[str, Any]:
    """Validate that ``path`` is a readable mgtoolkit store and return its root attributes.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        ``path`` is not a zarr store, not an mgtoolkit dataset, or from another format version.
    """
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no dataset at {path}; create one with `mgtoolkit data generate --out {path}`"
        )
    if not _is_store(path):
        raise ValueError(
            f"{path} is not a zarr store (no zarr.json); pass the dataset directory written by "
            "`mgtoolkit data generate`"
        )
    _check_metadata(path)
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    if attrs.get("format") != FORMAT:
        raise ValueError(
            f"{path} is a zarr store but not an mgtoolkit dataset (no format={FORMAT!r} "
            "attribute); generate one with `mgtoolkit data generate`"
        )
    version = attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has dataset format version {version}, this mgtoolkit reads version "
            f"{FORMAT_VERSION}; regenerate it (same command with --overwrite) or use the "
            f"mgtoolkit release that wrote it ({attrs.get('mgtoolkit_version')})"
        )
    return attrs


def _check_metadata(path: Path) -> None:
    """Raise a ValueError naming the file when a metadata file of the store is not valid JSON."""
    import json

    files = [path / "zarr.json", *path.glob("level*/zarr.json"), *path.glob("level*/*/zarr.json")]
    for file in files:
        try:
            meta = json.loads(file.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{file} is corrupt ({str(exc)[:80]}); the store's metadata is damaged — "
                "regenerate the store (same command with --overwrite) or restore that file"
            ) from None
        if not isinstance(meta, dict) or "zarr_format" not in meta:
            raise ValueError(
                f"{file} is not zarr metadata; the store's metadata is damaged — regenerate "
                "the store (same command with --overwrite) or restore that file"
            )


def create_store(
    path: str | os.PathLike,
    *,
    attrs: dict[str, Any],
    omega: np.ndarray,
    chunking: Chunking,
    replace: bool = False,
) -> None:
    """Write an empty store (metadata, coordinates, ω) and move it into place at ``path``.

    It is built in a hidden sibling directory and renamed, so ``path`` never holds a
    half-created store. ``replace`` removes an existing store at ``path`` first.
    """
    import dask.array as da
    import xarray as xr
    import zarr

    path = Path(path)
    host = socket.gethostname().replace("-", "_")
    tmp = path.parent / f".{path.name}.creating-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    dim, samples = attrs["dim"], attrs["samples"]
    try:
        zarr.open_group(str(tmp), mode="w", zarr_format=3).attrs.update(attrs)
        for level in range(1, attrs["levels"] + 1):
            n = level_resolution(attrs["resolution"], level)
            chunks, shards = chunking.layout(dim=dim, n=n, samples=samples)
            k = (shards or chunks)[0]
            centres = (np.arange(n) + 0.5) / n
            coords: dict[str, Any] = {"sample": np.arange(samples)}
            coords.update({a: (a, centres, {"long_name": f"cell centre {a}"}) for a in AXES[dim]})
            nu = da.zeros((samples,) + (n,) * dim, chunks=shards or chunks, dtype=NU_DTYPE)
            data: dict[str, Any] = {
                "nu": (
                    ("sample", *AXES[dim]),
                    nu,
                    {"long_name": "diffusivity ν", "units": "1", "grid": "cells"},
                ),
                marker_name("nu"): (("sample",), np.zeros(samples, dtype=bool)),
            }
            enc: dict[str, Any] = {
                "nu": {
                    "chunks": chunks,
                    "shards": shards,
                    "compressors": _compressors(),
                    "fill_value": np.nan,
                },
                marker_name("nu"): {"chunks": (k,)},
            }
            if omega.shape[1]:
                coords["mode"] = np.arange(1, omega.shape[1] + 1)
                data["omega"] = (("sample", "mode"), omega, {"long_name": "family parameters ω"})
                enc["omega"] = {"chunks": (k, omega.shape[1])}
            ds = xr.Dataset(data, coords=coords)
            ds.attrs.update({"level": level, "n": n, "h": 1.0 / n})
            ds.to_zarr(
                str(tmp),
                group=level_group(level),
                mode="w",
                compute=False,
                encoding=enc,
                consolidated=False,
                zarr_format=3,
            )
        if replace and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def completed(path: str | os.PathLike, level: int, variable: str = "nu") -> np.ndarray:
    """Completion markers of ``variable`` at ``level``: bool ``(samples,)``, False if absent."""
    import zarr

    group = zarr.open_group(str(path), mode="r")[level_group(level)]
    if marker_name(variable) not in group:
        return np.zeros(group["sample"].shape[0], dtype=bool)
    return np.asarray(group[marker_name(variable)][:], dtype=bool)


def allocate_node_field(
    path: str | os.PathLike, level: int, name: str, *, dtype: str = "float32"
) -> None:
    """Create the node field ``name`` (and its marker) at ``level`` unless it exists.

    The field has dims :func:`node_dims` and shape ``(samples,) + (n + 1,) * dim``, NaN until
    written; node coordinates ``*_node`` (i h, i = 0..n) are added with the first node field.
    ``nu`` and the other variables are left untouched.
    """
    import dask.array as da
    import xarray as xr
    import zarr

    attrs = check_store(path)
    group = zarr.open_group(str(path), mode="r")[level_group(level)]
    if name in group:
        return
    dim, samples = attrs["dim"], attrs["samples"]
    n = level_resolution(attrs["resolution"], level)
    nu = group["nu"]
    k = (nu.shards or nu.chunks)[0]
    spatial = nu.chunks[1:]
    if spatial[0] == n:  # one chunk per sample, sharded like ν
        chunks, shards = (1,) + (n + 1,) * dim, ((k,) + (n + 1,) * dim if k > 1 else None)
    else:  # spatial chunks one node longer than ν's: they cover the same cells
        chunks, shards = (1, *(c + 1 for c in spatial)), None
    dims = node_dims(dim)
    coords = {
        d: (d, np.arange(n + 1) / n, {"long_name": f"node {d[0]}"})
        for d in dims[1:]
        if d not in group
    }
    field = da.zeros((samples,) + (n + 1,) * dim, chunks=shards or chunks, dtype=dtype)
    ds = xr.Dataset(
        {
            name: (dims, field, {"grid": "nodes"}),
            marker_name(name): (("sample",), np.zeros(samples, dtype=bool)),
        },
        coords=coords,
        attrs=dict(group.attrs),  # to_zarr(mode="a") replaces the group's attributes
    )
    enc = {
        name: {
            "chunks": chunks,
            "shards": shards,
            "compressors": _compressors(),
            "fill_value": np.nan,
        },
        marker_name(name): {"chunks": (k,)},
    }
    ds.to_zarr(
        str(path),
        group=level_group(level),
        mode="a",
        compute=False,
        encoding=enc,
        consolidated=False,
        zarr_format=3,
    )


def _dask_chunks(path: Path, level: int) -> dict[str, int]:
    """Dask chunk sizes along each dim that match the stored shards/chunks of ``level``."""
    import zarr

    nu = zarr.open_group(str(path), mode="r")[level_group(level)]["nu"]
    block = nu.shards or nu.chunks
    dims = nu.metadata.dimension_names
    chunks = dict(zip(dims, block, strict=True))
    chunks.update({f"{d}_node": c + 1 for d, c in zip(dims[1:], block[1:], strict=True)})
    return chunks


def open_level(path: str | os.PathLike, level: int):
    """One level of a dataset as a lazy :class:`xarray.Dataset` (dask arrays, chunked by shard).

    Samples whose ``<var>_complete`` marker is False hold NaN (or partial data) in ``<var>``.
    """
    import xarray as xr

    attrs = check_store(path)
    if not isinstance(level, int | np.integer) or not 1 <= level <= attrs["levels"]:
        raise ValueError(
            f"level must be 1 (finest) .. {attrs['levels']} for {path} (got {level!r})"
        )
    return xr.open_zarr(
        str(path),
        group=level_group(level),
        consolidated=False,
        chunks=_dask_chunks(Path(path), level),
    )


def open_store(path: str | os.PathLike):
    """The whole dataset as a lazy :class:`xarray.DataTree`: root attributes, a group per level."""
    import xarray as xr

    attrs = check_store(path)
    tree = {"/": xr.Dataset(attrs=attrs)}
    for level in range(1, attrs["levels"] + 1):
        tree[level_group(level)] = open_level(path, level)
    return xr.DataTree.from_dict(tree)


def _disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def store_summary(path: str | os.PathLike) -> str:
    """A human-readable summary (for ``mgtoolkit data info``)."""
    import zarr

    from mgtoolkit.data.verify import quick_check, verification_status

    path = Path(path)
    attrs = check_store(path)
    root = zarr.open_group(str(path), mode="r")
    lines = [
        f"{path}  ({_disk_bytes(path) / 2**20:.1f} MiB on disk, format {attrs['format_version']}, "
        f"written by mgtoolkit {attrs['mgtoolkit_version']})",
        f"  family      {attrs['family']}  ({attrs['coarsening']} coarse levels)",
        f"  parameters  {attrs['family_parameters']}",
        f"  dim {attrs['dim']}, resolution {attrs['resolution']}, levels {attrs['levels']}, "
        f"samples {attrs['samples']}, seed {attrs['seed']} (ω: {attrs['omega_source']})",
    ]
    for level in range(1, attrs["levels"] + 1):
        group = root[level_group(level)]
        n = group.attrs["n"]
        lines.append(f"  {level_group(level)}: {n} cells per side")
        for name in sorted(group.array_keys()):
            if not name.endswith("_complete") and marker_name(name) in group:
                arr = group[name]
                done = int(np.count_nonzero(group[marker_name(name)][:]))
                lines.append(
                    f"    {name:<8} {arr.dtype} {tuple(arr.shape)}  chunks {arr.chunks}"
                    f"  shards {arr.shards}  complete {done}/{arr.shape[0]}"
                )
                damaged = quick_check(path, level, name)
                if damaged:
                    first = next(iter(damaged.values()))
                    lines.append(
                        f"      DAMAGED: {len(damaged)} of them (e.g. sample {first.sample}: "
                        f"{first.reason}, {first.file}); run `mgtoolkit data verify {path}`"
                    )
    lines.append(f"  integrity   {verification_status(path, attrs)}")
    return "\n".join(lines)
