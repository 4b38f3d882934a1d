"""Real dataset stores and a real training run for the widget tests (small sizes)."""

from __future__ import annotations

import numpy as np
import pytest


def linear_guess(nu: np.ndarray) -> np.ndarray:
    """A stand-in prediction u = 1 - x on nodes (the exact solution for constant ν)."""
    n, dim = nu.shape[0], nu.ndim
    x = np.arange(n + 1) / n
    return np.broadcast_to(1.0 - x, (n + 1,) * dim).astype(np.float32)


@pytest.fixture(scope="session")
def store2d(tmp_path_factory, dask_client):
    """2D store: 16² cells, 2 levels, 6 samples; u_fem and u_pred (= 1 - x) at level 1."""
    from mgtoolkit.data import FemSolveFn, generate, map_samples

    path = tmp_path_factory.mktemp("widgets") / "s2.zarr"
    generate(
        path, dim=2, resolution=16, levels=2, samples=6, seed=1, client=dask_client, progress=False
    )
    map_samples(path, FemSolveFn(), level=1, name="u_fem", client=dask_client, progress=False)
    map_samples(path, linear_guess, level=1, name="u_pred", client=dask_client, progress=False)
    return path


@pytest.fixture(scope="session")
def store3d(tmp_path_factory, dask_client):
    """3D store: 8³ cells, 2 levels, 2 samples; u_fem at level 1 only, no u_pred."""
    from mgtoolkit.data import FemSolveFn, generate, map_samples

    path = tmp_path_factory.mktemp("widgets") / "s3.zarr"
    generate(
        path, dim=3, resolution=8, levels=2, samples=2, seed=2, client=dask_client, progress=False
    )
    map_samples(path, FemSolveFn(), level=1, name="u_fem", client=dask_client, progress=False)
    return path
