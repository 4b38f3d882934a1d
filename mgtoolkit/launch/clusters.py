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

__all__ = ["DEFAULT_SECURITY_DIR", "WORKER_LAUNCHERS", "pbs_cluster", "slurm_cluster"]

#: Where the workers' TLS credentials are written unless ``security_dir`` says otherwise
#: (the home directory is usually shared with the compute nodes).
DEFAULT_SECURITY_DIR = "~/.mgtoolkit/dask-tls"

#: Prefixes that start the worker inside a task of the job (None: run it directly).
WORKER_LAUNCHERS = {
    "srun": "srun --ntasks=1 --cpus-per-task={cores}",
    "srun-pmix": "srun --ntasks=1 --cpus-per-task={cores} --mpi=pmix",
    "mpirun": "mpirun -n 1",
}


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
    if worker_launcher is not None:
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
    **kwargs,
):
    """A dask-jobqueue ``SLURMCluster`` whose jobs each hold one rank.

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
        Start the worker through this command prefix (``{cores}`` is substituted).
    python : str, optional
        Python executable on the compute nodes (default: this one).
    security : bool or distributed.security.Security
        True (default): TLS with fresh credentials for this cluster; a ``Security``: those
        (files the compute nodes can read); False: plain TCP, open to anyone who can reach
        the scheduler's port.
    security_dir : str or path, optional
        Directory, shared with the compute nodes, for the workers' copies of the fresh
        credentials (files 0600, directory 0700; default :data:`DEFAULT_SECURITY_DIR`).
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
        kwargs=kwargs,
    )
    if gpus:
        options["job_extra_directives"] = [
            *options.get("job_extra_directives", []),
            f"--gres=gpu:{gpus}",
        ]
    return SLURMCluster(**options)


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
    **kwargs,
):
    """A dask-jobqueue ``PBSCluster`` (PBS Pro / OpenPBS) whose jobs each hold one rank.

    Parameters as for :func:`slurm_cluster`; GPUs are requested in the select statement
    (``-l select=1:ncpus=C:ngpus=G:mem=M``).
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
        kwargs=kwargs,
    )
    if "resource_spec" not in options:
        mem_gb = max(1, parse_bytes(memory) // 2**30)
        gpu = f":ngpus={gpus}" if gpus else ""
        options["resource_spec"] = f"select=1:ncpus={cores}{gpu}:mem={mem_gb}GB"
    return PBSCluster(**options)
