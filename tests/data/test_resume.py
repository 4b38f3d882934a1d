"""A worker process really killed mid-run, then a rerun: complete store, nothing redone twice.

The generation runs on the embedded LocalCluster (client=None) with allowed-failures = 0, so
the first SIGKILL of a worker makes the run fail instead of being retried silently.
"""

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import dask
import distributed  # noqa: F401 — loads distributed's config defaults before dask.config.set below
import numpy as np
import pytest
import zarr

from mgtoolkit.data import Chunking, completed, generate, map_samples, open_level
from mgtoolkit.fields import KLFamily

# The killing family and functions below must reach the worker processes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CHUNKING = Chunking(chunk_mib=4 * 8**3 / 2**20)  # 16³ samples in 8³ chunks: rows of 2 chunks
ARGS = dict(dim=3, resolution=16, levels=2, samples=4, seed=11, chunking=CHUNKING, progress=False)
VICTIM = 3


@dataclass(frozen=True)
class KillingKL(KLFamily):
    """The KL family, except that it SIGKILLs its worker inside one row of the victim.

    It dies after the row's first chunk is written, so the victim is left half-written.
    """

    flag: str = ""

    def block(self, sample, omega, *, dim, n, region):
        starts = tuple(r.start for r in region)
        if sample == VICTIM and n == 16 and starts == (8, 0, 8):
            if os.path.exists(self.flag):
                os.kill(os.getpid(), signal.SIGKILL)
        return super().block(sample, omega, dim=dim, n=n, region=region)


def chunk_files(path: Path, level: int, sample: int) -> dict[Path, int]:
    root = path / f"level{level}" / "nu" / "c" / str(sample)
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_killed_generation_resumes_to_a_complete_store(tmp_path):
    path, flag = tmp_path / "d.zarr", tmp_path / "kill"
    flag.touch()
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with pytest.raises(RuntimeError, match="rerun the same command or call"):
            generate(path, family=KillingKL(flag=str(flag)), **ARGS)

    done = completed(path, 1)
    assert not done[VICTIM]
    # Half-written: the chunk written before the kill is on disk, its marker is not.
    assert (path / "level1/nu/c" / str(VICTIM) / "1/0/0").is_file()
    assert done.any(), "earlier samples finished before the kill"
    kept = {s: chunk_files(path, 1, s) for s in np.flatnonzero(done)}

    generate(path, family="kl", **ARGS)  # the same parameters: resume

    for level, n in ((1, 16), (2, 8)):
        ds = open_level(path, level)
        assert ds.sizes["sample"] == 4 and ds["nu_complete"].values.all()
        np.testing.assert_array_equal(ds["sample"].values, np.arange(4))
        for s in range(4):
            ref = KLFamily().field(ds["omega"].values[s], dim=3, n=n)
            np.testing.assert_allclose(ds["nu"].values[s], ref, rtol=2e-7)
    for s, files in kept.items():  # finished samples were not rewritten
        assert chunk_files(path, 1, s) == files
    assert not list(path.rglob("*.partial"))


def killing_fn(flag: str, victim_mean: float):
    def fn(nu):
        if os.path.exists(flag) and abs(float(nu.mean()) - victim_mean) < 1e-6 * victim_mean:
            os.kill(os.getpid(), signal.SIGKILL)
        return np.full(tuple(s + 1 for s in nu.shape), float(nu.mean()), dtype=np.float32)

    return fn


def test_killed_map_samples_resumes(tmp_path, dask_client):
    path, flag = tmp_path / "d.zarr", tmp_path / "kill"
    generate(path, client=dask_client, **ARGS)
    means = open_level(path, 2)["nu"].mean(dim=("z", "y", "x")).values.astype(np.float64)
    flag.touch()
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with pytest.raises(RuntimeError, match="rerun the same command or call"):
            map_samples(
                path, killing_fn(str(flag), means[VICTIM]), level=2, name="u_fem", progress=False
            )
    assert not completed(path, 2, "u_fem")[VICTIM]
    done_before = completed(path, 2, "u_fem")
    field = zarr.open_array(str(path), path="level2/u_fem", mode="r")
    kept = field[np.flatnonzero(done_before)] if done_before.any() else None

    flag.unlink()
    calls = tmp_path / "calls"

    def counting(nu):
        with open(calls, "a") as f:
            f.write("x\n")
        return np.full(tuple(s + 1 for s in nu.shape), float(nu.mean()), dtype=np.float32)

    map_samples(path, counting, level=2, name="u_fem", client=dask_client, progress=False)
    assert len(calls.read_text().split()) == int((~done_before).sum())
    u = open_level(path, 2)["u_fem"].values
    assert u.shape == (4, 9, 9, 9)
    np.testing.assert_allclose(u[:, 0, 0, 0], means, rtol=1e-6)
    if kept is not None:
        np.testing.assert_array_equal(u[np.flatnonzero(done_before)], kept)
