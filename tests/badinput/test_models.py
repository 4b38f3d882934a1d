"""Checkpoints that are not, or do not fit: refused before any cluster starts or anything is
written, and a crafted file never runs."""

from __future__ import annotations

import pickle

import pytest
import zarr
from badcases import expect_api_error, expect_error

from mgtoolkit.rundir import CheckpointError, load_model


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))  # would create the file when unpickled


@pytest.fixture
def crafted(tmp_path):
    """A pickle whose loading would create ``pwned`` (the test proves it did not run)."""
    import torch

    path = tmp_path / "latest.pt"
    torch.save({"format": "x", "evil": _Payload(str(tmp_path / "pwned"))}, path)
    return path


@pytest.fixture
def rundir_without_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    return tmp_path / "run"


BAD_MODELS = ["text", "random", "empty", "crafted", "rundir", "missing", "store"]
MODEL_MATCH = {
    "text": r"notes.txt",
    "random": r"random.pt",
    "empty": r"empty.pt",
    "crafted": r"latest.pt is not an mgtoolkit checkpoint",
    "rundir": r"no checkpoint at",
    "missing": r"no checkpoint at",
    "store": r"(no checkpoint|not an mgtoolkit|cannot read)",
}


def _model(which, files, crafted, rundir_without_checkpoint, tmp_path, store2d):
    return {
        "crafted": crafted,
        "rundir": rundir_without_checkpoint,
        "missing": tmp_path / "nope.pt",
        "store": store2d / "zarr.json",
    }.get(which) or files[which]


@pytest.mark.parametrize("which", BAD_MODELS)
@pytest.mark.parametrize("command", ["predict", "predict-tiled", "plan"])
def test_bad_model_files(
    capsys, tmp_path, files, crafted, rundir_without_checkpoint, store2d, copy_store, which,
    command,
):  # fmt: skip
    store = copy_store(store2d)
    model = _model(which, files, crafted, rundir_without_checkpoint, tmp_path, store2d)
    argv = {
        "predict": ["predict", store, model],
        "predict-tiled": ["predict-tiled", store, model],
        "plan": ["plan", "--model", model, "--resolution", "16"],
    }[command]
    expect_error(capsys, argv, MODEL_MATCH[which])  # [T] UnpicklingError
    assert not (tmp_path / "pwned").exists()
    assert "u_pred" not in zarr.open_group(str(store))["level1"]


@pytest.mark.parametrize("command", ["predict", "predict-tiled"])
@pytest.mark.parametrize("case", ["3d_on_2d", "2d_on_3d"])
def test_mismatched_model_refused_before_anything(
    capsys, files, store2d, store3d, copy_store, command, case
):  # [T] after cluster start, empty u_pred left
    store = copy_store(store2d if case == "3d_on_2d" else store3d)
    model = files["ckpt3d" if case == "3d_on_2d" else "ckpt2d"]
    line = expect_error(capsys, [command, store, model], r"is [23]D but .* holds [23]D fields")
    assert "nothing was started or written" in line
    assert "u_pred" not in zarr.open_group(str(store))["level1"]


def test_load_model_api(tmp_path, files, crafted):  # [T] raw UnpicklingError
    for source, match in [
        (files["text"], "notes.txt"),
        (files["empty"], "empty.pt"),
        (crafted, "not an mgtoolkit checkpoint"),
        (tmp_path / "none.pt", "no checkpoint"),
    ]:
        expect_api_error(lambda s=source: load_model(s), match, types=(CheckpointError,))
    assert not (tmp_path / "pwned").exists()


def test_predict_metrics_folder_missing(capsys, tmp_path, files, store2d, copy_store):  # [C~]
    store = copy_store(store2d)
    expect_error(
        capsys,
        ["predict", store, files["ckpt2d"], "--metrics", tmp_path / "no" / "dir" / "m.csv"],
        "its folder does not exist",
    )
    assert "u_pred" not in zarr.open_group(str(store))["level1"]


def test_predict_bad_store_and_level(capsys, tmp_path, files, store2d):
    expect_error(capsys, ["predict", tmp_path / "x.zarr", files["ckpt2d"]], "no dataset")
    expect_error(capsys, ["predict", store2d, files["ckpt2d"], "--level", "5"], "--level")
    expect_error(capsys, ["predict", store2d, files["ckpt2d"], "--name", "nu"], "cannot name")


@pytest.mark.parametrize("command", ["predict", "predict-tiled"])
def test_predict_at_bad_values(capsys, files, store2d, copy_store, command):
    store = copy_store(store2d)  # 16², 8², 4²
    model = files["ckpt2d"]
    expect_error(capsys, [command, store, model, "--predict-at", "12"], "power of two")
    expect_error(capsys, [command, store, model, "--predict-at", "x"], "cells per side")
    expect_error(
        capsys,
        [command, store, model, "--level", "2", "--predict-at", "16"],
        r"predicts at 16 cells per side .* the field has 8",
    )
    assert "u_pred" not in zarr.open_group(str(store))["level2"]


def test_pickle_not_used_for_checkpoints(tmp_path):
    path = tmp_path / "p.pt"
    path.write_bytes(pickle.dumps(_Payload(str(tmp_path / "pwned"))))
    expect_api_error(lambda: load_model(path), "p.pt", types=(CheckpointError,))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("case", ["3d_on_2d", "2d_on_3d"])
def test_predict_api_mismatch_writes_nothing(files, store2d, store3d, copy_store, case):
    from mgtoolkit.infer import predict

    store = copy_store(store2d if case == "3d_on_2d" else store3d)
    model = files["ckpt3d" if case == "3d_on_2d" else "ckpt2d"]
    expect_api_error(lambda: predict(store, model, progress=False), r"is [23]D but .* holds")
    assert "u_pred" not in zarr.open_group(str(store))["level1"]


@pytest.mark.parametrize("latest", ["crafted", "text", "empty"])
def test_train_resume_from_a_bad_latest_checkpoint(
    capsys, tmp_path, crafted, files, store2d_fem, latest
):
    """Training resume read ``latest.pt`` with full unpickling: a crafted one ran its payload."""
    import shutil

    import torch

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    source = {"crafted": crafted, "text": files["text"], "empty": files["empty"]}[latest]
    shutil.copyfile(source, run / "checkpoints" / "latest.pt")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'[data]\nstore = "{store2d_fem}"\nval_samples = 4\n[model]\ndim = 2\ndepth = 1\n'
        "base_filters = 2\n[cycle]\nname = 'base'\nlevels = 1\nepochs = 1\n"
    )
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    match = {
        "crafted": r"latest.pt is not an mgtoolkit checkpoint",
        "text": r"cannot read checkpoint .*latest.pt",
        "empty": r"cannot read checkpoint .*latest.pt",
    }[latest]
    expect_error(capsys, ["train", cfg, "--run-dir", run, "--no-progress"], match)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing written
    assert not (tmp_path / "pwned").exists()  # the payload did not run ...
    if latest == "crafted":  # ... and it is live: the unsafe load does run it
        torch.load(run / "checkpoints" / "latest.pt", weights_only=False)
        assert (tmp_path / "pwned").exists()
