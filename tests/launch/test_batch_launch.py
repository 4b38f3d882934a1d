"""Batch launches with real launchers: mpirun (Open MPI from wheels), srun (a real single-node
Slurm, started by .ci/setup.d/slurm.sh) and torchrun. Each must give the parameters of one
process; a launch where every rank is alone must fail with the fix in the message."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
import toy

from mgtoolkit.comm.ranks import WorldMismatchError, check_mpi_world, free_port

BIN = os.path.dirname(sys.executable)
TOY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toy.py")
ENV = {
    **os.environ,
    # Open MPI refuses root without these; CI containers run as root.
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMP_NUM_THREADS": "1",
}


@pytest.fixture(scope="module")
def reference():
    return toy.train(optimizer="adam")


def _slurm_ready() -> None:
    if shutil.which("srun") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        pytest.fail("no Slurm here: run `bash .ci/setup.d/slurm.sh` (as root) first")


def _launch(cmd: list[str], tmp_path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=180, **kw
    )


def _check(out, tmp_path, reference, source, size=2):
    assert out.returncode == 0, out.stderr[-3000:]
    result = torch.load(tmp_path / "out.pt", weights_only=False)
    assert (result["world"].size, result["world"].source) == (size, source)
    if source in ("mpi", "slurm"):
        # Rank 0 hosts the rendezvous store: on 127.0.0.1 only (all ranks on this node).
        assert result["listening"] == ["127.0.0.1"], result["listening"]
    for a, b in zip(reference, result["params"], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-8)


def test_mpirun_two_ranks_match_one_process(tmp_path, reference):
    cmd = [f"{BIN}/mpirun", "-n", "2", "--oversubscribe", sys.executable, TOY, "out.pt"]
    _check(_launch(cmd, tmp_path), tmp_path, reference, "mpi")


def test_torchrun_two_ranks_match_one_process(tmp_path, reference):
    port = str(free_port())  # torchrun's static rendezvous does not accept port 0
    cmd = [f"{BIN}/torchrun", "--nproc-per-node", "2", "--master-port", port, TOY, "out.pt"]
    _check(_launch(cmd, tmp_path), tmp_path, reference, "torchrun")


def test_srun_two_tasks_without_mpi_match_one_process(tmp_path, reference):
    _slurm_ready()
    cmd = ["srun", "-n", "2", "--mpi=none", sys.executable, TOY, "out.pt"]
    _check(_launch(cmd, tmp_path), tmp_path, reference, "slurm")


def test_srun_with_the_wrong_mpi_plugin_names_the_fix(tmp_path):
    # srun --mpi=pmi2 starts PMI-2 tasks, which Open MPI (from the wheel) cannot join: each
    # task's MPI world has size 1 although PMI_SIZE=2.
    _slurm_ready()
    cmd = ["srun", "-n", "2", "--mpi=pmi2", sys.executable, TOY, "out.pt"]
    out = _launch(cmd, tmp_path)
    assert out.returncode != 0
    assert "PMI_SIZE=2" in out.stderr and "world size of 1" in out.stderr
    assert "--mpi=pmix" in out.stderr and "--mpi=pmi2" in out.stderr
    assert not (tmp_path / "out.pt").exists()


def test_every_rank_alone_is_detected_from_the_launcher_variables(monkeypatch):
    # What each task of `srun -n 2` sees when forced to use MPI without an srun MPI plugin.
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    with pytest.raises(WorldMismatchError, match="SLURM_STEP_NUM_TASKS=2") as err:
        check_mpi_world(1, "Open MPI v5.0.11\n...")
    assert "every rank is running alone" in str(err.value) and "Open MPI v5.0.11" in str(err.value)
    check_mpi_world(2)  # consistent: no error
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    check_mpi_world(1)


def _join_fails(port: int) -> None:
    """In a fresh process: a connection failure inside init_process_group."""
    from datetime import timedelta

    import torch.distributed as dist

    from mgtoolkit.comm import ranks

    store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=60))

    def failing(*args, **kwargs):  # what gloo raises when connectFullMesh times out
        raise RuntimeError("Gloo connectFullMesh failed with ... (simulated)")

    dist.init_process_group = failing
    ranks.join(store, 0, 2, backend="gloo", timeout_s=60)


def test_a_failed_connection_names_the_rendezvous_address():
    from datetime import timedelta

    import torch.distributed as dist

    from mgtoolkit.launch import RankFailed, spawn

    master = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                           timeout=timedelta(seconds=60))  # fmt: skip
    with pytest.raises(RankFailed) as err:
        spawn(_join_fails, 1, master.port, process_group=False)
    msg = str(err.value)
    assert f"rank 0 of 2 could not start the gloo process group (rendezvous store at " \
        f"127.0.0.1:{master.port}): RuntimeError: Gloo connectFullMesh failed" in msg  # fmt: skip
    assert "GLOO_SOCKET_IFNAME" in msg
