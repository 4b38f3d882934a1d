"""`mgtoolkit data generate | import | info` end to end."""

import subprocess
import sys

import numpy as np
import zarr

from mgtoolkit.cli import main
from mgtoolkit.data import open_level, open_store


def test_generate_then_info(tmp_path, dask_client, capsys):
    out = tmp_path / "data.zarr"
    args = ["data", "generate", "--dim", "3", "--resolution", "8", "--levels", "2", "--samples",
            "3", "--seed", "0", "--out", str(out), "--scheduler", dask_client.scheduler.address,
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "dim 3, resolution 8, levels 2, samples 3, seed 0" in printed
    assert "complete 3/3" in printed
    assert open_store(out)["level2"]["nu"].shape == (3, 4, 4, 4)
    assert main(["data", "info", str(out)]) == 0
    assert "level2: 4 cells per side" in capsys.readouterr().out
    # The same command again resumes (nothing missing); other parameters are refused.
    assert main(args) == 0
    assert main([*args[:-1], "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "seed=0 (asked 1)" in err and "--overwrite" in err and "Traceback" not in err


def test_bad_input_exits_2_with_the_fix_and_writes_nothing(tmp_path):
    out = tmp_path / "data.zarr"
    run = subprocess.run(
        [sys.executable, "-m", "mgtoolkit", "data", "generate", "--dim", "3", "--resolution",
         "48", "--samples", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2
    assert "resolution must be a power of two" in run.stderr and "try 32 or 64" in run.stderr
    assert not out.exists()
    run = subprocess.run([sys.executable, "-m", "mgtoolkit", "data", "info", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 2 and "is not a zarr store" in run.stderr


def test_import_a_npy_file(tmp_path, dask_client, capsys):
    data = np.exp(np.random.default_rng(0).normal(size=(2, 8, 8))).astype(np.float32)
    np.save(tmp_path / "perm.npy", data)
    out = tmp_path / "imported.zarr"
    code = main(["data", "import", str(tmp_path / "perm.npy"), "--levels", "2", "--out", str(out),
                 "--scheduler", dask_client.scheduler.address, "--no-progress"])  # fmt: skip
    assert code == 0
    assert "geometric-mean coarse levels" in capsys.readouterr().out
    np.testing.assert_array_equal(open_level(out, 1)["nu"].values, data)
    group = zarr.open_group(str(tmp_path / "in.zarr"), mode="w")
    group.create_array("perm", shape=data.shape, chunks=(1, 8, 8), dtype="f4")[:] = data
    code = main(["data", "import", str(tmp_path / "in.zarr"), "--variable", "perm", "--out",
                 str(tmp_path / "z.zarr"), "--scheduler", dask_client.scheduler.address,
                 "--no-progress"])  # fmt: skip
    assert code == 0
    np.testing.assert_array_equal(open_level(tmp_path / "z.zarr", 1)["nu"].values, data)
    assert (
        main(["data", "import", str(tmp_path / "in.zarr"), "--out", str(tmp_path / "y.zarr")]) == 2
    )
    assert (
        "has no array 'nu'; it holds ['perm'] — pick one with --variable" in capsys.readouterr().err
    )
    bad = data.copy()
    bad[1, 2, 3] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    assert (
        main(["data", "import", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "b.zarr")]) == 2
    )
    assert "sample 1 contains NaN or inf" in capsys.readouterr().err
    assert not (tmp_path / "b.zarr").exists()
