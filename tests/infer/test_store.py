"""Tiled prediction from a zarr store to a zarr store, tiles in parallel on a real LocalCluster."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from nets import make_net

from mgtoolkit.data import Chunking, completed, generate
from mgtoolkit.infer import predict_store


@pytest.fixture(scope="module")
def store(tmp_path_factory, dask_client):
    path = tmp_path_factory.mktemp("infer") / "data.zarr"
    # 0.125 MiB chunks: a 64³ float32 sample (1 MiB) is split into 2³ spatial chunks of 32³,
    # as a 512³ sample is split into 128³ chunks by the default chunking.
    generate(
        path,
        dim=3,
        resolution=64,
        levels=2,
        samples=2,
        seed=3,
        client=dask_client,
        progress=False,
        chunking=Chunking(chunk_mib=0.125),
    )
    return path


def _untiled(net, nu):
    with torch.no_grad():
        return net(torch.as_tensor(nu)[None])[0].numpy()


def test_store_tiles_equal_untiled(store, dask_client):
    net = make_net(dim=3, depth=2, convs_per_block=1, dtype=torch.float32)
    group = zarr.open_group(str(store), mode="r")["level1"]
    assert group["nu"].chunks[1:] == (32,) * 3  # spatially chunked: the tiled path
    predict_store(store, net, level=1, tile=(40, 24, 65), client=dask_client, progress=False)
    assert completed(store, 1, "u_pred").all()
    group = zarr.open_group(str(store), mode="r")["level1"]
    for s in range(2):
        ref = _untiled(net, np.asarray(group["nu"][s]))
        np.testing.assert_allclose(group["u_pred"][s], ref, rtol=0, atol=2e-6)

    # Level 2 has one chunk per sample: samples go through map_samples, tiled in memory.
    predict_store(store, net, level=2, tile=20, client=dask_client, progress=False)
    group = zarr.open_group(str(store), mode="r")["level2"]
    for s in range(2):
        ref = _untiled(net, np.asarray(group["nu"][s]))
        np.testing.assert_allclose(group["u_pred"][s], ref, rtol=0, atol=2e-6)


def test_cascaded_network_predicts_each_sample_whole(store, dask_client):
    """Spatially chunked samples, but a cascaded network needs whole fields: each sample is
    read whole and predicted in one task, by predict_store and by predict alike."""
    from mgtoolkit.infer import predict
    from mgtoolkit.infer.stream import StreamedUNet

    net = make_net(dim=3, depth=2, convs_per_block=1, dtype=torch.float32, seed=7)
    net.cascade()
    torch.nn.init.normal_(net.head.weight, std=0.1)  # a correction that acts
    predict_store(store, net, level=1, name="u_casc", tile=20, client=dask_client, progress=False)
    predict(store, net, level=1, name="u_casc_whole", client=dask_client, progress=False)
    group = zarr.open_group(str(store), mode="r")["level1"]
    assert group["u_casc_complete"][:].all()
    for s in range(2):
        ref = _untiled(net, np.asarray(group["nu"][s]))
        np.testing.assert_allclose(group["u_casc"][s], ref, rtol=0, atol=2e-6)
        np.testing.assert_allclose(group["u_casc_whole"][s], ref, rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="cannot be streamed plane by plane"):
        StreamedUNet(net)


def test_store_resumes_only_missing_samples(store, dask_client):
    net = make_net(dim=3, depth=2, convs_per_block=1, dtype=torch.float32, seed=5)
    predict_store(
        store, net, level=1, name="u_resume", tile=(40, 24, 65), client=dask_client, progress=False
    )
    arr = zarr.open_group(str(store), mode="r+")["level1"]["u_resume"]
    done = zarr.open_group(str(store), mode="r+")["level1"]["u_resume_complete"]
    arr[1] = np.nan  # as if sample 1 had been interrupted
    done[1] = False
    kept = np.asarray(arr[0])
    other = make_net(dim=3, depth=2, convs_per_block=1, dtype=torch.float32, seed=6)
    predict_store(
        store,
        other,
        level=1,
        name="u_resume",
        tile=(40, 24, 65),
        client=dask_client,
        progress=False,
    )
    arr = zarr.open_group(str(store), mode="r")["level1"]["u_resume"]
    np.testing.assert_array_equal(arr[0], kept)  # untouched: it was complete
    nu1 = np.asarray(zarr.open_group(str(store), mode="r")["level1"]["nu"][1])
    np.testing.assert_allclose(arr[1], _untiled(other, nu1), atol=2e-6)


def test_store_bad_input(store, dask_client):
    with pytest.raises(ValueError, match="2D but"):
        predict_store(store, make_net(dim=2, dtype=torch.float32), client=dask_client)
    with pytest.raises(ValueError, match="level must be"):
        predict_store(store, make_net(dtype=torch.float32), level=3, client=dask_client)
    mirrored = make_net(dtype=torch.float32)
    mirrored.mirror_average = True
    with pytest.raises(ValueError, match="mirror averaging is not available"):
        predict_store(store, mirrored, client=dask_client)
