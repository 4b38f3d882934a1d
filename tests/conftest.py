"""Shared fixtures: a real dask LocalCluster with worker processes, small real 2D stores."""

from __future__ import annotations

import shutil

import pytest
import torch


@pytest.fixture(scope="session")
def dask_client():
    """A real LocalCluster (2 single-threaded worker processes) and its Client."""
    from mgtoolkit.cluster import client_context

    with client_context(workers=2, memory_limit="4GiB") as client:
        yield client


@pytest.fixture
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and on shared cores idle-spinning OpenMP
    threads made these tests ~8× slower; each test runs single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def store2d(tmp_path_factory, dask_client):
    """2D KL store: 16² finest, 3 levels, 24 samples (ν only)."""
    from mgtoolkit.data import generate

    path = tmp_path_factory.mktemp("stores") / "kl16.zarr"
    generate(
        path,
        dim=2,
        resolution=16,
        levels=3,
        samples=24,
        seed=3,
        client=dask_client,
        progress=False,
    )
    return path


@pytest.fixture(scope="session")
def store2d_fem(tmp_path_factory, store2d, dask_client):
    """The same samples with the FEM reference u_fem at level 1."""
    from mgtoolkit.data import FemSolveFn, map_samples

    path = tmp_path_factory.mktemp("stores") / "kl16fem.zarr"
    shutil.copytree(store2d, path)
    map_samples(path, FemSolveFn(), level=1, name="u_fem", client=dask_client, progress=False)
    return path
