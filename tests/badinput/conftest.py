"""Fixtures of the bad-input suite (helpers live in ``badcases.py``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    yield


@pytest.fixture(scope="session")
def scheduler(dask_client) -> str:
    return dask_client.scheduler.address


def _checkpoint(path: Path, dim: int) -> Path:
    from mgtoolkit.nn import UNet, UNetConfig
    from mgtoolkit.rundir import Checkpoint, save_checkpoint

    torch.manual_seed(0)
    net = UNet(UNetConfig(dim=dim, depth=1, base_filters=2, convs_per_block=1))
    save_checkpoint(
        path, Checkpoint(config={"model": net.config.to_dict()}, growth=0, model=net.state_dict())
    )
    return path


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> dict[str, Path]:
    """Small real files: checkpoints (2D, 3D), a text file, random bytes, an empty file."""
    d = tmp_path_factory.mktemp("files")
    out = {"ckpt2d": _checkpoint(d / "m2.pt", 2), "ckpt3d": _checkpoint(d / "m3.pt", 3)}
    out["text"] = d / "notes.txt"
    out["text"].write_text("this is not a checkpoint\n")
    out["random"] = d / "random.pt"
    out["random"].write_bytes(bytes(range(256)) * 8)
    out["empty"] = d / "empty.pt"
    out["empty"].write_bytes(b"")
    out["notzarr"] = d / "plain_dir"
    out["notzarr"].mkdir()
    (out["notzarr"] / "x.txt").write_text("x")
    return out


@pytest.fixture(scope="session")
def store3d(tmp_path_factory, dask_client) -> Path:
    """3D KL store: 8³, one level, 2 samples."""
    from mgtoolkit.data import generate

    path = tmp_path_factory.mktemp("stores3d") / "kl8.zarr"
    generate(
        path, dim=3, resolution=8, levels=1, samples=2, seed=1, client=dask_client, progress=False
    )
    return path


@pytest.fixture
def copy_store(tmp_path):
    """``copy_store(src)``: a private copy of a session store, to damage."""

    def copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return copy
