"""Fault injection for tests: make one rank of the *real* trainer raise after its first batch.

``fail_rank_after_first_batch(client, rank=1)`` patches ``Trainer._train_batch`` in the worker
process that will be rank ``rank`` of the next launch (ranks are the workers in address order):
its first batch trains normally, the next call raises ``RuntimeError(message)`` and restores the
original method (one failure, then the worker is clean again). The moment of the raise
(``time.time()``) is written to ``marker`` when given, so a test can time how fast it shows.

The browser test copies this file next to the notebook and calls it from a cell; the module is
pickled by value, so the workers need not import it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

MESSAGE = "injected failure after the first batch"


def _arm(message: str, marker: str | None) -> str:
    from mgtoolkit.train.trainer import Trainer

    original = Trainer.__dict__["_train_batch"]
    calls = [0]

    def faulty(self, nu):
        calls[0] += 1
        if calls[0] == 1:
            return original(self, nu)
        Trainer._train_batch = original  # one failure only
        if marker:  # whole or absent: the test polls for the file
            partial = Path(f"{marker}.part")
            partial.write_text(repr(time.time()))
            partial.replace(marker)
        raise RuntimeError(message)

    Trainer._train_batch = faulty
    return "armed"


def fail_rank_after_first_batch(
    client, *, rank: int = 1, message: str = MESSAGE, marker: str | None = None
) -> str:
    """Arm the fault on the worker that becomes rank ``rank``; returns its address."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    workers = sorted(client.scheduler_info()["workers"])
    address = workers[rank]
    client.run(_arm, message, marker, workers=[address])
    return address
