"""Launching on dask clusters: real LocalClusters, real worker processes, real gloo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import toy
from distributed import Client

from mgtoolkit.cluster import local_cluster
from mgtoolkit.comm.ranks import free_port
from mgtoolkit.launch.run import LaunchError, RunStopped, WorkerLost, emit, launch


def _close(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(y, x, rtol=1e-9, atol=1e-12)


def test_launch_matches_one_process_and_streams_events_while_running(dask_client):
    run = launch(toy.train, cluster=dask_client, emit=emit, step_sleep=0.1)
    assert run.status == "running" and len(run.workers) == 2
    counts = []  # events received, sampled while the run is going on
    while run.status == "running":
        counts.append(len(run.events))
        time.sleep(0.05)
    params = run.result()
    run.close()
    assert run.status == "finished"
    assert any(0 < n < 20 for n in counts), counts  # events arrived while it ran
    assert [e["step"] for e in run.events] == list(range(1, 21))
    assert all(e["type"] == "batch_end" and e["run"] == "toy" for e in run.events)
    assert run.events[0]["worker"] == run.workers[0]  # streamed by rank 0
    _close(toy.train(), params)


def test_stop_ends_every_rank(dask_client):
    run = launch(toy.train, cluster=dask_client, emit=emit, steps=10_000, step_sleep=0.05)
    while not run.events:
        time.sleep(0.1)
    run.stop()
    with pytest.raises(RunStopped):
        run.result(timeout=60)
    assert run.status == "stopped"
    assert len(run.events) < 10_000
    run.close()
    # both workers are free again (a rank left waiting in a collective was restarted)
    again = launch(toy.train, cluster=dask_client, steps=2, wait_s=60)
    assert len(again.result(timeout=120)) == len(list(toy.make_model().parameters()))
    again.close()


def test_fewer_workers_than_ranks_times_out_clearly(dask_client):
    n = len(dask_client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.workers)))
    with pytest.raises(
        LaunchError, match=rf"asked for {n + 1} ranks but only {n} dask worker\(s\) joined"
    ):
        launch(toy.train, cluster=dask_client, ranks=n + 1, wait_s=2)


def test_unreachable_scheduler_is_named():
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(LaunchError, match=f"cannot reach the dask scheduler at {address}"):
        launch(toy.train, cluster=address, wait_s=2)


def _credential_files(security, directory) -> list[str]:
    """dask-worker options naming files (0600) with a cluster's TLS credentials."""
    options = []
    for option, pem in (("--tls-ca-file", security.tls_ca_file),
                        ("--tls-cert", security.tls_worker_cert),
                        ("--tls-key", security.tls_worker_key)):  # fmt: skip
        path = directory / option.removeprefix("--")
        path.touch(mode=0o600)
        path.write_text(pem)
        options += [option, str(path)]
    return options


def test_mixed_cpu_and_gpu_workers_are_refused(tmp_path):
    # A second worker declares a GPU (as dask-jobqueue GPU workers do with --resources GPU=1).
    # The toolkit's cluster speaks TLS: the worker needs the cluster's credentials.
    with local_cluster(1) as cluster:
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
             "--nthreads", "1", "--no-nanny", "--resources", "GPU=1", "--no-dashboard",
             *_credential_files(cluster.security, tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            with pytest.raises(LaunchError, match="mixed workers") as err:
                # the address, not the cluster object: launch() would scale a cluster object
                launch(toy.train, cluster=cluster.scheduler_address, ranks=2, wait_s=60)
            assert "have GPUs but" in str(err.value) and "backend='gloo'" in str(err.value)
        finally:
            worker.terminate()
            worker.wait(timeout=30)


def _worker_pid(dask_worker=None) -> int:
    return os.getpid()


def test_killed_worker_is_named_and_the_run_resumes_to_the_same_parameters(tmp_path):
    run_dir = str(tmp_path / "run")
    kw = {"run_dir": run_dir, "checkpoint_every": 5, "emit": emit}
    run = launch(toy.train, ranks=2, step_sleep=0.25, **kw)
    while not any(e["type"] == "checkpoint" and e["step"] >= 5 for e in run.events):
        assert run.status == "running", run.result()
        time.sleep(0.05)
    victim = run.workers[1]
    pid = run.client.run(_worker_pid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerLost, match=f"worker {victim} \\(rank 1\\) died") as err:
        run.result(timeout=60)
    assert "step-5.pt" in str(err.value) or "step-10.pt" in str(err.value)
    assert run.status == "lost"
    run.close()
    steps_done = max(int(f[5:-3]) for f in os.listdir(os.path.join(run_dir, "checkpoints")))
    assert 5 <= steps_done < 20  # interrupted mid-run

    resumed = launch(toy.train, ranks=2, **kw)  # a new cluster
    params = resumed.result(timeout=120)
    resumed.close()
    assert resumed.events[0]["step"] == steps_done + 1  # continued, did not restart
    _close(toy.train(), params)


def test_an_ended_run_keeps_its_outcome_after_its_workers_are_gone():
    # Jobs are released (workers retired) when training ends: the run must stay "finished"
    # with its result, not turn "running" again because its futures lost their workers.
    with local_cluster(2) as cluster, Client(cluster) as client:
        run = launch(toy.train, cluster=client, steps=2, wait_s=60)
        params = run.result(timeout=120)
        assert run.status == "finished"
        cluster.scale(0)
        deadline = time.monotonic() + 60
        while client.scheduler_info()["workers"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not client.scheduler_info()["workers"]
        assert run.status == "finished"
        _close(params, run.result(timeout=5))
        run.close()
