"""``mgtoolkit predict-tiled`` and ``mgtoolkit plan`` through their argument parsers."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
import zarr
from nets import make_net

from mgtoolkit.cli.infer import register
from mgtoolkit.data import generate
from mgtoolkit.rundir import Checkpoint, save_checkpoint


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mgtoolkit")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.run(args)


def test_predict_tiled_writes_exact_u_pred(tmp_path, dask_client, capsys):
    store = tmp_path / "data.zarr"
    generate(
        store, dim=3, resolution=32, levels=1, samples=2, seed=0, client=dask_client, progress=False
    )
    net = make_net(dim=3, depth=2, convs_per_block=1, dtype=torch.float32)
    ckpt = tmp_path / "model.pt"
    config = {"model": net.config.to_dict()}
    save_checkpoint(ckpt, Checkpoint(config=config, growth=0, model=net.state_dict()))
    code = _run(
        [
            "predict-tiled",
            str(store),
            str(ckpt),
            "--tile",
            "12,33,20",
            "--scheduler",
            dask_client.scheduler.address,
            "--no-progress",
        ]
    )
    assert code == 0
    assert "plan: predict 3D 32^3" in capsys.readouterr().out
    group = zarr.open_group(str(store), mode="r")["level1"]
    with torch.no_grad():
        ref = net(torch.as_tensor(np.asarray(group["nu"][:])))
    np.testing.assert_allclose(group["u_pred"][:], ref.numpy(), atol=2e-6)
    assert group["u_pred_complete"][:].all()


def test_predict_tiled_at_a_coarser_resolution_on_spatial_chunks(tmp_path, dask_client, capsys):
    """``--predict-at``: each sample read whole from its spatial chunks, predicted coarse."""
    from mgtoolkit.data.store import Chunking

    store = tmp_path / "data.zarr"
    generate(
        store,
        dim=3,
        resolution=32,
        levels=1,
        samples=2,
        seed=0,
        client=dask_client,
        progress=False,
        chunking=Chunking(chunk_mib=0.05),  # 16³ chunks: the tiled path, unless --predict-at
    )
    group = zarr.open_group(str(store), mode="r")["level1"]
    assert group["nu"].chunks[1] < 32
    net = make_net(dim=3, depth=2, convs_per_block=1, dtype=torch.float32)
    ckpt = tmp_path / "model.pt"
    save_checkpoint(
        ckpt, Checkpoint(config={"model": net.config.to_dict()}, growth=0, model=net.state_dict())
    )
    argv = ["predict-tiled", str(store), str(ckpt), "--predict-at", "16", "--no-progress"]
    code = _run([*argv, "--scheduler", dask_client.scheduler.address])
    assert code == 0
    out = capsys.readouterr().out
    assert "plan: coarsen 3D 32^3 to predict 3D 16^3" in out
    net.predict_at = 16
    with torch.no_grad():
        ref = net(torch.as_tensor(np.asarray(group["nu"][:])))
    assert ref.shape == (2, 33, 33, 33)
    np.testing.assert_allclose(group["u_pred"][:], ref.numpy(), atol=2e-6)
    assert group["u_pred_complete"][:].all()


def test_plan_fits_and_refuses(capsys):
    base = [
        "plan",
        "--dim",
        "3",
        "--depth",
        "2",
        "--base-filters",
        "8",
        "--resolution",
        "64",
        "--batch",
        "8",
        "--phases",
        "train",
    ]
    assert _run([*base, "--memory", "64"]) == 0
    assert "fits" in capsys.readouterr().out
    assert _run([*base, "--memory", "0.6"]) == 1
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "would fit with" in out


def test_plan_layouts_per_level(capsys):
    base = ["plan", "--dim", "3", "--depth", "2", "--base-filters", "8", "--resolution", "64"]
    base += ["--ranks", "2", "--levels", "3", "--phases", "train"]
    # a batch of 2 over 2 ranks: whole fields, one per rank
    assert _run([*base, "--batch", "2", "--memory", "64"]) == 0
    out = capsys.readouterr().out
    assert "level 3 (16^3): 1 rank(s) per field" in out and "spatial = 1" in out
    # a batch of 1: both ranks on the field; 16³ still splits into 2 slabs of 8 planes
    assert _run([*base, "--batch", "1", "--memory", "64"]) == 0
    out = capsys.readouterr().out
    assert "level 1 (64^3): 2 rank(s) per field" in out and "spatial = 2" in out
    # a budget below the runtime fits nothing, and says so
    assert _run([*base, "--batch", "1", "--memory", "0.3"]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_predict_tiled_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset"):
        _run(["predict-tiled", str(tmp_path / "missing.zarr"), str(tmp_path)])


def test_predict_tiled_refuses_a_cascaded_network_and_names_predict(tmp_path, dask_client):
    store = tmp_path / "data.zarr"
    generate(
        store, dim=2, resolution=16, levels=1, samples=1, seed=0, client=dask_client, progress=False
    )
    net = make_net(dim=2, depth=1, convs_per_block=1, dtype=torch.float32)
    net.cascade()
    ckpt = tmp_path / "model.pt"
    config = {"model": net.config.to_dict()}
    save_checkpoint(ckpt, Checkpoint(config=config, growth=0, model=net.state_dict(), cascades=1))
    with pytest.raises(ValueError, match=r"cascaded network .* use `mgtoolkit predict`"):
        _run(["predict-tiled", str(store), str(ckpt), "--no-progress"])
    assert "u_pred" not in zarr.open_group(str(store), mode="r")["level1"]
