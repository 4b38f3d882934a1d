"""dask-jobqueue clusters: SLURMCluster against the real single-node Slurm that
.ci/setup.d/slurm.sh starts; PBS job scripts as text (no PBS server can run here).

Both use TLS by default: the workers' credentials are files (0600) in a private directory
the compute nodes share; a client without them is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import psutil
import pytest
import torch
import toy
from distributed import Client

from mgtoolkit.launch.clusters import pbs_cluster, slurm_cluster
from mgtoolkit.launch.run import emit, launch


def _check_credential_files(script: str, directory) -> None:
    """The job script names the workers' credentials: files 0600 in ``directory`` (0700)."""
    assert "--protocol tls://" in script
    assert os.stat(directory).st_mode & 0o777 == 0o700
    for option in ("--tls-ca-file", "--tls-cert", "--tls-key"):
        path = script.split(option + " ", 1)[1].split()[0]
        assert os.path.dirname(path) == str(directory), path
        assert os.stat(path).st_mode & 0o777 == 0o600, path


def test_slurm_cluster_ranks_through_srun_match_one_process(tmp_path):
    if shutil.which("sbatch") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        pytest.fail("no Slurm here: run `bash .ci/setup.d/slurm.sh` (as root) first")
    tls_dir = tmp_path / "tls"
    with slurm_cluster(
        cores=1,
        memory="2GiB",
        walltime="00:10:00",
        # workers unpickle functions by module name: make the helper module importable
        job_script_prologue=[
            "echo prologue-ran",
            f"export PYTHONPATH={os.path.dirname(toy.__file__)}",
        ],
        worker_launcher="srun",  # each worker is a Slurm task of its job
        interface="lo",
        log_directory=str(tmp_path),
        security_dir=tls_dir,
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        _check_credential_files(cluster.job_script(), tls_dir)
        dashboard = ("127.0.0.1", cluster.scheduler.http_server.port)
        listening = {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.Process().net_connections("inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert dashboard in listening and ("0.0.0.0", dashboard[1]) not in listening
        with pytest.raises(OSError):  # a client without the credentials is refused
            Client(address.replace("tls://", "tcp://"), timeout=3)
        run = launch(toy.train, cluster=cluster, ranks=2, wait_s=180, emit=emit)
        params = run.result(timeout=300)
        jobs = list(cluster.workers)
        run.close()
    assert len(jobs) == 2 and len(run.events) == 20
    for a, b in zip(toy.train(), params, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    logs = "".join(p.read_text() for p in tmp_path.glob("*.err")) + "".join(
        p.read_text() for p in tmp_path.glob("*.out")
    )
    assert "prologue-ran" in logs


def test_slurm_job_script_text():
    with slurm_cluster(
        cores=2, memory="8GiB", gpus=1, account="acct", queue="gpu", worker_launcher="srun-pmix"
    ) as cluster:
        script = cluster.job_script()
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH -A acct",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=8G",
        "#SBATCH --gres=gpu:1",
        "export DASK_DISTRIBUTED__WORKER__DAEMON=False",
        f"srun --ntasks=1 --cpus-per-task=2 --mpi=pmix {sys.executable} -m distributed.cli.dask",
        "--nthreads 2",
        "--resources GPU=1",
    ):
        assert line in script, line


def test_pbs_job_script_text(tmp_path):
    # No PBS server can run here (Debian ships no PBS/Torque packages), so the job script that
    # PBSCluster would qsub is checked as text, TLS credential files included.
    with pbs_cluster(
        cores=4,
        memory="16GiB",
        gpus=1,
        walltime="02:00:00",
        account="proj42",
        queue="gpu",
        job_script_prologue=["module load cuda/12", "source ~/venv/bin/activate"],
        worker_launcher="mpirun",
        security_dir=tmp_path / "tls",
    ) as cluster:
        script = cluster.job_script()
        assert cluster.scheduler_address.startswith("tls://")
        _check_credential_files(script, tmp_path / "tls")
    lines = script.splitlines()
    for line in (
        "#PBS -q gpu",
        "#PBS -A proj42",
        "#PBS -l select=1:ncpus=4:ngpus=1:mem=16GB",
        "#PBS -l walltime=02:00:00",
        "export DASK_DISTRIBUTED__WORKER__DAEMON=False",
    ):
        assert line in lines, line
    worker = next(i for i, s in enumerate(lines) if "distributed.cli.dask_worker" in s)
    assert lines.index("module load cuda/12") < worker  # the prologue runs first
    assert lines[worker].startswith(f"mpirun -n 1 {sys.executable} -m distributed.cli.dask_worker")
    assert "--nthreads 4" in lines[worker] and "--resources GPU=1" in lines[worker]


def test_prologue_must_be_a_list_of_lines():
    with pytest.raises(ValueError, match="list of shell lines"):
        slurm_cluster(job_script_prologue="module load cuda")


def test_plain_tcp_only_when_asked_and_credentials_never_in_a_shared_directory(tmp_path):
    with slurm_cluster(security=False) as cluster:
        script = cluster.job_script()
        assert cluster.scheduler_address.startswith("tcp://") and "--tls" not in script
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pbs_cluster(security_dir=shared) as cluster:  # loosened: made private again
        _check_credential_files(cluster.job_script(), shared)
    if os.getuid() == 0:  # a directory of another user is refused
        os.chown(shared, 65534, 65534)
        with pytest.raises(PermissionError, match="belongs to another user"):
            slurm_cluster(security_dir=shared)
