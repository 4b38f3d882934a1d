"""The run directory: checkpoints that round-trip exactly and never execute code from a file."""

from __future__ import annotations

import os

import pytest
import torch

from mgtoolkit.nn import UNet, UNetConfig
from mgtoolkit.rundir import (
    Checkpoint,
    CheckpointError,
    RunDir,
    TrainState,
    load_model,
    read_checkpoint,
    request_stop,
    save_checkpoint,
)


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _checkpoint() -> Checkpoint:
    torch.manual_seed(0)
    cfg = UNetConfig(dim=2, depth=2, base_filters=4)
    net = UNet(cfg)
    state = TrainState(step=2, epoch=3, batch=1, step_losses=[0.5, 0.25], reason=None)
    state.level_wall_s = {1: 1.5, 3: 0.25}
    state.validations = [{"val_rel_l2": 0.1, "_at": [2, 3]}]
    return Checkpoint(
        config={"model": cfg.to_dict()}, growth=0, model=net.state_dict(), state=state
    )


def test_a_checkpoint_round_trips_state_and_weights(tmp_path):
    ckpt = _checkpoint()
    run = RunDir(tmp_path / "run")
    save_checkpoint(run.latest, ckpt)
    back = read_checkpoint(run.path)  # a run directory reads its latest checkpoint
    assert back.state == ckpt.state
    assert back.state.level_wall_s == {1: 1.5, 3: 0.25}  # integer keys survive
    for k, v in ckpt.model.items():
        assert torch.equal(back.model[k], v)
    net = load_model(run.path)
    assert not net.training
    x = torch.rand(1, 16, 16) + 0.5
    ref = ckpt.build_model().eval()
    assert torch.equal(net(x), ref(x))


def test_a_crafted_checkpoint_does_not_execute(tmp_path):
    marker = tmp_path / "pwned"
    body = {"format": 1, "config": {}, "growth": 0, "model": {}, "state": _Payload(marker)}
    path = tmp_path / "evil.pt"
    torch.save(body, path)  # a pickle holding an object whose loading runs a command
    with pytest.raises(CheckpointError, match="never unpickled"):
        load_model(path)
    with pytest.raises(CheckpointError, match=r"evil\.pt"):
        read_checkpoint(path)
    assert not marker.exists()  # the payload did not run
    # The payload is live: loading the same file the unsafe way does run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_files_that_are_not_checkpoints_are_refused_by_name(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"notes\.pt"):
        load_model(text)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_model(tmp_path / "missing-run")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not an mgtoolkit training checkpoint"):
        read_checkpoint(other)


def test_request_stop_refuses_a_missing_directory_unless_asked_to_create_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run directory"):
        request_stop(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()
    flag = request_stop(tmp_path / "starting", create=True)
    assert flag == RunDir(tmp_path / "starting").stop and flag.exists()
