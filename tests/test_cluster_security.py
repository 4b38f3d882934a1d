"""The toolkit's LocalCluster is for its owner only: TLS with per-cluster credentials, every
socket on 127.0.0.1.

The neighbour is a real second process. Run as root (CI), it runs as another uid (``nobody``,
through ``runuser``); elsewhere it runs as this user, still without the credentials. Either
way it must reach the scheduler's port and be refused there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time

import psutil
import pytest
from distributed import Client

from mgtoolkit.cluster import client_context, connect, local_cluster

#: The neighbour: three ways to talk to the scheduler without the cluster's credentials.
NEIGHBOUR = r"""
import json, os, socket, ssl, sys
from urllib.parse import urlparse
from distributed import Client
from distributed.security import Security

address = sys.argv[1]
host, port = urlparse(address).hostname, urlparse(address).port
out = {"uid": os.getuid(), "results": {}}

def attempt(name, fn):
    try:
        fn()
        out["results"][name] = "CONNECTED"
    except BaseException as exc:
        out["results"][name] = f"refused: {type(exc).__name__}: {str(exc)[:200]}"

def plain():  # dask's protocol without TLS, to the same port
    Client(address.replace("tls://", "tcp://"), timeout=3).close()

def own_credentials():  # TLS with a certificate of the neighbour's own
    Client(address, security=Security.temporary(), timeout=3).close()

def raw_tls(certificate):  # TLS that trusts any server: only the scheduler can refuse
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if certificate:  # a certificate of the neighbour's own
        import tempfile
        own = Security.temporary()
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
            f.write(own.tls_client_key + own.tls_client_cert)
            f.flush()
            context.load_cert_chain(f.name)
    raw = socket.create_connection((host, port), timeout=5)
    out["tcp_connected"] = True  # the port is reachable: only TLS can refuse
    with context.wrap_socket(raw) as tls:
        tls.sendall(b"\x00" * 8)
        if not tls.recv(1):
            raise ConnectionError("closed by the scheduler")

attempt("plain", plain)
attempt("own_credentials", own_credentials)
attempt("no_certificate", lambda: raw_tls(False))
attempt("own_certificate", lambda: raw_tls(True))
print("RESULT " + json.dumps(out), flush=True)
"""


def _neighbour_command() -> tuple[list[str], dict, str]:
    """How to start the neighbour: as ``nobody`` where possible, else as this user."""
    env = {**os.environ, "HOME": "/tmp"}
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return [sys.executable], env, "same uid"
    as_nobody = ["runuser", "-u", "nobody", "--"]
    # nobody may not reach this interpreter (a home directory of mode 0700): then a system
    # Python of the same version with this environment's packages on its path.
    candidates = [(sys.executable, {})]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if system := shutil.which(version, path="/usr/bin:/usr/local/bin"):
        candidates.append((system, {"PYTHONPATH": sysconfig.get_paths()["purelib"]}))
    for python, extra in candidates:
        probe = subprocess.run(
            [*as_nobody, "env", *(f"{k}={v}" for k, v in extra.items()), python, "-c",
             "import distributed, cryptography"],
            capture_output=True, env=env, timeout=60,
        )  # fmt: skip
        if probe.returncode == 0:
            return (
                [*as_nobody, "env", *(f"{k}={v}" for k, v in extra.items()), python],
                env,
                ("nobody"),
            )
    # No interpreter with distributed is readable by nobody (a checkout under a 0700 home):
    # the neighbour still runs as a separate process without the credentials, as this uid.
    return [sys.executable], env, "same uid"


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(1, memory_limit="1GiB") as cluster:
        yield cluster


def _listening(processes) -> set[tuple[str, int]]:
    found = set()
    for p in processes:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    found.add((c.laddr.ip, c.laddr.port))
        except psutil.NoSuchProcess:
            pass
    return found


def test_owner_is_served_and_a_neighbour_without_the_credentials_is_refused(cluster):
    assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
    with Client(cluster) as client:  # as the notebooks do: the credentials come along
        assert client.security.require_encryption
        assert client.submit(os.getuid, pure=False).result(timeout=30) == os.getuid()

        command, env, who = _neighbour_command()
        started = time.monotonic()
        done = subprocess.run(
            [*command, "-c", NEIGHBOUR, cluster.scheduler_address],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        assert lines, f"the neighbour did not report (rc {done.returncode}):\n{done.stderr}"
        report = json.loads(lines[-1].removeprefix("RESULT "))
        print(f"neighbour ({who}): {report}")
        if who == "nobody":
            assert report["uid"] != os.getuid()
            assert report["uid"] == int(
                subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout
            )
        assert report.get("tcp_connected"), report  # it reached the port ...
        for name, outcome in report["results"].items():  # ... and was refused every way
            assert outcome.startswith("refused"), (name, outcome)
        print(
            f"neighbour ran as {who} (uid {report['uid']}) for {time.monotonic() - started:.1f} s"
        )

        # The owner's client still works afterwards.
        assert client.submit(sum, [1, 2], pure=False).result(timeout=30) == 3


def test_scheduler_workers_and_dashboard_listen_on_loopback_only(cluster):
    # The scheduler and the nannies run in this process, beside sockets of other tests: look
    # at their own ports there, and at every socket of the worker processes.
    with Client(cluster) as client:
        worker_pids = list(client.run(os.getpid).values())
        info = client.scheduler_info()
    ports = {
        cluster.scheduler.http_server.port,  # the dashboard
        int(cluster.scheduler_address.rsplit(":", 1)[1]),
        *(int(w["nanny"].rsplit(":", 1)[1]) for w in info["workers"].values()),
    }
    here = {(ip, port) for ip, port in _listening([psutil.Process()]) if port in ports}
    assert {port for _, port in here} == ports, (here, ports)  # each one found
    workers = _listening([psutil.Process(pid) for pid in worker_pids])
    assert workers  # the worker's own server at least
    listening = here | workers
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening


def test_connect_by_address_finds_the_credentials_of_a_cluster_started_here(cluster):
    with connect(cluster.scheduler_address, timeout_s=10) as client:
        assert client.submit(abs, -2, pure=False).result(timeout=30) == 2


def test_embedded_cluster_of_client_context_is_secured():
    with client_context(workers=1, memory_limit="1GiB") as client:
        assert client.scheduler.address.startswith("tls://127.0.0.1:")
        assert client.security.require_encryption
        assert client.submit(abs, -3, pure=False).result(timeout=30) == 3
