"""LevelDataset: values, reading only the requested sample, and use from several processes."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mgtoolkit.data import Chunking, LevelDataset, generate, map_samples, open_level


def node_mean(nu):
    return np.full(tuple(s + 1 for s in nu.shape), float(nu.mean()), dtype=np.float32)


@pytest.fixture(scope="module")
def stores(tmp_path_factory, dask_client):
    root = tmp_path_factory.mktemp("stores")
    sharded = root / "sharded.zarr"  # 2D, 16 samples in shards of 2, one chunk per sample
    generate(sharded, dim=2, resolution=16, levels=2, samples=16, seed=4, client=dask_client,
             progress=False)  # fmt: skip
    chunked = root / "chunked.zarr"  # 3D, 16³ samples in 8³ chunks
    generate(chunked, dim=3, resolution=16, levels=1, samples=3, seed=4, client=dask_client,
             progress=False, chunking=Chunking(chunk_mib=4 * 8**3 / 2**20))  # fmt: skip
    return sharded, chunked


def test_items_are_float32_tensors_of_the_requested_samples(stores, dask_client, tmp_path):
    sharded, _ = stores
    nu_files = {p: p.stat().st_mtime_ns for p in (sharded / "level2" / "nu").rglob("*")}
    map_samples(sharded, node_mean, level=2, name="u_fem", client=dask_client, progress=False)
    # Adding a node field leaves ν untouched.
    assert {p: p.stat().st_mtime_ns for p in (sharded / "level2" / "nu").rglob("*")} == nu_files
    ds = LevelDataset(sharded, 2, variables=("nu", "u_fem"), indices=[5, 0, 11])
    ref = open_level(sharded, 2)
    assert len(ds) == 3
    for i, s in enumerate([5, 0, 11]):
        item = ds[i]
        assert set(item) == {"nu", "u_fem"}
        assert item["nu"].dtype == torch.float32 and item["nu"].shape == (8, 8)
        assert item["u_fem"].shape == (9, 9)
        np.testing.assert_array_equal(item["nu"].numpy(), ref["nu"].values[s])
        np.testing.assert_allclose(item["u_fem"].numpy(), ref["nu"].values[s].mean(), rtol=1e-6)
    assert ref["u_fem"].dims == ("sample", "y_node", "x_node")
    np.testing.assert_allclose(ref["x_node"].values, np.arange(9) / 8)


def corrupt(path, keep):
    """Overwrite every chunk of level 1's ν except those of sample ``keep`` with garbage."""
    for f in (path / "level1" / "nu" / "c").iterdir():
        if f.name != str(keep):
            for chunk in f.rglob("*"):
                if chunk.is_file():
                    chunk.write_bytes(b"\x13" * chunk.stat().st_size)


def corrupt_other_inner_chunks(shard_file, keep_inner, count):
    """Garble the inner chunks of a shard other than ``keep_inner``, keeping its index intact.

    The index sits at the end: ``count`` little-endian (offset, nbytes) pairs, then a crc32c.
    """
    raw = bytearray(shard_file.read_bytes())
    index = np.frombuffer(bytes(raw[-(16 * count + 4) : -4]), dtype="<u8").reshape(count, 2)
    for j, (offset, nbytes) in enumerate(index):
        if j != keep_inner:
            raw[offset : offset + nbytes] = b"\x13" * int(nbytes)
    shard_file.write_bytes(bytes(raw))


def test_an_item_reads_only_its_own_chunks(stores, tmp_path):
    import shutil

    _, chunked = stores
    copy = tmp_path / "c.zarr"
    shutil.copytree(chunked, copy)
    ds = LevelDataset(copy, 1)
    expected = ds[1]["nu"].clone()
    corrupt(copy, keep=1)
    fresh = LevelDataset(copy, 1)
    torch.testing.assert_close(fresh[1]["nu"], expected, rtol=0, atol=0)
    with pytest.raises(Exception):  # noqa: B017 — proves a read of another sample would fail
        fresh[0]


def test_an_item_reads_only_its_inner_chunk_of_a_shard(stores, tmp_path):
    import shutil

    sharded, _ = stores
    copy = tmp_path / "s.zarr"
    shutil.copytree(sharded, copy)
    expected = LevelDataset(copy, 1)[3]["nu"].clone()  # sample 3: shard 1, inner chunk 1
    corrupt(copy, keep=1)
    corrupt_other_inner_chunks(
        copy / "level1" / "nu" / "c" / "1" / "0" / "0", keep_inner=1, count=2
    )
    fresh = LevelDataset(copy, 1)
    torch.testing.assert_close(fresh[3]["nu"], expected, rtol=0, atol=0)
    with pytest.raises(Exception):  # noqa: B017 — sample 2 shares the shard and is garbled
        fresh[2]


@pytest.mark.parametrize("context", ["spawn", "fork"])
def test_two_worker_processes_read_the_same_as_one(stores, context):
    sharded, _ = stores
    ds = LevelDataset(sharded, 1, indices=range(2, 14))
    ds[0]  # the parent opened its arrays before forking: children must open their own
    loader = DataLoader(ds, batch_size=3, num_workers=2, multiprocessing_context=context)
    got = torch.cat([batch["nu"] for batch in loader])
    ref = open_level(sharded, 1)["nu"].values[2:14]
    np.testing.assert_array_equal(got.numpy(), ref)


def test_planes_read_one_slab_of_each_field(stores):
    _, chunked = stores
    whole = LevelDataset(chunked, 1)
    slab = LevelDataset(chunked, 1, planes=slice(8, 12))
    for i in range(len(whole)):
        assert slab[i]["nu"].shape == (4, 16, 16)
        assert torch.equal(slab[i]["nu"], whole[i]["nu"][8:12])
