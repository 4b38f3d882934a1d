"""Launch a data-parallel run on a dask cluster from a notebook, and follow it.

One call, :func:`launch` (or :func:`train_on_cluster` for the trainer), turns dask workers into
``torch.distributed`` ranks:

- the cluster is a ``LocalCluster`` with one single-threaded worker process per rank by default,
  or any dask cluster/scheduler (dask-jobqueue's SLURMCluster/PBSCluster: :mod:`.clusters`);
- rank r is the r-th worker in address order; each rank is one long-running task pinned to its
  worker (``client.submit(..., workers=[addr], pure=False)``, not ``client.run``, which would
  block the worker's event loop and its heartbeats);
- rank 0 opens the rendezvous store on a port the OS picks and announces it through a
  ``distributed.Variable`` on the scheduler; the other ranks read it from there;
- inside the run, :func:`emit` on rank 0 streams event dicts to the client with
  ``get_worker().log_event``; the returned :class:`Run` collects them (``client.subscribe_topic``).

A rank whose worker dies makes :meth:`Run.result` raise :class:`WorkerLost`, naming the worker;
training resumes from the run directory's last checkpoint when launched again (on a new cluster).

:meth:`Run.stop` of a training run (:func:`train_on_cluster`) is cooperative: it asks the
trainer to stop at its next batch boundary (``<run_dir>/STOP``, which all ranks agree on), the
trainer writes a checkpoint and returns a result with reason "stopped". Only a run that has not
ended after a grace period — or any other function, which has no such protocol — is interrupted
asynchronously (:class:`RunStopped` inside every rank, then a worker restart for a rank stuck in
a collective).
"""

from __future__ import annotations

import ctypes
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mgtoolkit.cluster import ClusterError, connect, local_cluster

__all__ = [
    "LaunchError",
    "Run",
    "RunStopped",
    "WorkerLost",
    "emit",
    "launch",
    "train_on_cluster",
]


class LaunchError(RuntimeError):
    """The cluster cannot host the run (too few workers, mixed devices, no scheduler)."""


class WorkerLost(RuntimeError):
    """A rank's worker died during the run."""


class RunStopped(RuntimeError):
    """Raised inside every rank when :meth:`Run.stop` was called."""


_local = threading.local()  # the rank context of the task running in this thread


def _plain(value: Any) -> Any:
    """A msgpack-safe copy: numbers, strings, lists and dicts only."""
    return json.loads(
        json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    )


def emit(event: dict) -> None:
    """Send one event dict from rank 0 of a launched run to the client (no-op elsewhere).

    Use it as a trainer listener: ``train(config, run_dir, listeners=[emit])``. Outside a run
    started by :func:`launch`, and on ranks other than 0, it does nothing.
    """
    ctx = getattr(_local, "ctx", None)
    if ctx is None or ctx["rank"] != 0:
        return
    from distributed import get_worker

    get_worker().log_event(ctx["topic"], _plain(event))


def _probe(dask_worker=None) -> dict:
    """What a worker offers: GPUs it sees and GPU resources it declares (via client.run)."""
    import torch

    from mgtoolkit.launch.mpi_worker import mpi_place

    resources = dask_worker.state.total_resources
    place = mpi_place()
    return {
        "cuda": torch.cuda.device_count(),
        "gpu_resource": float(resources.get("GPU", 0) or resources.get("gpu", 0)),
        "mpi": list(place) if place else None,
    }


def _rank_order(workers: list[str], probes: dict[str, dict]) -> list[str]:
    """Workers in rank order: by MPI rank when all are ranks of one MPI world, else by address.

    Workers started by :mod:`mgtoolkit.launch.mpi_worker` then get torch rank = MPI rank, so a
    run over the whole world can sum and exchange halos through MPI (:mod:`mgtoolkit.comm.mpi`).
    """
    places = [probes[a]["mpi"] for a in workers]
    if places and all(places) and len({p[0] for p in places}) == 1:
        return [a for _, a in sorted(zip((p[1] for p in places), workers, strict=True))]
    return sorted(workers)


def _check_devices(probes: dict[str, dict], backend: str | None) -> str:
    """Refuse a mix of GPU and CPU workers; return the backend to use."""
    gpu = sorted(a for a, p in probes.items() if p["cuda"] > 0 or p["gpu_resource"] > 0)
    cpu = sorted(a for a in probes if a not in gpu)
    if gpu and cpu and backend != "gloo":
        raise LaunchError(
            f"mixed workers: {', '.join(gpu)} have GPUs but {', '.join(cpu)} do not. "
            "Data-parallel ranks must be alike: use a cluster of only GPU workers (NCCL) or "
            "only CPU workers, or pass backend='gloo' to train every rank on its CPU"
        )
    if backend:
        return backend
    return "nccl" if gpu and all(probes[a]["cuda"] > 0 for a in gpu) else "gloo"


class _StopWatcher(threading.Thread):
    """Polls the run's stop flag; raises RunStopped in the training thread when it is set."""

    def __init__(self, flag, target_thread: int):
        super().__init__(daemon=True)
        self.flag = flag  # a distributed.Event, made in the task's thread (it needs the client)
        self.target = target_thread
        self.done = threading.Event()
        self.lock = threading.Lock()  # no exception is sent once the task has finished

    def run(self) -> None:
        while not self.done.wait(1.0):
            try:
                if self.flag.is_set():
                    with self.lock:
                        if self.done.is_set():
                            return
                        # An asynchronous exception lands at the next Python instruction of the
                        # training thread (after the current collective or kernel returns).
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(self.target), ctypes.py_object(RunStopped)
                        )
                        return
            except Exception:  # scheduler gone: the run is ending anyway
                return


def _rank_main(fn, args, kwargs, rank, size, local_rank, run_id, backend, timeout_s):
    """Body of rank ``rank``'s task on its worker: rendezvous, run ``fn``, clean up."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist
    from distributed import Event, Variable, get_worker

    from mgtoolkit.comm.ranks import host_store, join

    worker = get_worker()
    torch.set_num_threads(max(1, int(worker.state.nthreads)))
    timeout = timedelta(seconds=timeout_s)
    announce = Variable(f"{run_id}-master")
    if rank == 0:
        # The worker's own address: 127.0.0.1 on a LocalCluster, the ranks' interface on a
        # job queue. The address travels through the (TLS-secured) scheduler.
        host = urlparse(worker.address).hostname
        store = host_store(host, 0, world_size=size, timeout_s=timeout_s)
        announce.set(f"{host}:{store.port}")
    else:
        host, port = announce.get(timeout=timeout_s).rsplit(":", 1)
        store = dist.TCPStore(host, int(port), is_master=False, timeout=timeout)
    join(store, rank, size, backend=backend, local_rank=local_rank, timeout_s=timeout_s)
    if rank == 0:
        announce.delete()  # every rank has joined: the address is no longer needed
    _local.ctx = {"rank": rank, "topic": run_id}
    watcher = _StopWatcher(Event(f"{run_id}-stop"), threading.get_ident())
    watcher.start()
    try:
        return fn(*args, **kwargs)
    finally:
        with watcher.lock:
            watcher.done.set()
        _local.ctx = None
        dist.destroy_process_group()


class Run:
    """Handle on a launched run: status, events as they arrive, stop() and result().

    Attributes
    ----------
    events : list of dict
        Every event rank 0 emitted so far, in arrival order (appended by the client's IO
        thread: read it, do not modify it).
    workers : list of str
        Worker address of each rank.
    run_dir : Path or None
        The training run's directory (:func:`train_on_cluster`); None for other functions.
    """

    def __init__(self, client, futures, workers, run_id, owned, run_dir=None):
        self.client = client
        self.futures = futures
        self.workers = workers
        self.run_id = run_id
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.events: list[dict] = []
        self._owned = owned
        self._stopped = False
        self._interrupted = False  # stop() had to interrupt the ranks asynchronously
        self._lost: str | None = None
        self._failures: list[tuple[int, str]] = []  # (rank, message), in the order they failed
        self._settled = False
        self._settle_lock = threading.Lock()
        self._done = threading.Event()
        self._watch = threading.Thread(target=self._watch_workers, daemon=True)
        self._watch.start()

    def _on_event(self, event) -> None:  # runs on the client's IO thread: only append
        self.events.append(event[1])

    def _finished(self) -> bool:
        """Whether every rank has ended; the first time, their outcomes are kept on the client.

        A rank's result lives on its worker: once the workers go (jobs released, cluster
        scaled down) dask would report the futures as lost, pending again, and the run as
        running.
        """
        if self._settled:
            return True
        if not all(f.done() for f in self.futures):
            return False
        with self._settle_lock:
            if not self._settled:
                self.futures = [_Settled(f) for f in self.futures]
                self._settled = True
        return True

    def _track(self, future, rank: int) -> None:
        """Record rank ``rank``'s failure as soon as its task errs (first failure first)."""

        def done(f) -> None:  # on distributed's single callback thread, in completion order
            if f.status != "error" or self._stopped:
                return
            try:
                exc = f.exception(timeout=10)
                message = f"{exc} ({type(exc).__name__})"
            except Exception as why:
                message = f"the task failed ({why!r})"
            self._failures.append((rank, message))
            if len(self._failures) == 1:
                # Peers would wait in their next collective until the timeout, holding their
                # workers (a relaunch would queue behind them): interrupt them now.
                threading.Thread(target=self._end_failed_run, daemon=True).start()

        future.add_done_callback(done)

    @property
    def failure(self) -> str | None:
        """``"rank <r>: <message> (<type>)"`` of the first rank that raised; None if none has."""
        if not self._failures:
            return None
        rank, message = self._failures[0]
        return f"rank {rank}: {message}"

    def _end_failed_run(self) -> None:
        from distributed import Event

        try:
            Event(f"{self.run_id}-stop", client=self.client).set()
            self._end_stopped_ranks(grace_s=10.0)
        except Exception:
            pass  # the client is closing

    def _watch_workers(self) -> None:
        while not self._done.wait(0.5):
            if self._finished():
                return
            try:
                alive = set(self.client.run_on_scheduler(_worker_addresses))
            except Exception:
                continue  # the client is closing
            gone = [(r, a) for r, a in enumerate(self.workers) if a not in alive]
            if gone and not self._stopped:
                self._lost = ", ".join(f"{a} (rank {r})" for r, a in gone)
                # The pinned task of a dead worker would wait for it forever; peers fail on
                # their next collective. Cancel everything.
                self.client.cancel(self.futures, force=True)
                return

    @property
    def status(self) -> str:
        """ "running", "finished", "failed", "stopped" or "lost" (a worker died)."""
        if self._lost:
            return "lost"
        if self._failures:
            return "failed"  # one rank raised: the others are being ended
        if not self._finished():
            return "running"
        if self._stopped:
            return "stopped"
        return "finished" if all(f.status == "finished" for f in self.futures) else "failed"

    def stop(self, *, grace_s: float = 120.0) -> None:
        """Stop the run; returns at once. Its last checkpoint resumes it.

        A training run (:attr:`run_dir` set) is asked to stop at its next batch boundary: every
        rank stops at the same batch, a checkpoint is written and :meth:`result` returns the
        trainer's result with reason "stopped". If the ranks have not ended ``grace_s``
        seconds later (a batch longer than that, or a rank stuck), and at once for functions
        other than training, each rank gets :class:`RunStopped` at its next Python
        instruction; a rank then still waiting in a collective has its worker restarted after
        10 s more.
        """
        if self._stopped or self._finished():
            return
        self._stopped = True
        if self.run_dir is not None:
            from mgtoolkit.rundir import request_stop

            try:
                # On rank 0's worker: the STOP file must be where rank 0 looks for it.
                self.client.run(
                    request_stop, str(self.run_dir), create=True, workers=[self.workers[0]]
                )
            except Exception:
                grace_s = 0.0  # the worker is unreachable: interrupt instead
        else:
            grace_s = 0.0
        threading.Thread(target=self._enforce_stop, args=(grace_s,), daemon=True).start()

    def _enforce_stop(self, grace_s: float) -> None:
        """After stop(): wait ``grace_s`` for the ranks, then interrupt, then restart workers."""
        from distributed import Event

        deadline = time.monotonic() + grace_s
        while not self._finished() and time.monotonic() < deadline and not self._done.is_set():
            time.sleep(0.2)
        if not self._finished():
            self._interrupted = True
            try:
                Event(f"{self.run_id}-stop", client=self.client).set()
            except Exception:
                pass  # the client is closing
            self._end_stopped_ranks(grace_s=10.0)
        elif self.run_dir is not None:
            # A run that ended on its own just before the request leaves the file behind: it
            # would stop the next resume after one batch.
            try:
                self.client.run(_remove_stop_file, str(self.run_dir), workers=[self.workers[0]])
            except Exception:
                pass

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run; return rank 0's return value.

        After a cooperative :meth:`stop` that is the trainer's result (reason "stopped").

        Raises
        ------
        WorkerLost
            A rank's worker died (the message names it and how to resume).
        RunStopped
            :meth:`stop` had to interrupt the ranks.
        Exception
            The first rank's exception, re-raised.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._finished() and not self._lost:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.run_id} still running after {timeout} s")
            time.sleep(0.2)
            if not self._stopped and any(f.status == "error" for f in self.futures):
                time.sleep(1.0)  # give the watcher a chance to name a dead worker first
                break
        self._done.set()
        if self._lost:
            last = [e.get("path") for e in self.events if e.get("type") == "checkpoint"]
            where = f"its last checkpoint is {last[-1]}" if last else "no checkpoint was written"
            raise WorkerLost(
                f"worker {self._lost} died during run {self.run_id}; {where}. Start a new "
                "cluster (or wait for replacement workers) and launch the same run directory "
                "again: training resumes from the last checkpoint"
            )
        if self._stopped and (
            self._interrupted or not all(f.status == "finished" for f in self.futures)
        ):
            raise RunStopped(f"run {self.run_id} was stopped")
        for f in self.futures:
            if f.status == "error":
                f.result()  # re-raises the rank's exception
        return self.futures[0].result()

    def _end_stopped_ranks(self, *, grace_s: float) -> None:
        """After an interrupt: restart the workers of ranks still running after ``grace_s``.

        The ranks receive the interrupt at slightly different moments; one may already wait
        in a collective for a peer that has left, blocked until the process-group timeout. A
        restart (by the worker's nanny) frees that worker for other work.
        """
        deadline = time.monotonic() + grace_s
        while not self._finished() and time.monotonic() < deadline:
            time.sleep(0.2)
        stuck = [a for f, a in zip(self.futures, self.workers, strict=True) if not f.done()]
        if stuck:
            self.client.cancel(self.futures, force=True)
            self.client.restart_workers(stuck)

    def close(self) -> None:
        """Stop following the run; close the cluster and client if :func:`launch` made them."""
        self._done.set()
        try:
            self.client.unsubscribe_topic(self.run_id)
        except Exception:
            pass
        for obj in reversed(self._owned):
            obj.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, ranks={len(self.workers)}, status={self.status!r})"


class _Settled:
    """The outcome of an ended dask future, kept on the client (its worker may then go)."""

    def __init__(self, future):
        self.key, self.status = future.key, future.status
        self._value = self._error = None
        if self.status == "finished":
            self._value = future.result(timeout=60)
        elif self.status == "error":
            self._error = future.exception(timeout=60)

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None):
        if self._error is not None:
            raise self._error
        if self.status != "finished":
            from concurrent.futures import CancelledError

            raise CancelledError(f"task {self.key} was {self.status}")
        return self._value

    def exception(self, timeout: float | None = None):
        return self._error


def _worker_addresses(dask_scheduler=None) -> list[str]:
    return list(dask_scheduler.workers)


def _remove_stop_file(run_dir: str) -> None:
    from mgtoolkit.rundir import RunDir

    RunDir(run_dir).clear_stop()


def _connect(cluster, ranks: int | None, wait_s: float):
    """Client for ``cluster`` (None, a Cluster, a Client or a scheduler address)."""
    from distributed import Client

    owned: list = []
    if cluster is None:
        cluster = local_cluster(ranks or 2, daemon=False)  # a rank may start DataLoader workers
        owned.append(cluster)
    if isinstance(cluster, Client):
        return cluster, owned
    if isinstance(cluster, str):
        try:
            client = connect(cluster, timeout_s=wait_s, set_as_default=False)
        except ClusterError as exc:
            raise LaunchError(str(exc)) from None
    else:
        if ranks and len(cluster.workers) < ranks:
            cluster.scale(ranks)  # dask-jobqueue: one job per rank; LocalCluster: more workers
        client = Client(cluster, set_as_default=False)
    owned.append(client)
    return client, owned


def _wait_for_workers(client, cluster, ranks: int, wait_s: float) -> None:
    """Wait until ``ranks`` workers joined; fail early if the cluster says its job ended.

    A cluster may offer ``job_failure()`` (the MPI clusters of :mod:`.clusters`): a message
    when its batch job ended before its workers joined, else None.
    """
    job_failure = getattr(cluster, "job_failure", None)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.wait_for_workers(ranks, timeout=max(0.1, min(5.0, deadline - time.monotonic())))
            return
        except TimeoutError:
            failure = job_failure() if job_failure is not None else None
            if failure:
                raise LaunchError(failure) from None
            if time.monotonic() >= deadline:
                break
    n = len(client.run_on_scheduler(_worker_addresses))
    raise LaunchError(
        f"asked for {ranks} ranks but only {n} dask worker(s) joined within "
        f"{wait_s:.0f} s. Scale the cluster (cluster.scale({ranks}); on Slurm/PBS check "
        "that the worker jobs are not pending: squeue / qstat) or ask for fewer ranks"
    )


def launch(
    fn: Callable[..., Any],
    *args: Any,
    ranks: int | None = None,
    cluster=None,
    backend: str | None = None,
    wait_s: float = 120.0,
    timeout_s: float = 600.0,
    stop_dir: str | Path | None = None,
    **kwargs: Any,
) -> Run:
    """Run ``fn(*args, **kwargs)`` on ``ranks`` dask workers joined in one process group.

    Parameters
    ----------
    fn : callable
        Runs on every rank (``mgtoolkit.comm.world()`` gives rank and size); call
        :func:`emit` from it to stream events. Must be importable on the workers.
    ranks : int, optional
        Number of ranks (one per worker). Default: every worker of ``cluster``, or 2 for the
        default LocalCluster.
    cluster : None, Cluster, Client or str
        None: a new LocalCluster (closed by :meth:`Run.close`); a dask cluster (e.g.
        ``clusters.slurm_cluster(...)`` — scale it first or let this call wait), a Client, or a
        scheduler address.
    backend : {"gloo", "nccl"}, optional
        Default: NCCL when every worker sees a GPU, else gloo.
    wait_s : float
        How long to wait for the scheduler and for ``ranks`` workers, in seconds.
    timeout_s : float
        Limit for the rendezvous and for each collective, in seconds.
    stop_dir : path-like, optional
        A directory whose ``STOP`` file ``fn`` honours like the trainer does (the training
        run directory: :func:`train_on_cluster` sets it), which makes :meth:`Run.stop`
        cooperative. Not passed to ``fn``; becomes :attr:`Run.run_dir`.

    Raises
    ------
    LaunchError
        Unreachable scheduler; fewer than ``ranks`` workers after ``wait_s``; mixed GPU and
        CPU workers.
    """
    client, owned = _connect(cluster, ranks, wait_s)
    try:
        n_now = len(client.run_on_scheduler(_worker_addresses))
        ranks = ranks or n_now
        if ranks < 1:
            raise LaunchError("the cluster has no workers: scale it (cluster.scale(n)) first")
        _wait_for_workers(client, cluster, ranks, wait_s)
        candidates = client.run_on_scheduler(_worker_addresses)
        probes = client.run(_probe, workers=candidates)
        workers = _rank_order(candidates, probes)[:ranks]
        backend = _check_devices({a: probes[a] for a in workers}, backend)
        hosts = [urlparse(a).hostname for a in workers]
        local_ranks = [hosts[:r].count(h) for r, h in enumerate(hosts)]
        run_id = f"mgtoolkit-run-{uuid.uuid4().hex[:12]}"
        futures = []
        run = Run(client, futures, workers, run_id, owned, stop_dir)
        client.subscribe_topic(run_id, run._on_event)
        for r, addr in enumerate(workers):
            futures.append(
                client.submit(
                    _rank_main,
                    fn,
                    args,
                    kwargs,
                    r,
                    ranks,
                    local_ranks[r],
                    run_id,
                    backend,
                    timeout_s,
                    key=f"{run_id}-rank{r}",
                    workers=[addr],
                    allow_other_workers=False,
                    pure=False,
                    retries=0,
                )
            )
            run._track(futures[-1], r)
        return run
    except BaseException:
        for obj in reversed(owned):
            obj.close()
        raise


def _train_entry(config, run_dir: str) -> dict:
    """One rank of :func:`train_on_cluster`."""
    import dataclasses

    from mgtoolkit.train import train

    result = train(config, run_dir, listeners=[emit], progress=False, resume=True)
    return _plain(dataclasses.asdict(result)) if dataclasses.is_dataclass(result) else result


def train_on_cluster(config, run_dir: str, *, ranks: int | None = None, cluster=None, **kw) -> Run:
    """Train ``config`` (a ``TrainConfig``) into ``run_dir`` on a dask cluster.

    Rank 0's events stream to :attr:`Run.events`; the trainer also writes them to
    ``run_dir/events.jsonl``. Launching the same ``run_dir`` again resumes from its last
    checkpoint (after :class:`WorkerLost` or :meth:`Run.stop`, for example). ``run_dir`` must
    be on a file system every worker sees. Other keywords as for :func:`launch`.
    """
    return launch(
        _train_entry, config, str(run_dir), ranks=ranks, cluster=cluster, stop_dir=run_dir, **kw
    )
