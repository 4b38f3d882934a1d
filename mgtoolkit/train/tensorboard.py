"""Export a run's ``events.jsonl`` to a TensorBoard event file (no TensorBoard needed to write).

An event file is a sequence of TFRecords (length, masked CRC-32C of the length, data, masked
CRC-32C of the data), each holding one ``tensorflow.Event`` protobuf; the few fields used here
are encoded by hand:

- ``Event``: ``wall_time`` (1, double), ``step`` (2, int64), ``file_version`` (3, string),
  ``summary`` (5, ``Summary``);
- ``Summary``: repeated ``value`` (1, ``Summary.Value``);
- ``Summary.Value``: ``tag`` (1, string), ``simple_value`` (2, float32).

Scalars written (x axis: the global batch, counted over the whole run; wall time: the event's):

- ``loss/batch/level<ℓ>``: each batch's loss (global mean energy J) on level ℓ;
- ``loss/epoch/level<ℓ>``: each epoch's mean loss on level ℓ, at the epoch's last batch;
- ``validation/<metric>``: finest-level validation (``energy``, ``energy_gap``, ``rel_l2``,
  ``max_abs``), at the batch after which it ran;
- ``learning_rate``: the learning rate of each epoch, at the epoch's first batch;
- ``cost/finest_level_epochs``: the training cost so far in finest-level epochs
  (:func:`mgtoolkit.cycles.epoch_cost`), at each epoch's end — plot it against the losses to
  read them against cost rather than batches.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from mgtoolkit.cycles import epoch_cost
from mgtoolkit.rundir import RunDir
from mgtoolkit.train.events import read_events

__all__ = ["export_tensorboard", "tensorboard_scalars"]

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):  # CRC-32C (Castagnoli), reflected polynomial 0x82F63B78
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def _masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    # TFRecord stores the CRC rotated and offset ("masked"), as TensorFlow's crc32c::Mask does.
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", _masked_crc32c(length))
        + data
        + struct.pack("<I", _masked_crc32c(data))
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # int64 as protobuf writes it (two's complement for negatives)
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, *, file_version: str | None = None, summary=None) -> bytes:
    """One ``Event``: wall time (s), step and either a file version or ``(tag, value)`` pairs."""
    out = bytes([1 << 3 | 1]) + struct.pack("<d", wall_time) + _varint(2 << 3) + _varint(step)
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if summary:
        values = b"".join(
            _bytes_field(
                1, _bytes_field(1, tag.encode()) + bytes([2 << 3 | 5]) + struct.pack("<f", v)
            )
            for tag, v in summary
        )
        out += _bytes_field(5, values)
    return out


def tensorboard_scalars(events: list[dict]) -> list[tuple[str, int, float, float]]:
    """The scalars exported for ``events`` (as read by :func:`~mgtoolkit.train.read_events`).

    Returns
    -------
    list of (tag, step, value, wall_time)
        In the order of the events; ``step`` is the global batch (see the module's text),
        ``wall_time`` the event's unix time in seconds.

    A resumed run repeats the batches after its last checkpoint: they get the same steps as
    the first time (each epoch's first global batch is fixed by its first ``epoch_start``).
    """
    dim = 2
    done = 0  # batches of all finished epochs
    first: dict[tuple[int, int], int] = {}  # (step, epoch) → global batches before it
    size: dict[tuple[int, int], int] = {}
    cost = 0.0
    out = []
    for ev in events:
        kind, t = ev.get("type"), float(ev.get("time", 0.0))
        key = (ev.get("step"), ev.get("epoch"))
        if kind == "run_start":
            dim = int(ev.get("dim", dim))
        elif kind == "epoch_start":
            base = first.setdefault(key, done)
            size[key] = int(ev["batches"])
            out.append(("learning_rate", base + 1, float(ev["lr"]), t))
        elif kind == "batch_end":
            step = first.get(key, done) + int(ev["batch"]) + 1
            out.append((f"loss/batch/level{ev['level']}", step, float(ev["loss"]), t))
        elif kind == "epoch_end":
            done = first.get(key, done) + size.get(key, 0)
            cost += epoch_cost(int(ev["level"]), dim)
            out.append((f"loss/epoch/level{ev['level']}", done, float(ev["loss"]), t))
            out.append(("cost/finest_level_epochs", done, cost, t))
        elif kind == "validation":
            for name, value in ev.items():
                if name.startswith("val_") and value is not None:
                    out.append((f"validation/{name[4:]}", done, float(value), t))
    return out


def export_tensorboard(run_dir: str | os.PathLike, *, out: str | os.PathLike | None = None) -> Path:
    """Write the run's events as a TensorBoard event file; returns the file.

    Parameters
    ----------
    run_dir : path-like
        A run directory (its ``events.jsonl``; the run may still be training).
    out : path-like, optional
        Folder of the event file (created); default ``<run_dir>/tensorboard``. Exporting
        again replaces the file (its name comes from the run's first event), so
        ``tensorboard --logdir`` over several such folders shows each run once.

    Raises
    ------
    FileNotFoundError
        No ``events.jsonl`` in ``run_dir``.
    ValueError
        No batch has finished yet (nothing to plot).
    """
    run = RunDir(run_dir)
    if not run.events.is_file():
        raise FileNotFoundError(
            f"{run.path} has no events.jsonl: pass a run directory written by `mgtoolkit train` "
            "(or the composer)"
        )
    events = read_events(run.events)
    scalars = tensorboard_scalars(events)
    if not scalars:
        raise ValueError(
            f"{run.events} holds no training events yet (no batch has finished); export again "
            "once the run has trained"
        )
    folder = Path(out) if out is not None else run.path / "tensorboard"
    folder.mkdir(parents=True, exist_ok=True)
    start = float(events[0].get("time", scalars[0][3]))
    path = folder / f"events.out.tfevents.{int(start)}.mgtoolkit"
    data = _record(_event(start, 0, file_version="brain.Event:2"))
    data += b"".join(_record(_event(t, step, summary=[(tag, v)])) for tag, step, v, t in scalars)
    tmp = folder / ".export.tmp"  # not "*tfevents*": TensorBoard would read it
    tmp.write_bytes(data)
    os.replace(tmp, path)  # TensorBoard reading the folder sees the old file or the new one
    return path
