"""The same promises through the Python API: a ValueError (or CheckpointError) naming the
argument or file and the fix, never a library's internal error."""

from __future__ import annotations

import numpy as np
import pytest
from badcases import expect_api_error

from mgtoolkit.fem import solve
from mgtoolkit.train import load_config

NU = np.ones((8, 8))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nu": None}, r"got None"),  # [C~] torch TypeError
        ({"nu": "abc"}, r"real numbers"),
        ({"nu": NU.astype(object)}, r"dtype object"),
        ({"nu": NU + 1j}, r"ν must be real"),  # [S] imaginary part dropped
        ({"nu": NU, "rtol": 1e-20}, r"rtol=1e-20 is below"),  # [C~] advice when already mixed
        ({"nu": NU, "rtol": float("nan")}, r"rtol must be a positive"),
        ({"nu": NU, "rtol": -1.0}, r"rtol must be a positive"),
        ({"nu": NU, "device": "tpu"}, r"device must be one of"),  # [C~] torch device string
        ({"nu": NU, "maxiter": 0}, r"maxiter must be a positive"),
        ({"nu": NU, "precision": "quad"}, r"precision must be one of"),
        ({"nu": np.ones((8, 9))}, r"equal sides"),
        ({"nu": np.ones((6, 6))}, r"power of two"),
        ({"nu": -NU}, r"strictly positive"),
        ({"nu": NU * np.nan}, r"NaN or inf"),
        ({"nu": np.ones((2, 2, 2, 2, 2))}, r"shape"),
    ],
)
def test_solve_arguments(kwargs, match):
    expect_api_error(lambda: solve(**kwargs), match)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.json", "[1, 2]", r"a.json holds a list"),  # [T] AttributeError
        ("b.json", "{", r"b.json is not valid JSON"),  # [C~] file not named
        ("c.yaml", "- x\n", r"c.yaml holds a list"),
        ("d.toml", "x = \n", r"d.toml is not valid TOML"),
        ("e.yaml", "a: &x 1\nb: *x\n", r"anchors and aliases"),
    ],
)
def test_load_config_files(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    expect_api_error(lambda: load_config(tmp_path / name), match)


def test_store_apis_on_bad_paths(tmp_path, files):
    from mgtoolkit.data import LevelDataset, open_level, solve_store, store_summary

    for fn, match in [
        (lambda: store_summary(tmp_path / "x.zarr"), "no dataset"),
        (lambda: open_level(files["notzarr"], 1), "not a zarr store"),
        (lambda: LevelDataset(tmp_path / "x.zarr", 1), "no dataset"),
        (lambda: solve_store(tmp_path / "x.zarr"), "no dataset"),
    ]:
        expect_api_error(fn, match, types=(ValueError, FileNotFoundError))


def test_planner_api_limits():
    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.plan import plan

    cfg = UNetConfig(dim=2, depth=2, base_filters=4)
    expect_api_error(lambda: plan(cfg, resolution=2**40), "beyond what the planner")
    expect_api_error(lambda: plan(cfg, resolution=64, memory=0), "memory must be a positive")
    expect_api_error(lambda: plan(cfg, resolution=64, memory=-5), "memory must be a positive")
    expect_api_error(lambda: UNetConfig(dim=2, depth=40), "depth must be at most 12")
    expect_api_error(lambda: UNetConfig(dim=2, depth=12, base_filters=64), "filters")


def test_generate_api_size_limit(tmp_path):
    from mgtoolkit.data import generate

    expect_api_error(
        lambda: generate(
            tmp_path / "d.zarr",
            dim=2,
            resolution=2**20,
            levels=1,
            samples=1,
            seed=0,
            progress=False,
        ),
        r"chunk files|GiB free",
    )
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("workers", [0, -1])
def test_local_cluster_zero_workers(workers):  # [S] a cluster with 0 workers returned
    from mgtoolkit.cluster import local_cluster

    def start():
        with local_cluster(workers=workers):
            pass

    expect_api_error(start, "workers")
