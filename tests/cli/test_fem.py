"""``mgtoolkit fem solve`` on a real store and a real LocalCluster."""

from __future__ import annotations

import numpy as np
import zarr

from mgtoolkit.cli import main
from mgtoolkit.data import completed, generate
from mgtoolkit.fem import solve


def _store(tmp_path, client):
    path = tmp_path / "d.zarr"
    generate(path, dim=2, resolution=16, levels=2, samples=3, seed=1, client=client, progress=False)
    return path


def test_fem_solve_adds_u_fem_at_every_level_and_resumes(tmp_path, dask_client):
    path = _store(tmp_path, dask_client)
    addr = dask_client.scheduler.address
    assert main(["fem", "solve", str(path), "--scheduler", addr, "--no-progress"]) == 0
    root = zarr.open_group(str(path), mode="r")
    for level, n in ((1, 16), (2, 8)):
        group = root[f"level{level}"]
        assert completed(path, level, "u_fem").all()
        u = np.asarray(group["u_fem"][:])
        assert u.shape == (3, n + 1, n + 1)
        for s in range(3):
            expected = solve(np.asarray(group["nu"][s], dtype=np.float64))
            assert np.abs(u[s] - expected).max() < 1e-6  # stored as float32
        assert np.allclose(np.asarray(group["x_node"][:]), np.arange(n + 1) / n)

    # A rerun solves nothing: a marked sample's values stay as they are.
    field = zarr.open_group(str(path), mode="r+")["level1"]["u_fem"]
    field[0, 5, 5] = -7.0
    assert (
        main(["fem", "solve", str(path), "--level", "1", "--scheduler", addr, "--no-progress"]) == 0
    )
    assert float(zarr.open_group(str(path), mode="r")["level1"]["u_fem"][0, 5, 5]) == -7.0


def test_fem_solve_bad_input(tmp_path, dask_client, capsys):
    path = _store(tmp_path, dask_client)
    addr = dask_client.scheduler.address
    assert main(["fem", "solve", str(path), "--level", "3", "--scheduler", addr]) == 2
    assert "level must be 1 (finest) .. 2" in capsys.readouterr().err
    assert main(["fem", "solve", str(tmp_path / "missing.zarr")]) == 2
    assert "no dataset at" in capsys.readouterr().err
    assert main(["fem", "solve", str(path), "--rtol", "0"]) == 2
    assert "--rtol must be > 0" in capsys.readouterr().err
    # A level whose ν is incomplete (an interrupted generation) is refused, naming the fix.
    marker = zarr.open_group(str(path), mode="r+")["level2"]["nu_complete"]
    marker[1] = False
    assert main(["fem", "solve", str(path), "--level", "2", "--scheduler", addr]) == 2
    assert "no complete ν" in capsys.readouterr().err
