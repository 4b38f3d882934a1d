"""Data-parallel primitives: serial no-ops, and real gloo process groups on local processes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from mgtoolkit import comm as par
from mgtoolkit.launch import RankFailed, spawn
from mgtoolkit.rundir import read_checkpoint

# ---------------------------------------------------------------- single process (no group)


def test_serial_primitives_are_identities():
    assert par.world() == (0, 1)
    assert par.local_slice(7) == slice(0, 7)
    t = torch.tensor([1.0, 2.0])
    assert par.all_reduce_mean(t) is t
    assert par.all_reduce_sum(t) is t
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert par.convert_sync_batchnorm(net) is net
    assert isinstance(net[1], nn.BatchNorm2d) and not isinstance(net[1], par.SyncBatchNorm)
    net(torch.randn(2, 1, 5, 5)).sum().backward()
    before = [p.grad.clone() for p in net.parameters()]
    par.average_gradients(net.parameters())
    par.broadcast_module(net)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, net.parameters(), strict=True))


def test_padded_order_cycles_the_order():
    order = np.array([5, 3, 9, 1, 7])
    assert par.padded_order(order, 1).tolist() == [5, 3, 9, 1, 7]
    assert par.padded_order(order, 5).tolist() == [5, 3, 9, 1, 7]
    assert par.padded_order(order, 4).tolist() == [5, 3, 9, 1, 7, 5, 3, 9]
    # a size larger than the order cycles it more than once
    assert par.padded_order([2, 4], 5).tolist() == [2, 4, 2, 4, 2]
    with pytest.raises(ValueError, match="empty"):
        par.padded_order([], 2)
    with pytest.raises(ValueError, match="positive integer"):
        par.padded_order([1], 0)


def test_local_slice_rejects_bad_batches():
    with pytest.raises(ValueError, match="positive integer"):
        par.local_slice(0)


# ---------------------------------------------------------------- real process groups
# Functions below run inside spawned ranks (module level, so they pickle by name).


def _slices_and_reductions():
    rank, size = par.world()
    sl = par.local_slice(12)
    try:
        par.local_slice(10)
        refusal = None
    except ValueError as exc:
        refusal = str(exc)
    mean = par.all_reduce_mean(torch.tensor([float(rank), 1.0]))
    total = par.all_reduce_sum(torch.tensor([float(rank)]))
    return (rank, size), sl, mean.tolist(), total.item(), refusal


def test_world_slices_and_reductions_on_three_ranks():
    out = spawn(_slices_and_reductions, 3)
    assert [o[0] for o in out] == [(0, 3), (1, 3), (2, 3)]
    assert [o[1] for o in out] == [slice(0, 4), slice(4, 8), slice(8, 12)]
    assert all(o[2] == [1.0, 1.0] and o[3] == 3.0 for o in out)
    # an indivisible global batch is refused (not split unevenly), naming the fix
    msg = out[0][4]
    assert "global batch 10 is not divisible by the world size 3" in msg
    assert "multiple of 3 (e.g. 9, 12)" in msg


def _grads_and_broadcast(seed_per_rank):
    rank, _ = par.world()
    torch.manual_seed(seed_per_rank + rank)  # deliberately different weights per rank
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    net[2].bias.requires_grad_(True)
    par.broadcast_module(net)
    weights = [p.detach().clone() for p in net.parameters()]
    x = torch.full((2, 3), float(rank + 1))
    net.train()
    loss = net[0](x).sum() * (rank + 1)  # only the first layer gets a gradient
    loss.backward()
    local = net[0].weight.grad.clone()
    par.average_gradients(net.parameters())
    return weights, local, net[0].weight.grad, net[2].weight.grad


def test_broadcast_and_gradient_average_on_two_ranks():
    (w0, g0, a0, none0), (w1, g1, a1, none1) = spawn(_grads_and_broadcast, 2, 10)
    assert all(torch.equal(a, b) for a, b in zip(w0, w1, strict=True))
    torch.testing.assert_close(a0, (g0 + g1) / 2)
    torch.testing.assert_close(a1, (g0 + g1) / 2)
    assert none0 is None and none1 is None  # no rank had a gradient: stays None


def _bn_forward_backward(x_full, dims, momentum, sync_even_alone):
    """Plain BN on the full batch vs SyncBatchNorm on this rank's part; returns both."""
    _, size = par.world()
    cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    torch.manual_seed(0)
    plain = cls(x_full.shape[1], momentum=momentum)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-1, 1)
    synced = par.convert_sync_batchnorm(nn.Sequential(cls(x_full.shape[1], momentum=momentum)))
    if sync_even_alone:  # world size 1: force the synchronized code path
        synced = par.batchnorm._convert(synced)
    assert isinstance(synced[0], par.SyncBatchNorm)
    synced[0].load_state_dict(plain.state_dict())
    w = torch.linspace(-1, 2, x_full[0].numel()).view_as(x_full[0])  # a non-trivial loss
    xs = x_full.clone().requires_grad_(True)
    (plain(xs) * w).square().mean().backward()
    sl = par.local_slice(x_full.shape[0])
    xl = x_full[sl].clone().requires_grad_(True)
    (synced(xl) * w).square().mean().backward()
    par.average_gradients(synced.parameters())
    # the input gradient of the local mean loss is size × the global one on this slice
    return (
        synced(xl).detach(),
        plain(x_full).detach()[sl],
        xl.grad * (1.0 / size),
        xs.grad[sl],
        [p.grad for p in synced.parameters()],
        [p.grad for p in plain.parameters()],
        synced[0].running_mean,
        plain.running_mean,
        synced[0].running_var,
        plain.running_var,
    )


# (p = 2 with 2D batch norm is covered end to end by tests/launch/test_integrity.py)
@pytest.mark.parametrize(("size", "dims", "momentum"), [(1, 1, 0.3), (4, 3, None)])
def test_sync_batchnorm_matches_plain_batchnorm_on_the_global_batch(size, dims, momentum):
    gen = torch.Generator().manual_seed(size)
    shape = {1: (8, 3), 2: (4, 2, 5, 6), 3: (8, 2, 3, 4, 5)}[dims]
    # large offset and scale: a sum-of-squares formula would lose digits here
    x = 100.0 + 3.0 * torch.randn(shape, generator=gen)
    for out in spawn(_bn_forward_backward, size, x, dims, momentum, size == 1):
        y, y_ref, gx, gx_ref, gp, gp_ref, rm, rm_ref, rv, rv_ref = out
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-6)
        for a, b in zip(gp, gp_ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rm, rm_ref)
        torch.testing.assert_close(rv, rv_ref)


def _bn_bfloat16(x_full):
    """Plain and synchronized batch norm (float32 weights) on bfloat16 activations, as under
    bf16 autocast; outputs and the gradients of a weighted sum."""
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(x_full.shape[1])
    synced = par.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(x_full.shape[1])))
    synced[0].load_state_dict(plain.state_dict())
    w = torch.linspace(-1, 2, x_full[0].numel()).view_as(x_full[0]).to(torch.bfloat16)
    (plain(x_full) * w).float().sum().backward()
    sl = par.local_slice(x_full.shape[0])
    (synced(x_full[sl]) * w).float().sum().backward()
    par.average_gradients(synced.parameters())
    size = par.world()[1]
    return (
        synced(x_full[sl]).float(),
        plain(x_full)[sl].float(),
        [p.grad * size for p in synced.parameters()],  # the sum over ranks of the local sums
        [p.grad for p in plain.parameters()],
    )


def test_sync_batchnorm_runs_on_bfloat16_activations():
    x = (1.0 + torch.randn(4, 3, 5, 6, generator=torch.Generator().manual_seed(0))).bfloat16()
    for y, y_ref, grads, grads_ref in spawn(_bn_bfloat16, 2, x):
        torch.testing.assert_close(y, y_ref, rtol=2e-2, atol=2e-2)
        for a, b in zip(grads, grads_ref, strict=True):
            torch.testing.assert_close(a, b, rtol=2e-2, atol=5e-2)


def _sums_over_ranks():
    """Sums of rank-dependent tensors of several sizes and dtypes; which transport ran."""
    rank, _ = par.world()
    gen = torch.Generator().manual_seed(rank)
    tensors = [
        torch.tensor(float(rank) + 0.1, dtype=torch.float64),  # 0-d
        torch.randn(3, 5, generator=gen, dtype=torch.float64),
        torch.randn(700_000, generator=gen),  # 2.8 MB: three rounds of 1 MiB slots
        torch.randn(64, generator=gen).to(torch.bfloat16),
        torch.zeros(0),
    ]
    sums = [par.all_reduce_sum(t) for t in tensors]
    return tensors, sums, par.shm._channel["channel"] is not None


@pytest.mark.parametrize("shared_memory", ["1", "0"])
def test_sums_over_ranks_on_one_machine(shared_memory, monkeypatch):
    # spawned ranks inherit the environment: "0" forces the process group's all-reduce
    monkeypatch.setenv("MGTOOLKIT_SHARED_MEMORY", shared_memory)
    out = spawn(_sums_over_ranks, 3)
    assert all(o[2] == (shared_memory == "1") for o in out)
    for i, first in enumerate(out[0][1]):
        # every rank holds the same bits (their parameters must never drift apart) ...
        assert all(torch.equal(first, o[1][i]) for o in out[1:])
        # ... which are the sum of the three ranks' tensors, accumulated in rank order
        expected = out[0][0][i] + out[1][0][i] + out[2][0][i]
        assert first.shape == expected.shape and first.dtype == expected.dtype
        tol = 4e-2 if first.dtype == torch.bfloat16 else 1e-6  # gloo may add in another order
        torch.testing.assert_close(first, expected, rtol=tol, atol=tol)
        if shared_memory == "1":
            assert torch.equal(first, expected)


def _leave_rank_zero_waiting():
    rank, _ = par.world()
    par.all_reduce_sum(torch.ones(1))  # both ranks join the shared-memory channel
    if rank == 1:
        os._exit(3)  # dies without taking part in the next sum
    par.all_reduce_sum(torch.ones(1))


def test_a_dead_peer_is_named_instead_of_waited_for():
    with pytest.raises(RankFailed, match=r"rank 1 \(pid \d+\) exited while rank 0 waited"):
        spawn(_leave_rank_zero_waiting, 2, timeout_s=60)


def _raise_on_rank_one():
    if par.world()[0] == 1:
        raise RuntimeError("boom on purpose")
    torch.distributed.barrier()


def test_a_failing_rank_is_named():
    with pytest.raises(RankFailed, match="rank 1: RuntimeError: boom on purpose"):
        spawn(_raise_on_rank_one, 2, timeout_s=30)


# ---------------------------------------------------------------- the real trainer, 2 ranks


def _trainer_params(run_dir) -> torch.Tensor:
    """All trainable parameters of a finished run, as one flat vector."""
    state = read_checkpoint(run_dir).model
    return torch.cat([v.flatten() for k, v in state.items() if v.is_floating_point()
                      and "running_" not in k])  # fmt: skip


def test_trainer_on_two_dask_ranks_and_under_mpirun_matches_one_process(
    store2d, dask_client, tmp_path
):
    import os
    import subprocess
    import sys

    from mgtoolkit.launch.run import train_on_cluster
    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.train import CycleConfig, DataConfig, OptimConfig, TrainConfig, to_toml, train

    # 20 training samples, global batch 8 → 3 batches per epoch (last one padded), 7 epochs:
    # 21 Adam steps of a U-Net with batch norm.
    config = TrainConfig(
        data=DataConfig(store=str(store2d), val_samples=4),
        model=UNetConfig(dim=2, depth=2, base_filters=4),
        cycle=CycleConfig(name="base", levels=1, epochs=7, patience=100, max_epochs=7),
        optim=OptimConfig(batch_size=8, lr=3e-3),
    )
    train(config, tmp_path / "p1", progress=False)
    run = train_on_cluster(config, tmp_path / "p2", cluster=dask_client, ranks=2)
    result = run.result(timeout=300)
    run.close()
    assert result["reason"] == "schedule complete"
    types = [e["type"] for e in run.events]  # streamed from rank 0 to this client
    assert types[0] == "run_start" and types[-1] == "run_end"
    assert types.count("batch_end") == 21 and run.events[0]["world_size"] == 2

    # The same training as a batch job: `mpirun -n 2 mgtoolkit train cfg.toml`
    (tmp_path / "cfg.toml").write_text(to_toml(config))
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    bin_dir = os.path.dirname(sys.executable)
    cmd = [f"{bin_dir}/mpirun", "-n", "2", "--oversubscribe", f"{bin_dir}/mgtoolkit", "train"]
    cmd += [str(tmp_path / "cfg.toml"), "--run-dir", str(tmp_path / "mpi"), "--no-progress"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("| step | level |") == 1  # only rank 0 prints the report
    events = [json.loads(line) for line in open(tmp_path / "mpi" / "events.jsonl")]
    assert events[0]["world_size"] == 2
    assert events[0]["transport"] == "mpi"  # MPI-launched ranks sum through MPI, not gloo
    assert run.events[0]["transport"] == "shm"  # dask ranks on one machine: shared memory

    p1 = _trainer_params(tmp_path / "p1")
    for other in ("p2", "mpi"):
        p2 = _trainer_params(tmp_path / other)
        # float32 over 21 steps: measured ~3e-6 relative over the whole parameter vector
        assert ((p1 - p2).norm() / p1.norm()).item() < 1e-5, other


def test_stop_on_two_dask_ranks_checkpoints_and_resumes_to_the_same_parameters(
    store2d, dask_client, tmp_path
):
    """Run.stop() of a training run: next batch boundary, checkpoint, "stopped", resumable."""
    import time

    from mgtoolkit.launch.run import train_on_cluster
    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.train import CycleConfig, DataConfig, OptimConfig, TrainConfig
    from mgtoolkit.widgets import RunMonitor

    # 20 training samples, global batch 8: 3 batches per epoch, 30 epochs = 90 Adam steps,
    # far more than run before the stop lands.
    config = TrainConfig(
        data=DataConfig(store=str(store2d), val_samples=4),
        model=UNetConfig(dim=2, depth=1, base_filters=4),
        cycle=CycleConfig(name="base", levels=1, epochs=30, patience=100, max_epochs=30),
        optim=OptimConfig(batch_size=8, lr=3e-3),
        validate_every=0,
    )
    run_dir = tmp_path / "stopped"
    run = train_on_cluster(config, run_dir, cluster=dask_client, ranks=2)
    monitor = RunMonitor().attach(run)
    while not any(e["type"] == "batch_end" for e in run.events):
        assert run.status == "running", run.result()
        time.sleep(0.05)
    run.stop()
    result = run.result(timeout=120)
    assert run.status == "stopped" and result["reason"] == "stopped"
    batches = [e for e in run.events if e["type"] == "batch_end"]
    assert 0 < len(batches) < 90  # stopped mid-run, at a batch boundary ...
    last = run.events[-2:]
    assert [e["type"] for e in last] == ["checkpoint", "run_end"]  # ... with a checkpoint
    assert (last[0]["epoch"], last[0]["batch"]) == (batches[-1]["epoch"], batches[-1]["batch"] + 1)
    assert (run_dir / "checkpoints" / "latest.pt").exists()
    assert not (run_dir / "STOP").exists()  # the trainer consumed the request
    monitor.update()
    assert monitor.finished and monitor.stopped and monitor.error is None
    assert "stopped on request" in monitor.status

    resumed = train_on_cluster(config, run_dir, cluster=dask_client, ranks=2)
    assert resumed.result(timeout=300)["reason"] == "schedule complete"
    assert resumed.status == "finished"
    assert resumed.events[0]["resumed"]
    assert len([e for e in resumed.events if e["type"] == "batch_end"]) == 90 - len(batches)

    uninterrupted = train_on_cluster(config, tmp_path / "uninterrupted", cluster=dask_client)
    assert uninterrupted.result(timeout=300)["reason"] == "schedule complete"
    # The resume restores parameters, optimizer state and batch position exactly: the same
    # bits as the run that was never stopped (1 vs 2 ranks would differ by rounding only).
    assert torch.equal(_trainer_params(tmp_path / "uninterrupted"), _trainer_params(run_dir))


def _mpirun(*args: str, env_extra: dict | None = None, ranks: int = 2):
    import subprocess
    import sys

    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    env.update(env_extra or {})
    bin_dir = os.path.dirname(sys.executable)
    cmd = [f"{bin_dir}/mpirun", "-n", str(ranks), "--oversubscribe", sys.executable, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("choice", ["auto", "gloo"])
def test_mpi_launched_ranks_sum_through_mpi(choice):
    script = os.path.join(os.path.dirname(__file__), "mpi_sums.py")
    out = _mpirun(script, env_extra={"MGTOOLKIT_TRANSPORT": choice})
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["size"] == 2 and report["group_released"]
    for name, r in report["sums"].items():
        assert r["same_on_all_ranks"] and r["error"] == 0.0, (name, r)
    expected = {"auto": "mpi", "gloo": "process-group"}[choice]
    for name in ("float64", "float32", "int64"):
        assert report["sums"][name]["transport"] == expected, name
    # bfloat16 has no MPI datatype here: it takes the next transport, as on one machine
    assert report["sums"]["bfloat16"]["transport"] == ("shm" if choice == "auto" else expected)


def _sum_with_mpi_requested():
    return par.all_reduce_sum(torch.ones(2))


def test_mpi_transport_requested_without_an_mpi_launch_is_refused(monkeypatch):
    monkeypatch.setenv("MGTOOLKIT_TRANSPORT", "mpi")
    with pytest.raises(RankFailed, match="not started by an MPI launcher"):
        spawn(_sum_with_mpi_requested, 2, timeout_s=60)


def test_segments_of_dead_runs_are_swept_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from mgtoolkit.comm.shm import SEGMENT_PREFIX, sweep_stale_segments

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f"{SEGMENT_PREFIX}{dead.stdout.strip()}-0123abcd"
    live = tmp_path / f"{SEGMENT_PREFIX}{os.getpid()}-4567ef01"
    other = tmp_path / "mgtoolkit-notes.txt"  # not a segment name of ours
    for p in (stale, live, other):
        p.write_bytes(b"\0" * 64)
    assert sweep_stale_segments(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and live.exists() and other.exists()
