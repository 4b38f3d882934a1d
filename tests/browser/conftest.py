"""Real-browser harness: JupyterLab on 127.0.0.1 and headless Debian Chromium via Playwright.

No browser is downloaded: `.ci/setup.d/browser.sh` installs Debian's chromium, and Playwright
drives it through ``executable_path``. Console errors, failed requests and requests that leave
localhost are collected for the test to assert on; screenshots go to the test's tmp directory.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("MGTOOLKIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: JupyterLab user settings: no news/update checks (no outside requests) and every cell
#: rendered (no windowing), so outputs below the fold exist in the page.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    url: str
    root: Path
    process: subprocess.Popen
    log: Path


@pytest.fixture
def jupyter_lab(tmp_path):
    """JupyterLab serving ``tmp_path/lab`` on a free localhost port, token disabled.

    The server (and so every kernel) runs with MGTOOLKIT_SMALL=1: notebooks run at CI size.
    """
    root = tmp_path / "lab"
    root.mkdir()
    settings = tmp_path / "lab-settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port = free_port()
    workspaces = tmp_path / "lab-workspaces"  # not the user's saved layout (open tabs)
    workspaces.mkdir()
    env = {
        **os.environ,
        "MGTOOLKIT_SMALL": "1",
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(workspaces),
    }
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser",
        "--ip=127.0.0.1", f"--port={port}",
        "--IdentityProvider.token=", "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    log = tmp_path / "jupyter-lab.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer in 60 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
        yield Lab(url, root, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: Hosts a request may go to: this machine. Anything else (a CDN, a font or news server) would
#: fail or hang on an air-gapped HPC login node, even where it works on a machine with internet.
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def is_external(url: str) -> bool:
    """Whether a request for ``url`` leaves this machine (``data:``/``blob:``/``about:`` stay)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("data", "blob", "about", "chrome", "chrome-extension", "devtools"):
        return False
    return (parts.hostname or "") not in LOCAL_HOSTS


@dataclass
class Problems:
    """What the page reported: console errors, uncaught exceptions, failed requests, and every
    request to a host other than this machine (recorded whether or not it succeeded)."""

    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)


@pytest.fixture
def browser_page(tmp_path):
    """A headless Chromium page (tall viewport) and the problems it reports."""
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.fail(
            f"{CHROMIUM} not found: install Debian's chromium with `bash .ci/setup.d/browser.sh` "
            "(or point MGTOOLKIT_CHROMIUM at a Chromium binary)"
        )
    from playwright.sync_api import sync_playwright

    problems = Problems()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        page = browser.new_page(viewport={"width": 1500, "height": 5000})
        page.on(
            "console",
            lambda m: problems.console_errors.append(m.text) if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: problems.console_errors.append(f"uncaught: {e}"))
        page.context.on(  # the context: the page, its frames and workers, any popup
            "request",
            lambda r: problems.external_requests.append(r.url) if is_external(r.url) else None,
        )
        page.on(
            "requestfailed",
            lambda r: problems.failed_requests.append(f"{r.url}: {r.failure}"),
        )
        page.on(
            "response",
            lambda r: (
                problems.failed_requests.append(f"{r.url}: HTTP {r.status}")
                if r.status >= 400
                else None
            ),
        )
        try:
            yield page, problems
        finally:
            browser.close()
