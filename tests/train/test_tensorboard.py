"""TensorBoard export: read back with TensorBoard's own reader, equal to events.jsonl."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mgtoolkit.train import export_tensorboard, read_events
from mgtoolkit.train.tensorboard import tensorboard_scalars


@pytest.fixture(scope="module")
def run_dir(store2d_fem, tmp_path_factory):
    """A real run: V cycle over 2 levels, validation against u_fem after every epoch."""
    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.train import CycleConfig, DataConfig, OptimConfig, TrainConfig, train

    path = tmp_path_factory.mktemp("tb") / "v"
    config = TrainConfig(
        data=DataConfig(store=str(store2d_fem), train_samples=8, val_samples=2),
        model=UNetConfig(dim=2, depth=1, base_filters=2, convs_per_block=1),
        cycle=CycleConfig(name="V", levels=2, epochs=1, patience=1, max_epochs=2),
        optim=OptimConfig(batch_size=4),
        device="cpu",
    )
    train(config, path, progress=False)
    return path


def scalars(folder):
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def test_export_read_back_by_tensorboard_equals_the_events(run_dir):
    path = export_tensorboard(run_dir)
    assert path.parent == run_dir / "tensorboard" and "tfevents" in path.name
    got = scalars(path.parent)
    events = read_events(run_dir / "events.jsonl")
    # the reference, from the raw events: global batch = batch_end events so far (no resume)
    want: dict[str, list[tuple[int, float, float]]] = {}
    batches, cost = 0, 0.0
    for ev in events:
        if ev["type"] == "epoch_start":
            want.setdefault("learning_rate", []).append((batches + 1, ev["lr"], ev["time"]))
        elif ev["type"] == "batch_end":
            batches += 1
            tag = f"loss/batch/level{ev['level']}"
            want.setdefault(tag, []).append((batches, ev["loss"], ev["time"]))
        elif ev["type"] == "epoch_end":
            cost += 4.0 ** -(ev["level"] - 1)
            tag = f"loss/epoch/level{ev['level']}"
            want.setdefault(tag, []).append((batches, ev["loss"], ev["time"]))
            want.setdefault("cost/finest_level_epochs", []).append((batches, cost, ev["time"]))
        elif ev["type"] == "validation":
            for key in ("val_energy", "val_energy_gap", "val_rel_l2", "val_max_abs"):
                tag = f"validation/{key[4:]}"
                want.setdefault(tag, []).append((batches, ev[key], ev["time"]))
    assert {"loss/batch/level1", "loss/batch/level2", "loss/epoch/level2"} <= set(want)
    assert set(got) == set(want)
    for tag, rows in want.items():
        steps, values, times = zip(*rows, strict=True)
        assert [s.step for s in got[tag]] == list(steps), tag
        np.testing.assert_array_equal(
            [s.value for s in got[tag]], np.float32(values), err_msg=tag
        )  # simple_value is a float32
        assert [s.wall_time for s in got[tag]] == list(times), tag
    # exporting again replaces the file: still one event file, the same scalars
    assert export_tensorboard(run_dir) == path
    assert len(list(path.parent.iterdir())) == 1
    assert scalars(path.parent)["loss/batch/level1"] == got["loss/batch/level1"]


def test_a_resumed_run_repeats_steps_instead_of_shifting_them():
    """After a crash the batches since the last checkpoint run again: same global steps."""
    start = {"type": "run_start", "dim": 2, "time": 1.0}
    epoch = {"type": "epoch_start", "step": 0, "level": 1, "epoch": 0, "lr": 0.1, "batches": 3}

    def batch(b, loss):
        return {"type": "batch_end", "step": 0, "level": 1, "epoch": 0, "batch": b, "loss": loss}

    end = {"type": "epoch_end", "step": 0, "level": 1, "epoch": 0, "loss": 0.5}
    events = [start, epoch, batch(0, 3.0), batch(1, 2.0), start, batch(1, 2.5), batch(2, 1.0), end]
    rows = [(tag, step, v) for tag, step, v, _ in tensorboard_scalars(events)]
    assert rows == [
        ("learning_rate", 1, 0.1),
        ("loss/batch/level1", 1, 3.0),
        ("loss/batch/level1", 2, 2.0),
        ("loss/batch/level1", 2, 2.5),
        ("loss/batch/level1", 3, 1.0),
        ("loss/epoch/level1", 3, 0.5),
        ("cost/finest_level_epochs", 3, 1.0),
    ]


def test_no_run_or_no_training_yet_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"has no events\.jsonl: pass a run directory"):
        export_tensorboard(tmp_path)
    (tmp_path / "events.jsonl").write_text(json.dumps({"type": "run_start", "time": 1.0}) + "\n")
    with pytest.raises(ValueError, match=r"no training events yet .*export again once"):
        export_tensorboard(tmp_path)
    assert not (tmp_path / "tensorboard").exists()
