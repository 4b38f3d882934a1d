"""OS errors as a user meets them: permissions, read-only and full disks, an unreachable
scheduler, paths that are files. Real files and processes; a small filesystem is mounted when
the test may (root), otherwise the full disk is simulated (said in the test)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from badcases import expect_error, run_cli

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
GEN = ["data", "generate", "--dim", "2", "--resolution", "16", "--samples", "2", "--no-progress"]


@contextlib.contextmanager
def small_fs(path: Path, size: str, *, readonly: bool = False):
    """A real tmpfs of ``size`` at ``path`` (needs root); skips the test where not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                          capture_output=True)  # fmt: skip
    if done.returncode:
        pytest.skip("cannot mount a small filesystem here (not root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_generate_out_on_read_only_filesystem(capsys, tmp_path):  # [T] read-only output
    with small_fs(tmp_path / "ro", "1m", readonly=True) as ro:
        expect_error(capsys, [*GEN, "--out", ro / "d.zarr"], r"read-only file system: .*ro")


def test_generate_into_a_full_filesystem(capsys, tmp_path, scheduler):  # disk full (real)
    with small_fs(tmp_path / "full", "1m") as fs:  # passes the size check, fills up writing
        argv = ["data", "generate", "--dim", "2", "--resolution", "64", "--samples", "110",
                "--out", fs / "d.zarr", "--scheduler", scheduler, "--no-progress"]  # fmt: skip
        line = expect_error(capsys, argv, r"no space left on the device")
        assert "rerun the same command to resume" in line


def test_train_run_dir_on_a_full_filesystem(capsys, tmp_path, store2d_fem):  # [T] disk full
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'[data]\nstore = "{store2d_fem}"\nval_samples = 4\n[model]\ndim = 2\ndepth = 1\n'
        "base_filters = 2\n[cycle]\nname = 'base'\nlevels = 1\nepochs = 1\n"
    )
    with small_fs(tmp_path / "full", "64k") as fs:
        with contextlib.suppress(OSError):  # fill it to the last block
            with open(fs / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        expect_error(capsys, ["train", cfg, "--run-dir", fs / "run", "--no-progress"],
                     r"no space left on the device")  # fmt: skip


def test_disk_full_simulated_message(capsys, tmp_path, monkeypatch, store2d_fem):
    """Simulated ENOSPC (for machines where no filesystem can be mounted): the write of the run
    directory's config raises the OSError the kernel would."""
    import mgtoolkit.rundir as rundir

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run"))

    monkeypatch.setattr(rundir, "atomic_write_text", full, raising=False)
    monkeypatch.setattr(Path, "write_text", full)
    cfg = tmp_path / "cfg.toml"
    cfg.write_bytes(
        f'[data]\nstore = "{store2d_fem}"\n[model]\ndim = 2\ndepth = 1\nbase_filters = 2\n'.encode()
    )
    expect_error(capsys, ["train", cfg, "--run-dir", tmp_path / "run"], r"no space left")


@contextlib.contextmanager
def locked_dir(path: Path):
    """A directory this process may not write: mode 0555, or for root the immutable flag."""
    path.mkdir(mode=0o555)
    if os.geteuid() != 0:
        yield path
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("root may write anywhere and chattr +i is not available here")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


@pytest.mark.parametrize("command", ["generate", "train", "scaling", "import"])
def test_output_not_writable(capsys, tmp_path, store2d_fem, files, command):  # [T] PermissionError
    with locked_dir(tmp_path / "locked") as locked:
        cfg = tmp_path / "cfg.toml"
        cfg.write_text(f'[data]\nstore = "{store2d_fem}"\n[model]\ndim = 2\ndepth = 1\n')
        argv = {
            "generate": [*GEN, "--out", locked / "d.zarr"],
            "train": ["train", cfg, "--run-dir", locked / "run", "--no-progress"],
            "scaling": ["scaling", "--out", locked / "s", "--steps", "1", "--warmup", "0",
                        "--ranks", "1", "--n", "8", "--mode", "strong"],
            "import": ["data", "import", tmp_path / "a.npy", "--out", locked / "d.zarr"],
        }[command]  # fmt: skip
        np.save(tmp_path / "a.npy", np.ones((1, 4, 4)))
        expect_error(capsys, argv, r"permission denied: .*locked")


@pytest.mark.parametrize("command", ["generate", "fem", "predict"])
def test_unreachable_scheduler(capsys, tmp_path, store2d, files, copy_store, monkeypatch, command):
    """[T] OSError traceback after 30 s. The connect timeout is cut to 2 s for the test."""
    import mgtoolkit.cluster as cluster

    monkeypatch.setitem(cluster.connect.__kwdefaults__, "timeout_s", 2)
    store = copy_store(store2d)
    address = "tcp://127.0.0.1:1"
    argv = {
        "generate": [*GEN, "--out", tmp_path / "d.zarr", "--scheduler", address],
        "fem": ["fem", "solve", store, "--level", "3", "--scheduler", address, "--no-progress"],
        "predict": ["predict", store, files["ckpt2d"], "--level", "3", "--scheduler", address],
    }[command]
    t0 = time.perf_counter()
    expect_error(capsys, argv, r"cannot reach the dask scheduler at tcp://127.0.0.1:1")
    assert time.perf_counter() - t0 < 20
    assert "u_fem" not in (store / "level3").iterdir().__repr__()


@pytest.mark.parametrize(
    "address",
    ["tcp://127.0.0.1:notaport", "tcp://h:0", "tcp://h:70000", "http://h:80", "", "a b:1",
     "x" * 10_000],
)  # fmt: skip
def test_malformed_scheduler_address(capsys, tmp_path, address):
    line = expect_error(
        capsys, [*GEN, "--out", tmp_path / "d.zarr", "--scheduler", address],
        "not a dask scheduler address",
    )  # fmt: skip
    assert len(line) < 400


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("file", r"exists and is not a zarr store"),
        ("inside_file", r"(Not a directory|not a directory|exists)"),
        ("dir_with_files", r"exists and is not a zarr store"),
    ],
)
def test_out_paths_that_are_not_stores(capsys, tmp_path, setup, match):
    f = tmp_path / "f"
    f.write_text("keep me")
    if setup == "file":
        out = f
    elif setup == "inside_file":
        out = f / "d.zarr"
    else:
        out = tmp_path / "dir"
        out.mkdir()
        (out / "notes").write_text("keep")
    expect_error(capsys, [*GEN, "--out", out], match)
    assert f.read_text() == "keep me"


def test_run_dir_is_a_file(capsys, tmp_path, store2d_fem):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'[data]\nstore = "{store2d_fem}"\n[model]\ndim = 2\ndepth = 1\n')
    (tmp_path / "run").write_text("x")
    expect_error(capsys, ["train", cfg, "--run-dir", tmp_path / "run", "--no-progress"], "run")


def test_debug_flag_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        from mgtoolkit.cli import main

        main(["--debug", "data", "info", str(tmp_path / "none.zarr")])


# Real subprocesses (each within 5 s): what a user sees in a terminal.


def _run(*argv, timeout=30):
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "mgtoolkit", *map(str, argv)],
                         capture_output=True, text=True, timeout=timeout, env=ENV)  # fmt: skip
    return out, time.perf_counter() - t0


def test_subprocess_one_line_error(tmp_path):
    out, seconds = _run("data", "info", tmp_path / "none.zarr")
    assert out.returncode == 2 and seconds < 5
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith("mgtoolkit: error: no dataset at")


def test_subprocess_debug_traceback(tmp_path):
    out, seconds = _run("--debug", "data", "info", tmp_path / "none.zarr")
    assert out.returncode != 0 and seconds < 5 and "Traceback" in out.stderr


def test_subprocess_alias_bomb_fast(tmp_path):  # [H] 1 GB RSS, MemoryError after 33 s
    from test_configs import BOMB

    (tmp_path / "bomb.yaml").write_text(BOMB)
    out, seconds = _run("train", tmp_path / "bomb.yaml")
    # the in-process case asserts < 1 s and < 20 MiB; here most of the time is importing torch
    assert out.returncode == 2 and seconds < 15, out.stderr
    assert "anchors and aliases" in out.stderr and len(out.stderr) < 400


def test_subprocess_plan_depth_40_fast():  # [H] 5.5 GB RSS
    out, seconds = _run("plan", "--depth", "40", "--resolution", "64")
    assert out.returncode == 2 and seconds < 15 and "depth" in out.stderr


def test_run_cli_helper_sees_keyboard_interrupt(capsys, monkeypatch):
    """Ctrl-C: one line and exit code 130 (the work done is kept by the resumable writers)."""
    import mgtoolkit.data as data

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "store_summary", interrupted)
    capsys.readouterr()
    assert run_cli(["data", "info", "x"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
