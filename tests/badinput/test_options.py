"""Options out of range: refused before anything is allocated, started or written."""

from __future__ import annotations

import time

import pytest
from badcases import expect_error

GEN = ["data", "generate", "--dim", "2", "--resolution", "16", "--samples", "2"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (["--dim", "4"], "dim must be 2 or 3"),
        (["--dim", "1"], "dim must be 2 or 3"),
        (["--dim", "x"], "--dim"),
        (["--resolution", "24"], "power of two"),
        (["--resolution", "0"], "--resolution must be a positive"),
        (["--resolution", "-16"], "--resolution must be a positive"),
        (["--resolution", "1048576"], r"chunk files|GiB free"),  # [H] 2^20 cells per side
        (["--resolution", str(2**40)], r"chunk files|GiB free"),
        (["--resolution", "1e3"], "--resolution"),
        (["--samples", "0"], "--samples must be a positive"),
        (["--samples", "-2"], "--samples must be a positive"),
        (["--samples", str(10**12)], r"chunk files|GiB free"),
        (["--levels", "0"], "--levels must be a positive"),
        (["--levels", "9"], "use at most 4 levels"),
        (["--seed", "-5"], "--seed must be a non-negative"),  # [C~] option named
        (["--family", "nope"], "unknown coefficient family"),
        (["--family", "x" * 100_000], "unknown coefficient family"),
    ],
)
def test_generate_options(capsys, tmp_path, change, match):
    out = tmp_path / "d.zarr"
    argv = [*GEN, "--out", out, "--no-progress", *change]
    t0 = time.perf_counter()
    line = expect_error(capsys, argv, match, seconds=30)
    assert time.perf_counter() - t0 < 20
    assert len(line) < 700  # a huge value is never echoed whole
    assert not out.exists()
    assert not list(tmp_path.glob(".*creating*"))


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--depth", "40"], "depth"),  # [H]
        (["--depth", "13"], "depth"),
        (["--depth", "0"], "depth must be an integer"),
        (["--resolution", str(2**40)], "beyond what the planner"),  # [T] 2 PB
        (["--resolution", "24"], "power of two"),
        (["--resolution", "0"], "power of two"),
        (["--memory", "0"], "--memory must be a positive"),  # [S]
        (["--memory", "-1"], "--memory must be a positive"),
        (["--memory", "nan"], "--memory must be a positive"),
        (["--memory", "inf"], "--memory must be a positive"),
        (["--batch", "0"], "batch must be a positive"),
        (["--ranks", "0"], "ranks must be a positive"),
        (["--levels", "0"], "levels must be a positive"),
        (["--levels", "9"], "at most 6 levels"),
        (["--workers", "0"], "workers must be a positive"),
        (["--precision", "fp8"], "precision must be one of"),
        (["--phases", "sing"], "phases must be among"),
        (["--dim", "4"], "dim must be 2 or 3"),
        (["--base-filters", "0"], "base_filters must be an integer"),
        (["--base-filters", "100000"], "base_filters must be at most"),
        (["--convs-per-block", "0"], "convs_per_block"),
        (["--depth", "10", "--base-filters", "64"], "filters"),
    ],
)
def test_plan_options(capsys, argv, match):
    base = ["plan", "--dim", "2"] if "--dim" not in argv else ["plan"]
    if "--resolution" not in argv:
        base += ["--resolution", "64"]
    t0 = time.perf_counter()
    expect_error(capsys, base + argv, match, seconds=30)
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--rtol", "0"], "--rtol must be > 0"),
        (["--rtol", "-1"], "--rtol must be > 0"),
        (["--rtol", "nan"], "--rtol must be > 0"),
        (["--maxiter", "0"], "--maxiter"),
        (["--threads", "0"], "--threads"),
        (["--level", "7"], r"level must be 1 \(finest\) \.\. 3"),
        (["--level", "0"], r"level must be 1 \(finest\) \.\. 3"),
    ],
)
def test_fem_solve_options(capsys, store2d, argv, match):
    expect_error(capsys, ["fem", "solve", store2d, "--no-progress", *argv], match)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--steps", "0"], "--steps must be"),  # [T] StatisticsError
        (["--dim", "4"], "--dim must be 2 or 3"),  # [T] RankFailed
        (["--ranks", "0"], "--ranks must be positive"),
        (["--n", "24"], "--n must be a power of two"),
        (["--n", "0"], "--n must be"),
        (["--warmup", "-1"], "--warmup must be"),
        (["--batch", "0"], "--batch must be"),
        (["--threads", "0"], "--threads must be"),
        (["--repeat", "0"], "--repeat must be"),
        (["--mode", "sideways"], "--mode"),
    ],
)
def test_scaling_options(capsys, tmp_path, argv, match):
    expect_error(capsys, ["scaling", "--out", tmp_path / "s", *argv], match)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--memory", "-5"], "--memory must be a positive"),  # [C~]
        (["--memory", "0"], "--memory must be a positive"),
        (["--workers", "0"], "--workers and --threads"),
        (["--threads", "0"], "--workers and --threads"),
        (["--level", "9"], "--level must be 1 .. 3"),
        (["--tile", "a,b"], "--tile"),
    ],
)
def test_predict_tiled_options(capsys, store2d, files, argv, match):
    expect_error(capsys, ["predict-tiled", store2d, files["ckpt2d"], *argv], match)


def test_no_command_and_unknown_command(capsys):
    from badcases import run_cli

    assert run_cli([]) != 0
    expect_error(capsys, ["frobnicate"], "invalid choice")


def test_compare_cycles_unknown_cycle_named_first(capsys, tmp_path):  # [C~]
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\ndim = 2\n")
    expect_error(capsys, ["compare-cycles", cfg, "--cycles", "Z"], "unknown cycle 'Z'")
