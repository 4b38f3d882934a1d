"""Generate a multilevel diffusivity dataset on dask, resumably."""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from mgtoolkit.cluster import client_context
from mgtoolkit.data._tasks import (
    Unit,
    chunk_regions,
    plan_units,
    remove_partials,
    run_units,
    write_blocks,
)
from mgtoolkit.data.store import (
    FORMAT,
    FORMAT_VERSION,
    Chunking,
    check_store,
    completed,
    create_store,
    level_group,
)
from mgtoolkit.fields import Family, get_family
from mgtoolkit.fields.arrays import ArrayFamily
from mgtoolkit.grids import check_dim, check_resolution
from mgtoolkit.runtime import process_alive

__all__ = ["generate", "import_arrays"]

#: Root attributes that must agree for a rerun to resume an existing store.
_IDENTITY = ("family", "family_parameters", "dim", "resolution", "levels", "samples", "seed")


def generate(
    path: str | os.PathLike,
    *,
    dim: int,
    resolution: int,
    levels: int,
    samples: int,
    seed: int | None,
    family: str | Family = "kl",
    omega: Any = None,
    client=None,
    overwrite: bool = False,
    progress: bool = True,
    chunking: Chunking | None = None,
    repair: bool = False,
) -> Path:
    """Write ``samples`` diffusivity fields at ``levels`` resolutions into a zarr store.

    Parameters
    ----------
    path : path-like
        The store directory (conventionally ``*.zarr``).
    dim : int
        2 or 3.
    resolution : int
        Cells per side of level 1 (the finest), a power of two with ≥ 2 cells at level ``levels``.
    levels : int
        Number of levels; level ℓ has ``resolution / 2**(ℓ-1)`` cells per side.
    samples : int
        Number of fields (> 0).
    seed : int or None
        Seed of the scrambled Sobol sequence giving ω; recorded in the store.
    family : str or Family
        A registered family name (``"kl"``) or a :class:`~mgtoolkit.fields.Family` instance.
    omega : array-like, optional
        Explicit parameters, shape ``(samples, modes)``, instead of Sobol draws (e.g. the
        corners of the ω box for a robustness test set).
    client : distributed.Client, optional
        Where to run. Default: an embedded LocalCluster (one single-threaded worker process per
        core, at most 8), created and closed by this call.
    overwrite : bool
        Replace an existing store made with other parameters (or another format version).
        Without it such a store is left alone and a ValueError says so.
    progress : bool
        Show a tqdm progress bar (in samples).
    chunking : Chunking, optional
        Chunk/shard sizes (defaults justified in :mod:`mgtoolkit.data.store`).
    repair : bool
        Read every stored ν first (:func:`mgtoolkit.data.verify.verify_store`) and rewrite the
        damaged samples (and those sharing a file with them). Without it, samples whose files
        are missing or truncated (:func:`~mgtoolkit.data.verify.quick_check`) are rewritten.

    Returns
    -------
    Path of the store. Rerunning the same call after an interruption writes only the samples
    whose completion marker is missing; a complete store is left untouched.

    Notes
    -----
    Memory per worker thread is bounded by one task's write block — a chunk of ≤ 8 MiB (large
    samples are evaluated chunk by chunk, never as a whole volume) or ≤ 16 MiB of whole small
    samples — plus float64 temporaries of one chunk or sample: independent of the number of
    samples and of the resolution. Measured peak resident memory of a worker process while
    writing one 512³ sample: 0.19 GiB (``benchmarks/generate.py``).

    Raises
    ------
    ValueError
        Bad parameters, or an existing store/path that this call would have to overwrite.
        Nothing is written in either case.
    RuntimeError
        A task failed (e.g. a worker was killed); finished samples are kept.
    """
    fam = get_family(family)
    dim = check_dim(dim)
    check_resolution(resolution, levels)
    if not isinstance(samples, int | np.integer) or isinstance(samples, bool) or samples <= 0:
        raise ValueError(f"samples must be a positive integer (got {samples!r}); try --samples 8")
    if fam.data_shape is not None and fam.data_shape != (samples, dim, resolution):
        raise ValueError(
            f"the {fam.name!r} family holds data of (samples, dim, n) = {fam.data_shape}, but "
            f"samples={samples}, dim={dim}, resolution={resolution} were asked; leave them to "
            "the data (mgtoolkit.data.import_arrays)"
        )
    shape = {"dim": dim, "resolution": int(resolution), "levels": int(levels)}
    _check_size(path, {**shape, "samples": int(samples)}, chunking or Chunking(), disk=False)
    if omega is None:
        omega = fam.draw(int(samples), seed)
        source = "sobol" if fam.modes else "none"
    else:
        omega = fam.check_omega(omega)
        if omega.shape[0] != samples:
            raise ValueError(
                f"omega has {omega.shape[0]} rows but samples={samples}; make them equal"
            )
        source = "given"
    from mgtoolkit import __version__

    attrs = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mgtoolkit_version": __version__,
        "family": fam.name,
        "family_parameters": fam.parameters(),
        "coarsening": fam.coarsening,
        "seed": seed,
        "omega_source": source,
        "dim": dim,
        "resolution": int(resolution),
        "levels": int(levels),
        "samples": int(samples),
    }
    path = Path(path)
    sweep_stale_creations(path)
    if _must_create(path, attrs, omega, overwrite=overwrite):
        _check_size(path, attrs, chunking or Chunking())
        create_store(
            path, attrs=attrs, omega=omega, chunking=chunking or Chunking(), replace=overwrite
        )
    _fill(path, fam, client=client, progress=progress, repair=repair)
    return path


def import_arrays(
    path: str | os.PathLike,
    data: Any,
    *,
    levels: int,
    dim: int | None = None,
    source: str | None = None,
    client=None,
    overwrite: bool = False,
    progress: bool = True,
    chunking: Chunking | None = None,
) -> Path:
    """Store user voxel arrays as a dataset; coarse levels by geometric mean of children.

    ``data`` is ``(samples,) + (n,) * dim`` or one field ``(n,) * dim`` (numpy, xarray, zarr or
    dask); every value is checked (finite, > 0) before anything is written. See
    :class:`~mgtoolkit.fields.ArrayFamily` and :func:`generate` for the other parameters.
    """
    fam = ArrayFamily(data, dim=dim, source=source)
    samples, dim, n = fam.data_shape
    return generate(
        path,
        dim=dim,
        resolution=n,
        levels=levels,
        samples=samples,
        seed=None,
        family=fam,
        client=client,
        overwrite=overwrite,
        progress=progress,
        chunking=chunking,
    )


def _must_create(path: Path, attrs: dict, omega: np.ndarray, *, overwrite: bool) -> bool:
    """Whether to create a new store at ``path``; raise if something there must be kept."""
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return True
    if not (path / "zarr.json").is_file():
        raise ValueError(
            f"{path} exists and is not a zarr store; choose another output path (this refuses "
            "to delete it even with --overwrite)"
        )
    try:
        old = check_store(path)
    except ValueError:
        if overwrite:
            return True
        raise
    differ = [k for k in _IDENTITY if old.get(k) != attrs[k]]
    if not differ and attrs["omega_source"] != "none":
        import zarr

        stored = zarr.open_group(str(path), mode="r")[level_group(1)]["omega"][:]
        if not np.array_equal(stored, omega):
            differ.append("omega")
    if not differ:
        return overwrite
    if overwrite:
        return True
    described = ", ".join(
        "omega (the stored ω differ from those asked)"
        if k == "omega"
        else f"{k}={old.get(k)!r} (asked {attrs[k]!r})"
        for k in differ
    )
    raise ValueError(
        f"{path} holds a dataset made with other parameters: {described}; pass overwrite=True "
        "(--overwrite) to replace it, or choose another output path"
    )


#: Most chunk or shard files a store may have: beyond, even its task graph exhausts a machine.
MAX_OBJECTS = 2**20


def _check_size(path: Path, attrs: dict, chunking: Chunking, *, disk: bool = True) -> None:
    """Refuse a store that would not fit on its disk or has too many files, before allocating."""
    dim, samples = attrs["dim"], attrs["samples"]
    total_bytes = objects = 0
    for level in range(1, attrs["levels"] + 1):
        n = attrs["resolution"] >> (level - 1)
        total_bytes += 4 * samples * n**dim
        chunks, shards = chunking.layout(dim=dim, n=n, samples=samples)
        block = shards or chunks
        objects += math.ceil(samples / block[0]) * math.ceil(n / block[1]) ** dim
    if objects > MAX_OBJECTS:
        raise ValueError(
            f"a {dim}D store of {samples} samples at resolution {attrs['resolution']} would "
            f"hold {objects:.3g} chunk files (at most {MAX_OBJECTS} are allowed); use a smaller "
            "--resolution or fewer --samples"
        )
    if not disk:
        return
    parent = next((p for p in Path(path).absolute().parents if p.exists()), Path.cwd())
    free = shutil.disk_usage(parent).free
    # Compression saves ~1/3 on smooth fields (module doc of store): ask for half the raw size.
    if total_bytes / 2 > free:
        raise ValueError(
            f"a {dim}D store of {samples} samples at resolution {attrs['resolution']} needs "
            f"~{total_bytes / 2**30:.3g} GiB (uncompressed) but {parent} has "
            f"{free / 2**30:.3g} GiB free; use a smaller --resolution or fewer --samples, or "
            "another --out"
        )


def sweep_stale_creations(path: Path) -> list[Path]:
    """Remove the hidden ``.<name>.creating-*`` siblings that killed runs left beside ``path``.

    A directory is stale when the process named in it (host and pid) is gone, or, for names
    without them, when it is older than a day. Returns the directories removed.
    """
    import socket

    removed = []
    parent = path.parent
    if not parent.is_dir():
        return removed
    host = socket.gethostname().replace("-", "_")
    for tmp in parent.glob(f".{path.name}.creating-*"):
        parts = tmp.name.rsplit(".creating-", 1)[1].split("-")
        if len(parts) == 3:  # <host>-<pid>-<uuid> (create_store writes '-' in hosts as '_')
            owner_host, pid = parts[0], parts[1]
            if owner_host != host or not pid.isdigit() or process_alive(int(pid)):
                continue
        else:
            try:
                if time.time() - tmp.stat().st_mtime < 86400:
                    continue
            except OSError:
                continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def _fill(path: Path, fam: Family, *, client, progress: bool, repair: bool = False) -> None:
    import zarr

    from mgtoolkit.data.verify import mark_for_repair, quick_check, verify_store

    attrs = check_store(path)
    damaged = []
    for level in range(1, attrs["levels"] + 1):
        damaged += list(quick_check(path, level, "nu").values())
    if repair:
        damaged = verify_store(path, variables=["nu"], record=False).damaged
    if damaged:
        mark_for_repair(path, damaged)
    root = zarr.open_group(str(path), mode="r")
    units: list[Unit] = []
    for level in range(1, attrs["levels"] + 1):
        units += plan_units(root[level_group(level)]["nu"], completed(path, level), level)
    if not units:
        return
    remove_partials(path, "nu")
    with client_context(client) as c:
        run_units(
            c, _write_nu, fam, units, path=path, variable="nu", desc="generate", progress=progress
        )


def _write_nu(path: str, family: Family, unit: Unit) -> None:
    """Task: evaluate and write ν of one unit, one chunk (or whole shard) at a time."""
    import zarr

    group = zarr.open_group(path, mode="r+")[level_group(unit.level)]
    nu = group["nu"]
    dim, n = nu.ndim - 1, nu.shape[1]
    omega = group["omega"][unit.start : unit.stop] if family.modes else None

    def params(j: int) -> np.ndarray | None:
        return None if omega is None else omega[j]

    if unit.row is None:
        whole = (slice(0, n),) * dim
        for start, stop in write_blocks(nu, unit):
            out = np.empty((stop - start,) + (n,) * dim, dtype=nu.dtype)
            for s in range(start, stop):
                out[s - start] = family.block(s, params(s - unit.start), dim=dim, n=n, region=whole)
            nu[start:stop] = out
        return
    for region in chunk_regions(nu.shape[1:], nu.chunks[1:], unit.row):
        block = family.block(unit.start, params(0), dim=dim, n=n, region=region)
        nu[(unit.start, *region)] = block.astype(nu.dtype)
