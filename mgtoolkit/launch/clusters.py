"""HPC dask clusters from a few arguments: one batch job = one worker = one rank.

Thin wrappers over dask-jobqueue's ``SLURMCluster`` and ``PBSCluster`` (≥ 0.9 option names:
``job_script_prologue``, ``job_extra_directives``, ``worker_extra_args``). What they add:

- one worker process per job with ``cores`` threads (the rank's torch threads);
- worker daemon mode off (``DASK_DISTRIBUTED__WORKER__DAEMON=False`` in the prologue), so a
  rank may start DataLoader worker processes;
- GPUs requested from the scheduler *and* declared as a dask resource ``GPU``, which
  :func:`mgtoolkit.launch.run.launch` uses to refuse mixed CPU/GPU clusters;
- optionally the worker started through ``srun``/``mpirun`` (``worker_launcher``) so that it
  runs inside an MPI/Slurm task with the site's CPU/GPU binding. Ranks are still assigned by
  the dask scheduler, not by MPI;
- optionally one job holding ``mpi_ranks`` workers that are the ranks of one MPI world
  (``mpirun``/``srun`` inside the job runs :mod:`.mpi_worker` in every rank): ranks are then
  MPI ranks, and training sums gradients and exchanges halos through MPI instead of TCP;
- TLS by default: the scheduler and its workers use credentials made for this cluster alone
  (``Security.temporary()``); the workers' copies are written 0600 into ``security_dir``
  (default ``~/.mgtoolkit/dask-tls``, mode 0700), which the compute nodes must see. A client
  without them (another user on the login node) is refused; ``Client(cluster)`` has them.
  The scheduler's dashboard listens on 127.0.0.1, on a free port (reach it through an SSH
  tunnel to the login node; ``scheduler_options={"dashboard_address": ...}`` overrides).

Pass the cluster to :func:`~mgtoolkit.launch.run.launch` or
:func:`~mgtoolkit.launch.run.train_on_cluster` with ``ranks=N``: it scales the cluster to N jobs
and waits for them (``wait_s``) with a clear error if they do not start.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_JOB_LOG_DIR",
    "DEFAULT_SECURITY_DIR",
    "MPI_LAUNCHERS",
    "WORKER_LAUNCHERS",
    "pbs_cluster",
    "slurm_cluster",
]

#: Where the workers' TLS credentials are written unless ``security_dir`` says otherwise
#: (the home directory is usually shared with the compute nodes).
DEFAULT_SECURITY_DIR = "~/.mgtoolkit/dask-tls"

#: Where the job logs of MPI clusters go unless ``log_directory`` says otherwise: a failed job's
#: log is quoted in the error that :func:`mgtoolkit.launch.run.launch` raises.
DEFAULT_JOB_LOG_DIR = "~/.mgtoolkit/jobs"

#: Prefixes that start the worker inside a task of the job (None: run it directly).
WORKER_LAUNCHERS = {
    "srun": "srun --ntasks=1 --cpus-per-task={cores}",
    "srun-pmix": "srun --ntasks=1 --cpus-per-task={cores} --mpi=pmix",
    "mpirun": "mpirun -n 1",
}

#: Prefixes that start the ``mpi_ranks`` workers of an MPI cluster as one MPI world
#: (``{ranks}``, ``{cores}`` per rank and ``{mpirun}`` are substituted). Threads are not bound
#: to cores by default (a rank's torch threads need all of its cores); pass your own prefix
#: for the site's binding.
MPI_LAUNCHERS = {
    "mpirun": "{mpirun} -n {ranks} --bind-to none",
    "srun": "srun --ntasks={ranks} --cpus-per-task={cores} --mpi=pmix",
}
#: States of a Slurm job in which its workers may still join.
_SLURM_ALIVE = {"PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED"}


def _private_dir(path: str | os.PathLike) -> str:
    """Create ``path`` (mode 0700) or check that an existing one is this user's alone."""
    directory = Path(os.path.expandvars(os.fspath(path))).expanduser().absolute()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
    if info.st_uid != os.getuid():
        raise PermissionError(
            f"security_dir {directory} belongs to another user (uid {info.st_uid}): the "
            "cluster's credentials would be readable by them; choose a directory of your own"
        )
    if info.st_mode & 0o077:
        directory.chmod(0o700)
    return str(directory)


def _security_options(security: Any, security_dir: str | os.PathLike | None) -> dict:
    """dask-jobqueue options for ``security`` (True: fresh credentials; False: plain TCP)."""
    if security is False or security is None:
        return {}
    if security is True:
        from mgtoolkit.cluster import _temporary_security

        security = _temporary_security()
    # dask-jobqueue writes in-memory credentials with tempfile (mode 0600) into this directory
    # and names those files in the job script; they live as long as the cluster object.
    return {
        "security": security,
        "protocol": "tls://",
        "shared_temp_directory": _private_dir(security_dir or DEFAULT_SECURITY_DIR),
    }


def _mpi_options(mpi_ranks: int, cores: int, memory: str, launcher: str | None, python: str):
    """The job of ``mpi_ranks`` MPI-rank workers: launcher prefix, totals, worker entry."""
    import sys

    from dask.utils import parse_bytes

    if isinstance(mpi_ranks, bool) or not isinstance(mpi_ranks, int) or mpi_ranks < 1:
        raise ValueError(f"mpi_ranks must be a positive integer (got {mpi_ranks!r})")
    if launcher in WORKER_LAUNCHERS and launcher not in MPI_LAUNCHERS:
        raise ValueError(
            f"worker_launcher={launcher!r} starts one task per job; with mpi_ranks use one of "
            f"{', '.join(MPI_LAUNCHERS)} or a command prefix of your own"
        )
    # The mpirun of the MPI that mpi4py uses (wheels install it beside the interpreter).
    beside = Path(python).parent / "mpirun"
    mpirun = str(beside) if python == sys.executable and beside.exists() else "mpirun"
    prefix = MPI_LAUNCHERS.get(launcher or "mpirun", launcher)
    return {
        "python": f"{prefix.format(ranks=mpi_ranks, cores=cores, mpirun=mpirun)} {python}",
        "processes": mpi_ranks,
        "cores": cores * mpi_ranks,
        "memory": str(parse_bytes(memory) * mpi_ranks),
        "worker_command": "mgtoolkit.launch.mpi_worker",
    }


def _common(
    *,
    cores: int,
    memory: str,
    gpus: int,
    walltime: str,
    account: str | None,
    queue: str | None,
    job_script_prologue: Sequence[str],
    worker_launcher: str | None,
    python: str | None,
    security: Any,
    security_dir: str | os.PathLike | None,
    mpi_ranks: int | None,
    kwargs: dict,
) -> dict:
    import sys

    if cores < 1 or gpus < 0:
        raise ValueError(f"cores must be ≥ 1 and gpus ≥ 0 (got cores={cores}, gpus={gpus})")
    if isinstance(job_script_prologue, str):
        raise ValueError(
            "job_script_prologue must be a list of shell lines, e.g. "
            "['module load cuda', 'source ~/venv/bin/activate'] (got one string)"
        )
    python = python or sys.executable
    mpi = {}
    if mpi_ranks is not None:
        mpi = _mpi_options(mpi_ranks, cores, memory, worker_launcher, python)
        kwargs.setdefault("log_directory", _private_dir(DEFAULT_JOB_LOG_DIR))
    elif worker_launcher is not None:
        prefix = WORKER_LAUNCHERS.get(worker_launcher, worker_launcher)
        python = f"{prefix.format(cores=cores)} {python}"
    worker_args = list(kwargs.pop("worker_extra_args", []))
    if gpus:
        worker_args += ["--resources", f"GPU={gpus}"]
    scheduler_options = {
        "dashboard_address": "127.0.0.1:0",
        **kwargs.pop("scheduler_options", {}),
    }
    return {
        **_security_options(security, security_dir),
        "scheduler_options": scheduler_options,
        "cores": cores,
        "processes": 1,
        "memory": memory,
        "walltime": walltime,
        "account": account,
        "queue": queue,
        "python": python,
        "job_script_prologue": [
            *job_script_prologue,
            "export DASK_DISTRIBUTED__WORKER__DAEMON=False",
            "export OMP_NUM_THREADS=" + str(cores),
        ],
        "worker_extra_args": worker_args,
        **mpi,
        **kwargs,
    }


def slurm_cluster(
    *,
    cores: int = 1,
    memory: str = "4GiB",
    gpus: int = 0,
    walltime: str = "01:00:00",
    account: str | None = None,
    queue: str | None = None,
    job_script_prologue: Sequence[str] = (),
    worker_launcher: str | None = None,
    python: str | None = None,
    security: Any = True,
    security_dir: str | os.PathLike | None = None,
    mpi_ranks: int | None = None,
    **kwargs,
):
    """A dask-jobqueue ``SLURMCluster`` whose jobs each hold one rank (or all, with MPI).

    Parameters
    ----------
    cores : int
        CPU cores per rank (= worker threads = torch threads).
    memory : str
        Memory per rank, e.g. "16GiB".
    gpus : int
        GPUs per rank (``--gres=gpu:N``); 0 for CPU ranks.
    walltime : str
        Job time limit, "HH:MM:SS".
    account, queue : str, optional
        Slurm account (``-A``) and partition (``-p``).
    job_script_prologue : list of str
        Shell lines run before the worker starts (``module load ...``, environment activation).
    worker_launcher : {"srun", "srun-pmix", "mpirun"} or str, optional
        Start the worker through this command prefix (``{cores}`` is substituted). With
        ``mpi_ranks``: ``"mpirun"`` (default) or ``"srun"`` (``--mpi=pmix``), see
        :data:`MPI_LAUNCHERS`, or a prefix of your own (``{ranks}``, ``{cores}`` substituted).
    python : str, optional
        Python executable on the compute nodes (default: this one).
    security : bool or distributed.security.Security
        True (default): TLS with fresh credentials for this cluster; a ``Security``: those
        (files the compute nodes can read); False: plain TCP, open to anyone who can reach
        the scheduler's port.
    security_dir : str or path, optional
        Directory, shared with the compute nodes, for the workers' copies of the fresh
        credentials (files 0600, directory 0700; default :data:`DEFAULT_SECURITY_DIR`).
    mpi_ranks : int, optional
        One job of this many workers that are the ranks of one MPI world (each with ``cores``
        cores, ``memory`` and ``gpus``): ``train_on_cluster(..., cluster=c)`` then runs torch
        rank r on MPI rank r, and sums and halo exchanges travel over MPI. The cluster scales
        to exactly this many workers (one job); its job log goes to ``log_directory`` (default
        :data:`DEFAULT_JOB_LOG_DIR`) and is quoted if the job ends before its workers join.
    **kwargs
        Passed to ``SLURMCluster`` (e.g. ``interface="ib0"``, ``log_directory``,
        ``job_extra_directives``).
    """
    from dask_jobqueue import SLURMCluster

    options = _common(
        cores=cores,
        memory=memory,
        gpus=gpus,
        walltime=walltime,
        account=account,
        queue=queue,
        job_script_prologue=job_script_prologue,
        worker_launcher=worker_launcher,
        python=python,
        security=security,
        security_dir=security_dir,
        mpi_ranks=mpi_ranks,
        kwargs=kwargs,
    )
    directives = list(options.pop("job_extra_directives", []))
    if mpi_ranks is None:
        gres = [f"--gres=gpu:{gpus}"] if gpus else []
        return SLURMCluster(**options, job_extra_directives=[*gres, *directives])
    from dask.utils import parse_bytes

    # N tasks of `cores` CPUs each (not one task of N·cores), memory per CPU (a job may span
    # nodes), GPUs per task.
    per_cpu_mib = -(-parse_bytes(memory) // (cores * 2**20))
    options["job_directives_skip"] = ["-n 1", "--cpus-per-task", "--mem="]
    directives = [
        f"--ntasks={mpi_ranks}",
        f"--cpus-per-task={cores}",
        f"--mem-per-cpu={per_cpu_mib}M",
        *([f"--gpus-per-task={gpus}"] if gpus else []),
        *directives,
    ]
    cluster_class = _mpi_class(SLURMCluster, job_ended=_slurm_ended)
    return cluster_class(mpi_ranks, **options, job_extra_directives=directives)


def pbs_cluster(
    *,
    cores: int = 1,
    memory: str = "4GiB",
    gpus: int = 0,
    walltime: str = "01:00:00",
    account: str | None = None,
    queue: str | None = None,
    job_script_prologue: Sequence[str] = (),
    worker_launcher: str | None = None,
    python: str | None = None,
    security: Any = True,
    security_dir: str | os.PathLike | None = None,
    mpi_ranks: int | None = None,
    **kwargs,
):
    """A dask-jobqueue ``PBSCluster`` (PBS Pro / OpenPBS) whose jobs each hold one rank.

    Parameters as for :func:`slurm_cluster`; GPUs are requested in the select statement
    (``-l select=1:ncpus=C:ngpus=G:mem=M``). With ``mpi_ranks`` = N, one chunk holds the N MPI
    ranks (``select=1:ncpus=N·C:mpiprocs=N:ompthreads=C:...``); pass ``resource_spec`` to
    spread them over nodes. A job that ends early is reported only when ``launch`` times out.
    """
    from dask.utils import parse_bytes
    from dask_jobqueue import PBSCluster

    options = _common(
        cores=cores,
        memory=memory,
        gpus=gpus,
        walltime=walltime,
        account=account,
        queue=queue,
        job_script_prologue=job_script_prologue,
        worker_launcher=worker_launcher,
        python=python,
        security=security,
        security_dir=security_dir,
        mpi_ranks=mpi_ranks,
        kwargs=kwargs,
    )
    ranks = mpi_ranks or 1
    if "resource_spec" not in options:
        mem_gb = max(1, parse_bytes(memory) * ranks // 2**30)
        gpu = f":ngpus={gpus * ranks}" if gpus else ""
        mpi = f":mpiprocs={ranks}:ompthreads={cores}" if mpi_ranks else ""
        options["resource_spec"] = f"select=1:ncpus={cores * ranks}{mpi}{gpu}:mem={mem_gb}GB"
    if mpi_ranks is None:
        return PBSCluster(**options)
    return _mpi_class(PBSCluster, job_ended=None)(mpi_ranks, **options)


def _mpi_class(base: type, *, job_ended) -> type:
    """``base`` (a dask-jobqueue cluster class) restricted to one job of MPI-rank workers.

    ``job_ended(job_id)`` gives the state in which a job ended, or None while its workers may
    still join; None where the batch system is not asked (PBS: a failed job shows only as the
    end of the wait).
    """

    class MPIJobCluster(base):
        """One batch job whose workers are the ranks of one MPI world (``mpi_ranks``)."""

        def __init__(self, mpi_ranks: int, **options):
            self.mpi_ranks = mpi_ranks
            super().__init__(**options)

        def scale(self, n=None, jobs=0, memory=None, cores=None):
            # Two jobs would be two MPI worlds: the ranks could no longer talk over MPI.
            if (
                memory is not None
                or cores is not None
                or jobs not in (0, 1)
                or (n not in (None, 0, self.mpi_ranks))
            ):
                raise ValueError(
                    f"this MPI cluster runs exactly {self.mpi_ranks} ranks in one job: use "
                    f"scale({self.mpi_ranks}) or scale(0); for another number of ranks, make a "
                    "new cluster with mpi_ranks=N"
                )
            return super().scale(n, jobs=jobs)

        def adapt(self, *args, **kwargs):
            raise ValueError(
                f"an MPI cluster cannot adapt: its {self.mpi_ranks} ranks form one MPI world "
                f"(scale({self.mpi_ranks}) starts them)"
            )

        def job_failure(self) -> str | None:
            """Why the job ended before its workers joined (its log quoted), or None."""
            if job_ended is None:
                return None
            for job in list(self.workers.values()):
                job_id = getattr(job, "job_id", None)
                if job_id is None:
                    continue
                state = job_ended(job_id)
                if state is None:
                    continue
                return (
                    f"the MPI cluster's batch job {job_id} ended ({state}) before its "
                    f"{self.mpi_ranks} workers joined. The end of its log:\n"
                    f"{_log_tail(self._job_kwargs.get('log_directory'), job_id)}"
                )
            return None

    MPIJobCluster.__name__ = MPIJobCluster.__qualname__ = f"MPI{base.__name__}"
    return MPIJobCluster


def _slurm_ended(job_id: str) -> str | None:
    """The state in which Slurm job ``job_id`` ended ("gone" once Slurm forgot it), or None
    while it may still run."""
    import subprocess

    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    state = out.stdout.strip().splitlines()[0] if out.stdout.strip() else "gone"
    return None if state in _SLURM_ALIVE else state


def _log_tail(directory: str | None, job_id: str, lines: int = 20) -> str:
    """The last lines of the job's .err and .out files in ``directory``."""
    if not directory:
        return "(no log_directory)"
    parts = []
    for path in sorted(Path(directory).glob(f"*{job_id}.*")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {path}\n" + "\n".join(text))
    return "\n".join(parts) or f"(no log of job {job_id} in {directory})"
