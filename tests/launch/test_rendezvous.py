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
    out = spawn(_parent_and_own_sockets, 2, timeout_s=120)
    for (rank, size), parent, own, ifname in out:
        assert size == 2
        # The parent hosts the store: on 127.0.0.1, nothing on every interface.
        assert any(ip == "127.0.0.1" for ip, _ in parent), parent
        assert not {ip for ip, _ in parent} & WILDCARD, parent
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
