"""The one place where mgtoolkit creates or connects a dask client.

Every command and function that runs on dask accepts ``client=``: a ``distributed.Client``
(used as it is), the address of a running scheduler (connected here, closed afterwards), or
None (an embedded :func:`local_cluster`, closed afterwards). dask and distributed are imported
inside the functions, so importing this module costs nothing.

Every cluster started here is for its owner only: scheduler, nannies and workers speak TLS
with credentials made for that cluster alone (``Security.temporary()``, kept in memory) and
listen on 127.0.0.1, as does the dashboard. A client without those credentials (another
user on a shared login node) is refused. ``Client(cluster)`` takes them from
``cluster.security``; :func:`connect` finds them for the address of a cluster started in
this process.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator
from typing import Any

__all__ = [
    "ClusterError",
    "client_context",
    "connect",
    "default_workers",
    "local_cluster",
]

#: Seconds to wait for a scheduler given by address.
CONNECT_TIMEOUT_S = 30


#: Clusters started in this process, by scheduler address: :func:`connect` takes their
#: credentials from here.
_STARTED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


class ClusterError(RuntimeError):
    """A dask scheduler could not be reached, or a cluster could not be started."""


def _temporary_security():
    """Fresh self-signed TLS credentials, in memory (``Security.temporary()``)."""
    from distributed.security import Security

    try:
        return Security.temporary()
    except ImportError as exc:  # pragma: no cover - cryptography is a dependency
        raise ClusterError(
            "a secured dask cluster needs the `cryptography` package: `pip install cryptography`"
        ) from exc


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
        Scheduler, nannies and workers listen on 127.0.0.1 and require TLS with credentials
        made for this cluster alone (``cluster.security``; ``Client(cluster)`` uses them).
        The dashboard (plain HTTP, read-only views) listens on 127.0.0.1 only, on a free port.
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
        cluster = distributed.LocalCluster(
            n_workers=workers or default_workers(),
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            protocol="tls://",
            security=_temporary_security(),
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address=None,
            memory_limit=memory_limit if memory_limit is not None else "auto",
        )
    _STARTED[cluster.scheduler_address] = cluster
    return cluster


def connect(
    address: str,
    *,
    timeout_s: float = CONNECT_TIMEOUT_S,
    set_as_default: bool = True,
    security: Any = None,
):
    """A ``distributed.Client`` connected to the scheduler at ``address``.

    Parameters
    ----------
    address : str
        The scheduler's address (``tls://host:port`` or ``tcp://host:port``).
    timeout_s : float
        Seconds to wait for the scheduler.
    set_as_default : bool
        As for ``distributed.Client`` (tasks that submit further tasks find the default
        client).
    security : distributed.security.Security, optional
        TLS credentials. Default: those of the :func:`local_cluster` at ``address`` if this
        process started it, otherwise dask's configuration (``distributed.comm.tls``).

    Raises
    ------
    ClusterError
        If no scheduler answers there within ``timeout_s`` seconds; the message names the
        address and what to check.
    """
    from distributed import Client

    if security is None and (started := _STARTED.get(address)) is not None:
        security = started.security
    try:
        return Client(address, timeout=timeout_s, set_as_default=set_as_default, security=security)
    except (OSError, TimeoutError) as exc:
        tls = (
            " A tls:// scheduler also needs its credentials (security=...)."
            if address.startswith("tls://")
            else ""
        )
        raise ClusterError(
            f"cannot reach the dask scheduler at {address} within {timeout_s:.0f} s ({exc}). "
            "Check the address (cluster.scheduler_address), that the scheduler is running and "
            "that this machine can reach it, or leave the scheduler out to use a local "
            f"cluster.{tls}"
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

    with local_cluster(**local) as cluster, Client(cluster, security=cluster.security) as own:
        yield own
