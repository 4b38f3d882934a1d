"""The one place where mgtoolkit creates or connects a dask client.

Every command and function that runs on dask accepts ``client=``: a ``distributed.Client``
(used as it is), the address of a running scheduler (connected here, closed afterwards), or
None (an embedded :func:`local_cluster`, closed afterwards). dask and distributed are imported
inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["ClusterError", "client_context", "connect", "default_workers", "local_cluster"]

#: Seconds to wait for a scheduler given by address.
CONNECT_TIMEOUT_S = 30


class ClusterError(RuntimeError):
    """A dask scheduler could not be reached, or a cluster could not be started."""


def default_workers() -> int:
    """One worker per core, at most 8 (beyond that the file system, not the CPU, limits I/O)."""
    return max(1, min(os.cpu_count() or 1, 8))


def local_cluster(
    workers: int | None = None,
    *,
    threads_per_worker: int = 1,
    memory_limit: str | int | None = None,
    daemon: bool = True,
    single_arena: bool = False,
):
    """A ``distributed.LocalCluster`` of worker processes on this machine.

    Parameters
    ----------
    workers : int, optional
        Worker processes (default :func:`default_workers`).
    threads_per_worker : int
        Threads per worker process (1: one task per process, as training ranks need).
    memory_limit : str or int, optional
        Per-worker memory limit in dask's notation ("4GiB"); default: dask's share of RAM.
    daemon : bool
        False makes workers non-daemonic, so a task may start processes of its own (a
        training rank's DataLoader workers).
    single_arena : bool
        Start the workers with ``MALLOC_ARENA_MAX=1``: tasks run in worker threads, whose own
        glibc arena does not keep freed blocks of a large tile's size, so every streamed
        prediction step would map fresh pages again.

    Returns
    -------
    distributed.LocalCluster
        Its dashboard listens on 127.0.0.1 only, on a free port.
    """
    if not isinstance(workers, int | None) or (workers is not None and workers < 1):
        raise ValueError(f"a local cluster needs at least one worker (got workers={workers!r})")
    if threads_per_worker < 1:
        raise ValueError(f"threads_per_worker must be ≥ 1 (got {threads_per_worker!r})")
    import dask
    import distributed

    settings: dict[str, Any] = {"distributed.worker.daemon": daemon}
    if single_arena:
        settings["distributed.nanny.pre-spawn-environ.MALLOC_ARENA_MAX"] = 1
    # dask's configuration is read when the workers start: set it only around the start.
    with dask.config.set(settings):
        return distributed.LocalCluster(
            n_workers=workers or default_workers(),
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address="127.0.0.1:0",
            memory_limit=memory_limit if memory_limit is not None else "auto",
        )


def connect(address: str, *, timeout_s: float = CONNECT_TIMEOUT_S, set_as_default: bool = True):
    """A ``distributed.Client`` connected to the scheduler at ``address``.

    ``set_as_default``: as for ``distributed.Client`` (tasks that submit further tasks find
    the default client).

    Raises
    ------
    ClusterError
        If no scheduler answers there within ``timeout_s`` seconds; the message names the
        address and what to check.
    """
    from distributed import Client

    try:
        return Client(address, timeout=timeout_s, set_as_default=set_as_default)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"cannot reach the dask scheduler at {address} within {timeout_s:.0f} s ({exc}). "
            "Check the address (cluster.scheduler_address), that the scheduler is running and "
            "that this machine can reach it, or leave the scheduler out to use a local cluster"
        ) from None


@contextlib.contextmanager
def client_context(client: Any = None, **local: Any) -> Iterator[Any]:
    """A dask Client for the duration of the ``with`` block.

    Parameters
    ----------
    client : distributed.Client, str or None
        A Client is yielded unchanged (and left open); a string is a scheduler address,
        connected with :func:`connect` and closed on exit; None starts a
        :func:`local_cluster` (keyword arguments ``local``) and closes it on exit.
    """
    if client is not None and not isinstance(client, str):
        yield client
        return
    if isinstance(client, str):
        with connect(client) as own:
            yield own
        return
    from distributed import Client

    with local_cluster(**local) as cluster, Client(cluster) as own:
        yield own
