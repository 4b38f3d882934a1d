"""dask-jobqueue clusters: SLURMCluster against the real single-node Slurm that
.ci/setup.d/slurm.sh starts; PBS job scripts as text (no PBS server can run here).

Both use TLS by default: the workers' credentials are files (0600) in a private directory
the compute nodes share; a client without them is refused. MPI clusters (``mpi_ranks``) run
their workers as the ranks of one real MPI world (Open MPI from wheels) inside one Slurm job."""

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
from mgtoolkit.launch.run import LaunchError, emit, launch, train_on_cluster
from mgtoolkit.rundir import read_checkpoint

#: Open MPI refuses to run as root without these; CI containers run as root.
MPI_AS_ROOT = "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"


def _check_credential_files(script: str, directory) -> None:
    """The job script names the workers' credentials: files 0600 in ``directory`` (0700)."""
    assert "--protocol tls://" in script
    assert os.stat(directory).st_mode & 0o777 == 0o700
    for option in ("--tls-ca-file", "--tls-cert", "--tls-key"):
        path = script.split(option + " ", 1)[1].split()[0]
        assert os.path.dirname(path) == str(directory), path
        assert os.stat(path).st_mode & 0o777 == 0o600, path


def _slurm_ready() -> None:
    if shutil.which("sbatch") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        pytest.fail("no Slurm here: run `bash .ci/setup.d/slurm.sh` (as root) first")


def test_slurm_cluster_ranks_through_srun_match_one_process(tmp_path):
    _slurm_ready()
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


# ---------------------------------------------------------------- MPI clusters


def _places() -> dict:
    """On each rank: torch rank vs MPI rank, and how sums and halos travel (one choice)."""
    from mgtoolkit import comm
    from mgtoolkit.launch.mpi_worker import mpi_place

    rank, size = comm.world()
    _, mpi_rank, mpi_size = mpi_place()
    # every rank's (torch rank, MPI rank) pair, summed into one table
    table = torch.zeros(size, 2, dtype=torch.int64)
    table[rank] = torch.tensor([rank, mpi_rank])
    return {
        "table": comm.all_reduce_sum(table).tolist(),
        "mpi_size": mpi_size,
        "transport": comm.transport(torch.zeros(3)),
    }


def _trained(run_dir) -> torch.Tensor:
    state = read_checkpoint(run_dir).model
    return torch.cat([v.flatten() for k, v in state.items() if v.is_floating_point()
                      and "running_" not in k])  # fmt: skip


def test_mpi_cluster_trains_slabs_over_mpi_and_matches_one_process(store2d, tmp_path):
    # One Slurm job runs `mpirun -n 2` of mgtoolkit's MPI worker entry; the two workers join
    # this process's scheduler. Torch rank r is MPI rank r, so gradient sums and the halo
    # exchanges of a field split in two slabs travel over MPI.
    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.train import (
        CycleConfig,
        DataConfig,
        OptimConfig,
        ParallelConfig,
        TrainConfig,
        train,
    )

    _slurm_ready()

    def config(spatial: int) -> TrainConfig:
        return TrainConfig(
            data=DataConfig(store=str(store2d), val_samples=4),
            model=UNetConfig(dim=2, depth=2, base_filters=4),
            cycle=CycleConfig(name="V", levels=2, epochs=2, patience=1, max_epochs=2),
            optim=OptimConfig(batch_size=8, lr=3e-3),
            parallel=ParallelConfig(spatial=spatial),
        )

    with slurm_cluster(
        mpi_ranks=2,
        cores=1,
        memory="2GiB",
        walltime="00:10:00",
        job_script_prologue=[MPI_AS_ROOT, f"export PYTHONPATH={os.path.dirname(__file__)}"],
        interface="lo",
        log_directory=str(tmp_path / "logs"),
        security_dir=tmp_path / "tls",
    ) as cluster:
        script = cluster.job_script()
        _check_credential_files(script, tmp_path / "tls")
        assert "#SBATCH --ntasks=2" in script and "#SBATCH -n 1" not in script
        entry = f"mpirun -n 2 --bind-to none {sys.executable} -m mgtoolkit.launch.mpi_worker"
        assert entry in script
        places = launch(_places, cluster=cluster, ranks=2, wait_s=180)
        seen = places.result(timeout=120)
        places.close()
        run = train_on_cluster(config(2), tmp_path / "mpi", cluster=cluster, ranks=2, wait_s=60)
        result = run.result(timeout=300)
        run.close()
        jobs = list(cluster.workers)
        with pytest.raises(ValueError, match=r"exactly 2 ranks in one job: use scale\(2\)"):
            cluster.scale(4)
    assert len(jobs) == 1  # one batch job holds both ranks
    assert seen == {"table": [[0, 0], [1, 1]], "mpi_size": 2, "transport": "mpi"}
    assert result["reason"] == "schedule complete"
    start = run.events[0]
    assert (start["world_size"], start["spatial"], start["transport"]) == (2, 2, "mpi")
    train(config(1), tmp_path / "one", progress=False)
    one, mpi = _trained(tmp_path / "one"), _trained(tmp_path / "mpi")
    # float32 with batch norm and Adam: rounding, amplified (docs/spatial.md)
    assert float((mpi - one).norm() / one.norm()) < 1e-3


def test_mpi_cluster_whose_job_fails_quotes_its_log(tmp_path):
    _slurm_ready()
    with slurm_cluster(
        mpi_ranks=2,
        python="/nonexistent/bin/python",  # mpirun is then looked up on PATH: not found
        job_script_prologue=[MPI_AS_ROOT, "echo job-started-here"],
        interface="lo",
        log_directory=str(tmp_path / "logs"),
        security_dir=tmp_path / "tls",
    ) as cluster:
        with pytest.raises(LaunchError) as failure:
            launch(print, cluster=cluster, ranks=2, wait_s=120)
    message = str(failure.value)
    assert "ended (FAILED) before its 2 workers joined" in message  # not the 120 s time-out
    assert "job-started-here" in message and "mpirun: command not found" in message


def test_mpi_cluster_job_scripts_and_bad_options(tmp_path):
    # PBS runs nowhere here: its MPI job script is checked as text.
    with pbs_cluster(mpi_ranks=4, cores=2, memory="8GiB", gpus=1, security_dir=tmp_path) as pbs:
        script = pbs.job_script()
        with pytest.raises(ValueError, match="cannot adapt"):
            pbs.adapt(minimum=1)
    assert "#PBS -l select=1:ncpus=8:mpiprocs=4:ompthreads=2:ngpus=4:mem=32GB" in script
    worker = next(s for s in script.splitlines() if "mgtoolkit.launch.mpi_worker" in s)
    assert worker.startswith(f"{os.path.dirname(sys.executable)}/mpirun -n 4 --bind-to none ")
    assert "--nthreads 2" in worker and "--resources GPU=1" in worker
    with slurm_cluster(
        mpi_ranks=3, cores=2, memory="3GiB", gpus=1, worker_launcher="srun", security=False
    ) as slurm:
        script = slurm.job_script()
    for line in (
        "#SBATCH --ntasks=3",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem-per-cpu=1536M",
        "#SBATCH --gpus-per-task=1",
        f"srun --ntasks=3 --cpus-per-task=2 --mpi=pmix {sys.executable} -m mgtoolkit.launch",
    ):
        assert line in script, line
    assert "--gres" not in script and "#SBATCH -n 1" not in script and "--mem=" not in script
    with pytest.raises(ValueError, match="mpi_ranks must be a positive integer"):
        slurm_cluster(mpi_ranks=0)
    with pytest.raises(ValueError, match="starts one task per job; with mpi_ranks use one of"):
        slurm_cluster(mpi_ranks=2, worker_launcher="srun-pmix")
