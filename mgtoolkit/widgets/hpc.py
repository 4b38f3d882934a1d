"""Slurm and PBS from a notebook: which scheduler is here, what its jobs are doing, batch jobs.

The dask-jobqueue clusters themselves come from :mod:`mgtoolkit.launch.clusters`; this module
adds what a notebook on a login node needs around them:

- :func:`detect_scheduler`: ``"slurm"`` where ``sinfo`` answers, ``"pbs"`` where ``qstat``
  does, else ``"local"`` (a LocalCluster on this machine);
- :class:`JobQueue`: the job ids of a cluster's workers (or of submitted batch jobs) and their
  queue state, printed while waiting for workers or shown live beside a monitor;
- :func:`batch_script` and :func:`submit`: a training job script for ``sbatch``/``qsub``, and
  its submission (the job id comes back);
- :func:`release` / :func:`release_when_done`: scale a jobqueue cluster to zero jobs once the
  training run has ended, so that no node is held after training.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

__all__ = [
    "SCHEDULERS",
    "JobQueue",
    "batch_script",
    "detect_scheduler",
    "job_ids",
    "queue_state",
    "release",
    "release_when_done",
    "submit",
]

SCHEDULERS = ("slurm", "pbs", "local")

#: The command that answers on each batch system (and what it runs to check).
_PROBES = {"slurm": ["sinfo", "-h", "-o", "%P"], "pbs": ["qstat", "-B"]}


def _answers(cmd: Sequence[str]) -> bool:
    if shutil.which(cmd[0]) is None:
        return False
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def detect_scheduler(choice: str | None = None) -> str:
    """``"slurm"``, ``"pbs"`` or ``"local"``.

    ``choice`` (or the environment variable ``MGTOOLKIT_SCHEDULER``) forces one; otherwise the
    first batch system whose command answers (``sinfo`` for Slurm, ``qstat -B`` for PBS) is
    used, and ``"local"`` where neither exists.
    """
    choice = choice or os.environ.get("MGTOOLKIT_SCHEDULER") or None
    if choice is not None:
        if choice not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS} (got {choice!r})")
        return choice
    for name, probe in _PROBES.items():
        if _answers(probe):
            return name
    return "local"


def job_ids(cluster) -> list[str]:
    """Batch job ids of a dask-jobqueue cluster's workers (submitted ones; [] for others)."""
    jobs = getattr(cluster, "workers", {}) or {}
    return [str(j.job_id) for j in list(jobs.values()) if getattr(j, "job_id", None)]


def _run(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def queue_state(scheduler: str, ids: Iterable[str]) -> dict[str, str]:
    """Queue state of each job id: e.g. ``"PENDING (Resources)"``, ``"RUNNING on node12"``,
    or ``"gone"`` once the job has left the queue (finished, cancelled)."""
    ids = [str(i) for i in ids]
    states = dict.fromkeys(ids, "gone")
    if not ids or scheduler == "local":
        return states
    if scheduler == "slurm":
        # All jobs, filtered here: `squeue -j` fails on ids that have already left the queue.
        for line in _run(["squeue", "-h", "-o", "%i|%T|%R"]).splitlines():
            job, state, where = [*line.split("|"), "", ""][:3]
            if job.strip() in states:
                where = where.strip()
                if state == "RUNNING":
                    states[job.strip()] = f"RUNNING on {where}"
                else:  # a pending job's reason comes in parentheses: "(Resources)"
                    reason = "" if where in ("", "(None)") else f" {where}"
                    states[job.strip()] = state + reason
        return states
    if scheduler == "pbs":
        names = {"Q": "QUEUED", "R": "RUNNING", "H": "HELD", "E": "EXITING", "W": "WAITING"}
        for line in _run(["qstat", *ids]).splitlines():
            cols = line.split()
            if len(cols) >= 5 and cols[0].split(".")[0] in {i.split(".")[0] for i in ids}:
                job = next(i for i in ids if i.split(".")[0] == cols[0].split(".")[0])
                if cols[4] not in ("C", "F", "X"):  # completed / finished / expired
                    states[job] = names.get(cols[4], cols[4])
        return states
    raise ValueError(f"scheduler must be one of {SCHEDULERS} (got {scheduler!r})")


class JobQueue:
    """The batch jobs behind a cluster (or submitted by hand) and their queue state.

    Parameters
    ----------
    scheduler : {"slurm", "pbs", "local"}
    cluster : dask-jobqueue cluster, optional
        Its workers' job ids are read each time (scaling adds and removes jobs).
    ids : list of str, optional
        Further job ids (e.g. from :func:`submit`).
    """

    def __init__(self, scheduler: str, *, cluster=None, ids: Iterable[str] = ()):
        self.scheduler = scheduler
        self.cluster = cluster
        self.ids = [str(i) for i in ids]
        self.seen: list[str] = []  # every job id ever shown (for checking that all are gone)

    def current_ids(self) -> list[str]:
        ids = list(self.ids)
        if self.cluster is not None:
            ids += [i for i in job_ids(self.cluster) if i not in ids]
        self.seen += [i for i in ids if i not in self.seen]
        return ids

    def states(self) -> dict[str, str]:
        return queue_state(self.scheduler, self.current_ids())

    def text(self) -> str:
        if self.scheduler == "local":
            return "no batch system: the workers are local processes"
        states = self.states()
        if not states:
            return f"{self.scheduler}: no jobs"
        return f"{self.scheduler}: " + ", ".join(f"job {j} {s}" for j, s in states.items())

    def active(self) -> list[str]:
        """Job ids still in the queue (pending or running), of all jobs ever seen."""
        self.current_ids()
        return [j for j, s in queue_state(self.scheduler, self.seen).items() if s != "gone"]

    def wait_for_workers(
        self, client, n: int, *, timeout: float = 600.0, poll_s: float = 2.0, out=print
    ) -> None:
        """Block until ``client`` has ``n`` workers, printing the jobs' queue state whenever it
        changes (pending jobs: their reason, e.g. ``Resources`` or ``Priority``)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            have = len(client.scheduler_info(n_workers=-1)["workers"])
            line = f"{have}/{n} workers · {self.text()}"
            if line != last:
                out(line)
                last = line
            if have >= n:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} workers did not start within {timeout:g} s: {line}")
            time.sleep(poll_s)

    def wait_gone(self, *, timeout: float = 120.0, poll_s: float = 1.0) -> None:
        """Block until every job ever seen has left the queue."""
        deadline = time.monotonic() + timeout
        while self.active():
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still queued after {timeout:g} s: {self.text()}")
            time.sleep(poll_s)

    def view(self, *, period_ms: int = 2000):
        """A line with the jobs' queue state, refreshed every ``period_ms`` while the kernel
        is idle."""
        import panel as pn

        from mgtoolkit.widgets._view import LiveText, live_layout

        line = LiveText(self.text())
        layout = live_layout(line.pane, sizing_mode="stretch_width")

        def tick():
            if not layout.drawn:
                return  # the page is still drawing it (see live_layout)
            try:
                line.set(self.text())
            except Exception as exc:  # a scheduler hiccup is shown, not raised
                line.set(f"queue state unavailable: {exc}")

        pn.state.add_periodic_callback(tick, period=period_ms)
        return layout


def _mem_mb(memory: str) -> int:
    from dask.utils import parse_bytes

    return max(1, parse_bytes(memory) // 2**20)


def batch_script(
    scheduler: str,
    command: Sequence[str],
    *,
    ranks: int = 1,
    cores: int = 1,
    memory: str = "4GiB",
    gpus: int = 0,
    walltime: str = "01:00:00",
    job_name: str = "mgtoolkit-train",
    account: str | None = None,
    queue: str | None = None,
    prologue: Sequence[str] = (),
    log_directory: str | Path | None = None,
    workdir: str | Path | None = None,
) -> str:
    """A job script that runs ``command`` as ``ranks`` tasks (one rank each).

    Slurm: ``srun`` starts the tasks (ranks from ``SLURM_PROCID``); PBS: ``mpirun -n ranks``
    (ranks from MPI). ``memory`` is per rank; ``prologue`` lines (``module load``, environment
    activation) run before the command.
    """
    cmd = shlex.join([str(c) for c in command])
    log = Path(log_directory) if log_directory is not None else None
    lines = ["#!/usr/bin/env bash"]
    if scheduler == "slurm":
        lines += [
            f"#SBATCH --job-name={job_name}",
            f"#SBATCH --ntasks={ranks}",
            f"#SBATCH --cpus-per-task={cores}",
            f"#SBATCH --mem-per-cpu={max(1, _mem_mb(memory) // cores)}M",
            f"#SBATCH --time={walltime}",
        ]
        if gpus:
            lines.append(f"#SBATCH --gpus-per-task={gpus}")
        if account:
            lines.append(f"#SBATCH --account={account}")
        if queue:
            lines.append(f"#SBATCH --partition={queue}")
        if log is not None:
            lines.append(f"#SBATCH --output={log / '%x-%j.out'}")
        if workdir is not None:
            lines.append(f"#SBATCH --chdir={workdir}")
        launcher = "srun"
    elif scheduler == "pbs":
        gpu = f":ngpus={gpus}" if gpus else ""
        mem_gb = max(1, _mem_mb(memory) // 1024)
        lines += [
            f"#PBS -N {job_name}",
            f"#PBS -l select={ranks}:ncpus={cores}:mpiprocs=1{gpu}:mem={mem_gb}GB",
            f"#PBS -l walltime={walltime}",
            "#PBS -j oe",
        ]
        if account:
            lines.append(f"#PBS -A {account}")
        if queue:
            lines.append(f"#PBS -q {queue}")
        if log is not None:
            lines.append(f"#PBS -o {log}/")
        launcher = f"mpirun -n {ranks}"
    else:
        raise ValueError(f"batch scripts are for 'slurm' or 'pbs' (got {scheduler!r})")
    lines.append("set -eo pipefail")
    if scheduler == "pbs":
        lines.append(f"cd {shlex.quote(str(workdir))}" if workdir else 'cd "${PBS_O_WORKDIR:-.}"')
    lines += [*prologue, f"export OMP_NUM_THREADS={cores}", f"{launcher} {cmd}", ""]
    return "\n".join(lines)


def submit(script: str | Path, scheduler: str, *, cwd: str | Path | None = None) -> str:
    """Submit a job script with ``sbatch`` (Slurm) or ``qsub`` (PBS); returns the job id."""
    if scheduler == "slurm":
        chdir = [] if cwd is None else [f"--chdir={cwd}"]
        out = _run(["sbatch", "--parsable", *chdir, str(script)])
        return out.strip().split(";")[0]
    if scheduler == "pbs":
        return _run(["qsub", str(script)]).strip()
    raise ValueError(f"submit needs 'slurm' or 'pbs' (got {scheduler!r})")


def release(cluster, *, timeout: float = 60.0) -> None:
    """Give the cluster's batch jobs back (``scale(0)``: the jobs are cancelled) and wait until
    dask has dropped them. The scheduler stays up, so the notebook's client stays usable; scale
    up again for another run, or ``cluster.close()`` when done."""
    cluster.scale(0)
    deadline = time.monotonic() + timeout
    while getattr(cluster, "workers", None) and time.monotonic() < deadline:
        time.sleep(0.2)


def release_when_done(
    run, cluster, *, poll_s: float = 1.0, on_release: Callable[[str], None] | None = None
) -> threading.Thread:
    """Release the cluster's jobs as soon as ``run`` (a :class:`~mgtoolkit.launch.run.Run`) has
    ended — finished, stopped or failed — without a cell that waits for it.

    A background thread polls ``run.status``; ``on_release(status)`` is called after the
    release (from that thread: only set text there).
    """

    def watch() -> None:
        while run.status == "running":
            time.sleep(poll_s)
        status = run.status  # an ended Run keeps its outcome on the client (Run._finished)
        release(cluster)
        if on_release is not None:
            on_release(status)

    thread = threading.Thread(target=watch, name="mgtoolkit-release", daemon=True)
    thread.start()
    return thread
