"""Batch-system helpers: detection, queue state, job scripts (PBS as text: no PBS on Debian).

Slurm itself is exercised for real by tests/browser (notebook 03 against this machine's Slurm).
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from mgtoolkit.widgets import hpc


def fake_command(folder, name, script):
    path = folder / name
    path.write_text("#!/bin/bash\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_detection_prefers_the_choice_then_slurm_then_pbs(tmp_path, monkeypatch):
    monkeypatch.delenv("MGTOOLKIT_SCHEDULER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # neither sinfo nor qstat
    assert hpc.detect_scheduler() == "local"
    fake_command(tmp_path, "qstat", "exit 0\n")
    assert hpc.detect_scheduler() == "pbs"
    fake_command(tmp_path, "sinfo", "exit 1\n")  # installed but not answering: not used
    assert hpc.detect_scheduler() == "pbs"
    assert hpc.detect_scheduler("local") == "local"
    monkeypatch.setenv("MGTOOLKIT_SCHEDULER", "slurm")
    assert hpc.detect_scheduler() == "slurm"
    with pytest.raises(ValueError, match="slurm"):
        hpc.detect_scheduler("lsf")


def test_pbs_queue_state_from_qstat(tmp_path, monkeypatch):
    fake_command(
        tmp_path,
        "qstat",
        'cat <<"OUT"\n'
        "Job id            Name             User              Time Use S Queue\n"
        "----------------  ---------------- ----------------  -------- - -----\n"
        "101.pbs01         dask-worker      alice             00:00:01 R workq\n"
        "102.pbs01         dask-worker      alice                    0 Q workq\n"
        "103.pbs01         train            alice             00:10:00 F workq\n"
        "OUT\n",
    )
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    states = hpc.queue_state("pbs", ["101.pbs01", "102.pbs01", "103.pbs01", "104.pbs01"])
    assert states == {
        "101.pbs01": "RUNNING",
        "102.pbs01": "QUEUED",
        "103.pbs01": "gone",
        "104.pbs01": "gone",
    }
    q = hpc.JobQueue("pbs", ids=["101.pbs01", "103.pbs01"])
    assert q.text() == "pbs: job 101.pbs01 RUNNING, job 103.pbs01 gone"
    assert q.active() == ["101.pbs01"]


def test_batch_scripts(tmp_path):
    cmd = ["python", "-m", "mgtoolkit", "train", "my config.toml", "--run-dir", "runs/b"]
    prologue = ["module load python", "source venv/bin/activate"]
    slurm = hpc.batch_script(
        "slurm", cmd, ranks=4, cores=8, memory="32GiB", gpus=1, account="proj", queue="gpu",
        prologue=prologue, log_directory=tmp_path, job_name="t",
    )  # fmt: skip
    for line in (
        "#SBATCH --ntasks=4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem-per-cpu=4096M",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --account=proj",
        "#SBATCH --partition=gpu",
        f"#SBATCH --output={tmp_path}/%x-%j.out",
        "srun python -m mgtoolkit train 'my config.toml' --run-dir runs/b",
    ):
        assert line in slurm.splitlines()
    assert slurm.index("module load python") < slurm.index("srun")
    pbs = hpc.batch_script("pbs", cmd, ranks=2, cores=4, memory="8GiB", gpus=2, queue="q")
    assert "#PBS -l select=2:ncpus=4:mpiprocs=1:ngpus=2:mem=8GB" in pbs.splitlines()
    assert "#PBS -q q" in pbs and 'cd "${PBS_O_WORKDIR:-.}"' in pbs
    assert pbs.rstrip().endswith("mpirun -n 2 python -m mgtoolkit train 'my config.toml' "
                                 "--run-dir runs/b")  # fmt: skip
    # both scripts are valid bash
    for text in (slurm, pbs):
        script = tmp_path / "job.sh"
        script.write_text(text)
        subprocess.run(["bash", "-n", str(script)], check=True)
    with pytest.raises(ValueError, match="slurm"):
        hpc.batch_script("local", cmd)
