"""A small real 2D dataset store shared by the training tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def store2d(tmp_path_factory, dask_client):
    """2D KL store: 16² finest, 3 levels, 24 samples (ν only)."""
    from mgtoolkit.data import generate

    path = tmp_path_factory.mktemp("stores") / "kl16.zarr"
    generate(
        path, dim=2, resolution=16, levels=3, samples=24, seed=3, client=dask_client, progress=False
    )
    return path
