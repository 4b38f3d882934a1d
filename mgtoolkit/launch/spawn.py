"""Run a function on p local processes joined in one gloo (or NCCL) process group.

The smallest real data-parallel launcher: no dask, no MPI. Used by the tests, the scaling
benchmark and users on a workstation. The parent process hosts the rendezvous store on a
port the operating system picks, so no port is guessed, and on 127.0.0.1 only; gloo's own
connections use the loopback interface too (``GLOO_SOCKET_IFNAME``, unless set).
"""

from __future__ import annotations

import os
import pickle
import queue
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

__all__ = ["RankFailed", "spawn"]


class RankFailed(RuntimeError):
    """A rank raised an exception or died; the message names the rank and the cause."""


def _loopback_interface() -> str | None:
    """Name of the network interface that carries 127.0.0.1 ("lo" on Linux), if any."""
    import socket

    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == "127.0.0.1" for a in addresses):
            return name
    return None


def _child(
    rank: int,
    size: int,
    port: int,
    backend: str,
    threads: int,
    timeout_s: float,
    results: Any,
    fn: Callable[..., Any],
    args: tuple,
) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    try:
        if port is None:  # a serial process: no process group at all
            out = fn(*args)
        else:
            from mgtoolkit.comm.ranks import join

            store = dist.TCPStore(
                "127.0.0.1", port, is_master=False, timeout=timedelta(seconds=timeout_s)
            )
            join(store, rank, size, backend=backend, timeout_s=timeout_s)
            try:
                out = fn(*args)
            finally:
                dist.destroy_process_group()
        # Plain pickle copies tensors by value; the queue's own pickler would pass them
        # through shared memory that vanishes when this process exits.
        results.put((rank, True, pickle.dumps(out)))
    except BaseException as exc:  # report every failure to the parent, then exit non-zero
        results.put((rank, False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        raise SystemExit(1) from None


def spawn(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    backend: str = "gloo",
    threads_per_rank: int = 1,
    timeout_s: float = 300.0,
    process_group: bool = True,
) -> list[Any]:
    """Call ``fn(*args)`` on ``world_size`` new processes inside one process group.

    Parameters
    ----------
    fn : callable
        A module-level (picklable) function; inside it ``mgtoolkit.comm.world()``
        returns this process's ``(rank, world_size)``.
    world_size : int
        Number of processes (ranks).
    backend : {"gloo", "nccl"}
        ``torch.distributed`` backend; NCCL needs one GPU per rank.
    threads_per_rank : int
        ``torch.set_num_threads`` in each rank (1 avoids oversubscribing cores).
    timeout_s : float
        Limit for the rendezvous, each collective and the whole call, in seconds.
    process_group : bool
        False runs ``fn`` in fresh processes that join no process group (each one sees
        ``world() == (0, 1)`` and runs the serial code): the single-process reference of a
        scaling study, or independent copies on several cores.

    Returns
    -------
    list
        ``fn``'s return value of each rank, in rank order (must be picklable).

    Raises
    ------
    RankFailed
        If a rank raises (its traceback is included), dies, or the call exceeds ``timeout_s``.
    """
    import multiprocessing as mp

    from mgtoolkit.comm.ranks import host_store

    if world_size < 1:
        raise ValueError(f"world_size must be ≥ 1 (got {world_size})")
    store = None
    if process_group:
        store = host_store("127.0.0.1", 0, world_size=world_size, timeout_s=timeout_s)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    env_threads = {"OMP_NUM_THREADS": str(threads_per_rank), "MKL_NUM_THREADS": "1"}
    loopback = _loopback_interface()
    if loopback and "GLOO_SOCKET_IFNAME" not in os.environ:
        env_threads["GLOO_SOCKET_IFNAME"] = loopback  # the ranks' pairs stay on this machine
    saved = {k: os.environ.get(k) for k in env_threads}
    os.environ.update(env_threads)  # children inherit the environment at start
    try:
        procs = [
            ctx.Process(
                target=_child,
                args=(
                    r,
                    world_size,
                    store.port if store is not None else None,
                    backend,
                    threads_per_rank,
                    timeout_s,
                    results,
                    fn,
                    args,
                ),
                daemon=True,
            )
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out: dict[int, Any] = {}
    errors: dict[int, str] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) + len(errors) < world_size:
            try:
                rank, ok, value = results.get(timeout=1.0 if not errors else 3.0)
            except queue.Empty:
                if errors:  # the others are stuck in a collective; stop them below
                    break
                for r, p in enumerate(procs):
                    if p.exitcode not in (None, 0) and r not in out and r not in errors:
                        errors[r] = f"died with exit code {p.exitcode}"
                if not errors and time.monotonic() > deadline:
                    errors[-1] = f"no result after {timeout_s:.0f} s (timed out)"
                continue
            if ok:
                out[rank] = pickle.loads(value)
            else:
                errors[rank] = value
    finally:
        for p in procs:
            p.join(timeout=5.0 if not errors else 0.5)
            if p.is_alive():
                p.terminate()
                p.join()
    if errors:
        # Name the first failure first: later ones are usually its echo in the peers.
        detail = "\n".join(f"rank {r}: {m}" if r >= 0 else m for r, m in errors.items())
        raise RankFailed(f"distributed run on {world_size} local processes failed: {detail}")
    return [out[r] for r in range(world_size)]
