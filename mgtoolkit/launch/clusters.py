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
  the dask scheduler, not by MPI.

Pass the cluster to :func:`~mgtoolkit.launch.run.launch` or
:func:`~mgtoolkit.launch.run.train_on_cluster` with ``ranks=N``: it scales the cluster to N jobs
and waits for them (``wait_s``) with a clear error if they do not start.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["WORKER_LAUNCHERS", "pbs_cluster", "slurm_cluster"]

#: Prefixes that start the worker inside a task of the job (None: run it directly).
WORKER_LAUNCHERS = {
    "srun": "srun --ntasks=1 --cpus-per-task={cores}",
    "srun-pmix": "srun --ntasks=1 --cpus-per-task={cores} --mpi=pmix",
    "mpirun": "mpirun -n 1",
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
    return {
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
        kwargs=kwargs,
    )
    if "resource_spec" not in options:
        mem_gb = max(1, parse_bytes(memory) // 2**30)
        gpu = f":ngpus={gpus}" if gpus else ""
        options["resource_spec"] = f"select=1:ncpus={cores}{gpu}:mem={mem_gb}GB"
    return PBSCluster(**options)
