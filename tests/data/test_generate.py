"""Generation into real zarr stores on a real LocalCluster; reading them back with xarray."""

import numpy as np
import pytest
import xarray as xr
import zarr

from mgtoolkit import __version__
from mgtoolkit.data import (
    FORMAT_VERSION,
    Chunking,
    completed,
    generate,
    import_arrays,
    open_level,
    open_store,
)
from mgtoolkit.fields import KLFamily, geometric_coarsen


def files_with_mtimes(path):
    return {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("dim", "resolution", "levels", "chunking"),
    [
        (2, 32, 3, Chunking()),  # one chunk per sample, sharded by samples
        (3, 16, 2, Chunking()),
        (3, 16, 2, Chunking(chunk_mib=4 * 8**3 / 2**20)),  # 8³ spatial chunks: chunk by chunk
    ],
)
def test_levels_hold_the_family_at_their_own_cell_centres(
    tmp_path, dask_client, dim, resolution, levels, chunking
):
    path = tmp_path / "d.zarr"
    generate(
        path,
        dim=dim,
        resolution=resolution,
        levels=levels,
        samples=5,
        seed=3,
        client=dask_client,
        progress=False,
        chunking=chunking,
    )
    tree = open_store(path)
    assert sorted(tree.children) == [f"level{lv}" for lv in range(1, levels + 1)]
    plain = xr.open_datatree(path, engine="zarr", consolidated=False)  # no mgtoolkit needed
    assert sorted(plain.children) == sorted(tree.children)
    np.testing.assert_array_equal(plain["level1"]["nu"].values, tree["level1"]["nu"].values)
    attrs = tree.attrs
    assert attrs["family"] == "kl" and attrs["seed"] == 3 and attrs["samples"] == 5
    assert attrs["format_version"] == FORMAT_VERSION
    assert attrs["mgtoolkit_version"] == __version__
    assert attrs["coarsening"] == "analytic"
    omega = KLFamily().draw(5, seed=3)
    for level in range(1, levels + 1):
        ds = tree[f"level{level}"].to_dataset()
        n = resolution >> (level - 1)
        axes = ("z", "y", "x")[3 - dim :]
        assert ds["nu"].dims == ("sample", *axes)
        assert ds["omega"].dims == ("sample", "mode")
        for ax in axes:
            np.testing.assert_allclose(ds[ax].values, (np.arange(n) + 0.5) / n)
        np.testing.assert_array_equal(ds["sample"].values, np.arange(5))
        np.testing.assert_array_equal(ds["omega"].values, omega)
        assert ds["nu_complete"].values.all()
        nu = ds["nu"].values
        assert nu.dtype == np.float32
        for s in range(5):
            ref = KLFamily().field(omega[s], dim=dim, n=n)
            np.testing.assert_allclose(nu[s], ref, rtol=2e-7)


def test_large_samples_are_chunked_spatially_and_small_ones_by_sample(tmp_path, dask_client):
    path = tmp_path / "d.zarr"
    chunking = Chunking(chunk_mib=4 * 8**3 / 2**20, shard_mib=4 * 2 * 8**3 / 2**20)
    generate(path, dim=3, resolution=32, levels=3, samples=4, seed=0, client=dask_client,
             progress=False, chunking=chunking)  # fmt: skip
    root = zarr.open_group(str(path), mode="r")
    big, small = root["level1/nu"], root["level3/nu"]
    assert big.chunks == (1, 8, 8, 8) and big.shards is None
    assert small.chunks == (1, 8, 8, 8) and small.shards is None  # 8³ fits one chunk
    mid = root["level2/nu"]
    assert mid.chunks == (1, 8, 8, 8)
    assert [type(c).__name__ for c in big.compressors] == ["BloscCodec"]
    two_d = tmp_path / "e.zarr"
    generate(two_d, dim=2, resolution=16, levels=1, samples=40, seed=0, client=dask_client,
             progress=False)  # fmt: skip
    nu = zarr.open_group(str(two_d), mode="r")["level1/nu"]
    assert nu.chunks == (1, 16, 16)
    assert nu.shards == (5, 16, 16)  # 40 samples spread over min_shards = 8 shards


def test_rerunning_a_complete_generation_rewrites_nothing(tmp_path, dask_client):
    path = tmp_path / "d.zarr"
    kwargs = dict(
        dim=2, resolution=16, levels=2, samples=4, seed=1, client=dask_client, progress=False
    )
    generate(path, **kwargs)
    before = files_with_mtimes(path)
    generate(path, **kwargs)
    assert files_with_mtimes(path) == before


def test_overwrite_replaces_a_store_with_other_parameters(tmp_path, dask_client):
    path = tmp_path / "d.zarr"
    generate(
        path, dim=2, resolution=16, levels=2, samples=4, seed=1, client=dask_client, progress=False
    )
    generate(path, dim=3, resolution=8, levels=1, samples=2, seed=5, client=dask_client,
             progress=False, overwrite=True)  # fmt: skip
    ds = open_level(path, 1)
    assert ds["nu"].shape == (2, 8, 8, 8)
    assert "level2" not in zarr.open_group(str(path), mode="r")
    assert not list(tmp_path.glob(".d.zarr.creating-*"))


def test_explicit_omega_is_stored_and_used(tmp_path, dask_client):
    corners = np.array([[3.0, -3.0, 3.0, -3.0], [-3.0, -3.0, -3.0, -3.0]])
    path = generate(tmp_path / "d.zarr", dim=2, resolution=8, levels=1, samples=2, seed=None,
                    omega=corners, client=dask_client, progress=False)  # fmt: skip
    ds = open_level(path, 1)
    np.testing.assert_array_equal(ds["omega"].values, corners)
    np.testing.assert_allclose(
        ds["nu"].values[0], KLFamily().field(corners[0], dim=2, n=8), rtol=2e-7
    )
    assert open_store(path).attrs["omega_source"] == "given"


@pytest.mark.parametrize("source", ["numpy", "zarr", "xarray"])
def test_imported_arrays_coarsen_by_geometric_mean_of_children(tmp_path, dask_client, source):
    rng = np.random.default_rng(2)
    data = np.exp(rng.normal(size=(3, 16, 16, 16))).astype(np.float32)
    if source == "numpy":
        data_in = data
    else:
        arr = zarr.open_group(str(tmp_path / "in.zarr"), mode="w").create_array(
            "perm",
            shape=data.shape,
            chunks=(1, 8, 8, 8),
            dtype="f4",
            dimension_names=("sample", "z", "y", "x"),
        )
        arr[:] = data
        # zarr: read by the workers block by block; xarray: a lazily opened variable
        lazy = xr.open_zarr(tmp_path / "in.zarr", chunks=None, consolidated=False)["perm"]
        data_in = arr if source == "zarr" else lazy
    path = import_arrays(tmp_path / "d.zarr", data_in, levels=3, client=dask_client, progress=False,
                         chunking=Chunking(chunk_mib=4 * 8**3 / 2**20))  # fmt: skip
    tree = open_store(path)
    assert tree.attrs["family"] == "array" and tree.attrs["coarsening"] == "geometric-mean"
    assert "omega" not in tree["level1"]
    np.testing.assert_array_equal(tree["level1"]["nu"].values, data)
    for level in (1, 2):
        fine = tree[f"level{level}"]["nu"].values
        coarse = tree[f"level{level + 1}"]["nu"].values
        np.testing.assert_allclose(coarse, geometric_coarsen(fine, 2, batched=True), rtol=1e-6)
    assert all(completed(path, lv).all() for lv in (1, 2, 3))
