"""Training events: plain dicts sent to listeners and appended to ``events.jsonl``.

Every event is a msgpack-serialisable dict with at least ``type`` (str), ``time`` (unix seconds)
and ``run`` (the run name). Types, in the order a run emits them:

``run_start``
    ``steps`` (number of steps), ``levels`` (level per step), ``schedule`` (text), ``dim``,
    ``n`` (finest cells per side), ``train_samples``, ``val_samples``, ``parameters``,
    ``world_size``, ``spatial`` (ranks per field, ``parallel.spatial``), ``transport`` (how
    sums over ranks travel: "mpi", "shm", "process-group", or "none" for one rank),
    ``resumed`` (bool).
``step_start`` / ``step_end``
    ``step`` (0-based index), ``level``, ``n`` (cells per side), ``rule`` (text); step_start
    adds ``spatial`` (ranks per field on this level); step_end adds
    ``epochs``, ``loss`` (last epoch mean), ``wall_s`` (training seconds in the step).
``epoch_start`` / ``epoch_end``
    ``step``, ``level``, ``epoch`` (0-based within the step); epoch_start adds ``lr`` (the
    learning rate of the epoch, see ``OptimConfig.lr_schedule``) and ``batches`` (batches per
    epoch); epoch_end adds ``loss`` (mean over the epoch's batches), ``wall_s`` (training
    seconds of the epoch), ``samples_per_s``.
``batch_end``
    ``step``, ``level``, ``epoch``, ``batch``, ``loss`` (global mean J of the batch),
    ``samples_per_s``.
``validation``
    ``step``, ``level`` (always 1: validation is on the finest level), ``train_level``,
    ``epoch``, ``val_energy``, and when the store has u_fem: ``val_energy_gap``,
    ``val_rel_l2``, ``val_max_abs``; ``wall_s`` = cumulative training seconds of the run.
``checkpoint``
    ``path``, ``step``, ``epoch``, ``batch``.
``run_end``
    ``reason`` ("schedule complete" or "target reached"), ``wall_s``, ``elapsed_s``,
    ``time_to_target_s`` (or None), and the last validation metrics.
``error``
    ``message``, ``error_type``.

Losses are energies J (docs/math.md, 'Discrete energy') unless the config's ``optim.loss``
scales them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["EventLog", "Listener", "read_events"]

#: A listener receives every event dict; it must not raise (errors are reported, not fatal).
Listener = Callable[[dict], None]


class EventLog:
    """Fan events out to listeners and append them to a JSON-lines file.

    Parameters
    ----------
    run : str
        Run name put into every event.
    path : path-like, optional
        ``events.jsonl`` to append to (created with its directory); None writes no file.
    listeners : iterable of callables
        Each gets every event dict.
    """

    def __init__(self, run: str, path: str | Path | None, listeners: Iterable[Listener] = ()):
        self.run = run
        self.listeners = list(listeners)
        self._file = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # closed in close()

    def emit(self, type: str, **fields) -> dict:
        """Build the event ``{"type", "time", "run", **fields}``, deliver it and return it."""
        event = {"type": type, "time": time.time(), "run": self.run, **fields}
        if self._file is not None:
            self._file.write(json.dumps(event) + "\n")
            self._file.flush()  # a monitor may be following the file
        for listener in self.listeners:
            try:
                listener(event)
            except Exception as exc:  # a broken display must not kill a long run
                import warnings

                warnings.warn(f"event listener {listener!r} failed: {exc!r}", stacklevel=2)
        return event

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_events(path: str | Path) -> list[dict]:
    """All events of an ``events.jsonl`` file, oldest first (a torn last line is skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
