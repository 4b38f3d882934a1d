"""Shared fixtures: a real dask LocalCluster with worker processes."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def dask_client():
    """A real LocalCluster (2 single-threaded worker processes) and its Client."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            memory_limit="4GiB",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
