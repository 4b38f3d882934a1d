"""A benchmark's worker under ``mpirun`` with one transport of :mod:`mgtoolkit.comm`.

Shared by ``scaling.py`` and ``spatial.py``: the worker prints one line ``TRANSPORT <how>
<figures…>``, where ``<how>`` is :func:`mgtoolkit.comm.transport`'s answer, checked here against
the transport asked for (``MGTOOLKIT_TRANSPORT``).
"""

from __future__ import annotations

import os
import subprocess
import sys

#: MGTOOLKIT_TRANSPORT values and what comm.transport reports when each one runs.
TRANSPORTS = {"gloo": "process-group", "shm": "shm", "mpi": "mpi"}


def run_worker(
    script: str, args: list[str], *, ranks: int, transport: str, options=()
) -> list[str]:
    """Run ``script args`` on ``ranks`` ranks (``mpirun`` of the MPI from wheels, with
    ``options``); return the figures of its TRANSPORT line."""
    env = {
        **os.environ,
        "OMPI_ALLOW_RUN_AS_ROOT": "1",  # Open MPI refuses root without these
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMP_NUM_THREADS": "1",
        "MGTOOLKIT_TRANSPORT": transport,
    }
    mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
    cmd = [mpirun, "-n", str(ranks), "--oversubscribe", *options, sys.executable, script, *args]
    out = subprocess.run(cmd, env=env, check=True, timeout=900, capture_output=True, text=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("TRANSPORT"))
    _, how, *figures = line.split()
    if how != TRANSPORTS[transport]:
        raise RuntimeError(f"MGTOOLKIT_TRANSPORT={transport} ran over {how}")
    return figures
