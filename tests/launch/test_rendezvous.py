"""Rendezvous stores listen on the address the ranks use, never on every interface: 127.0.0.1
for single-node runs (local spawning, the local launcher). torch's store has no
authentication (docs/user-guide/hpc.md, "Security on a shared node")."""

from __future__ import annotations

import os

import psutil

from mgtoolkit.cluster import local_cluster
from mgtoolkit.comm.ranks import host_store
from mgtoolkit.launch import launch, spawn

WILDCARD = {"0.0.0.0", "::"}


def _listening(pid: int) -> set[tuple[str, int]]:
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(pid).net_connections("inet")
        if c.status == psutil.CONN_LISTEN
    }


def test_host_store_listens_on_the_given_address_only():
    from datetime import timedelta

    import torch.distributed as dist

    store = host_store("127.0.0.1", world_size=2, timeout_s=30)
    assert store.host == "127.0.0.1"
    assert ("127.0.0.1", store.port) in _listening(os.getpid())
    assert not any(port == store.port and ip in WILDCARD for ip, port in _listening(os.getpid()))
    peer = dist.TCPStore("127.0.0.1", store.port, is_master=False, timeout=timedelta(seconds=30))
    peer.set("key", "value")  # the store works through the handed-over socket
    assert store.get("key") == b"value"


def _parent_and_own_sockets():
    from mgtoolkit.comm import world

    return (
        world(),
        _listening(os.getppid()),
        _listening(os.getpid()),
        os.environ.get("GLOO_SOCKET_IFNAME"),
    )


def test_local_spawn_keeps_the_store_and_gloo_on_loopback():
    before = _listening(os.getpid())  # sockets of earlier tests in this process
    out = spawn(_parent_and_own_sockets, 2, timeout_s=120)
    for (rank, size), parent, own, ifname in out:
        assert size == 2
        # The parent hosts the store: on 127.0.0.1, nothing on every interface.
        opened = parent - before
        assert any(ip == "127.0.0.1" for ip, _ in opened), opened
        assert not {ip for ip, _ in opened} & WILDCARD, opened
        # Each rank's gloo pairs listen on the loopback interface.
        assert ifname is not None and {ip for ip, _ in own} <= {"127.0.0.1"}, (rank, own)


def _rank_sockets():
    from mgtoolkit.comm import world

    return world()[0], _listening(os.getpid())


def test_local_launcher_store_listens_on_loopback():
    with local_cluster(2, memory_limit="1GiB") as cluster:
        run = launch(_rank_sockets, cluster=cluster, ranks=2, wait_s=60)
        rank, sockets = run.result(timeout=120)  # rank 0's: it hosts the store
        run.close()
    # Rank 0's worker process: worker, its store and gloo, all on 127.0.0.1.
    assert rank == 0 and len(sockets) >= 2, sockets
    assert {ip for ip, _ in sockets} == {"127.0.0.1"}, sockets


def test_a_multi_node_rendezvous_on_a_loopback_name_is_refused_with_the_fix(monkeypatch):
    import shutil

    import pytest

    from mgtoolkit.comm.ranks import _network_address, init_from_environment

    assert _network_address("10.1.2.3") == "10.1.2.3"
    with pytest.raises(RuntimeError, match=r"resolves to 127\.0\.0\.1 .*Set MASTER_ADDR"):
        _network_address("localhost")
    if shutil.which("scontrol") is None:
        pytest.fail("no Slurm here: run `bash .ci/setup.d/slurm.sh` (as root) first")
    # Rank 0 of a two-node srun step whose first node's name resolves to loopback.
    for name in ("MASTER_ADDR", "TORCHELASTIC_RUN_ID", "RANK", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    monkeypatch.setenv("SLURM_STEP_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "localhost")
    with pytest.raises(RuntimeError, match=r"span several nodes.*MASTER_ADDR"):
        init_from_environment(launcher="slurm", timeout_s=5)
