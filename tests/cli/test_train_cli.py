"""`mgtoolkit train`, `compare-cycles`, `predict` and `export-tensorboard` as a user runs them
(real processes)."""

import os
import subprocess
import sys

import pytest
import torch

from mgtoolkit.cli import main
from mgtoolkit.data import LevelDataset
from mgtoolkit.rundir import load_model
from mgtoolkit.train import read_events


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    yield


CONFIG = """
seed = 0
validate_every = 1

[data]
store = "{store}"
val_samples = 4

[model]
dim = 2
depth = 2
base_filters = 4

[cycle]
name = "half-V"
levels = 2
epochs = 1
patience = 2
max_epochs = 3

[optim]
batch_size = 10
lr = 0.003
"""


def _write(tmp_path, store, extra=""):
    path = tmp_path / "cfg.toml"
    path.write_text(CONFIG.format(store=store) + extra)
    return path


def test_train_command_writes_a_run_directory(store2d_fem, tmp_path):
    cfg = _write(tmp_path, store2d_fem)
    run = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mgtoolkit",
            "train",
            str(cfg),
            "--run-dir",
            str(run),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert "half-V cycle: 2 steps, levels 2 1" in out.stdout
    assert "validation relative L2 error vs FEM" in out.stdout
    for name in ("config.toml", "metrics.csv", "report.md", "events.jsonl"):
        assert (run / name).exists()
    assert (run / "metrics.csv").read_text().count("\n") == 3  # header + 2 steps
    assert any(
        e["type"] == "validation" and "val_rel_l2" in e for e in read_events(run / "events.jsonl")
    )


@pytest.mark.parametrize("launcher", ["torchrun", "mpirun", "srun"])
def test_train_spatial_under_each_launcher_matches_one_process(launcher, store2d_fem, tmp_path):
    # The same configuration, each field in 2 slabs over 2 ranks, under the three batch
    # launchers; srun needs the real single-node Slurm (.ci/setup.d/slurm.sh).
    import shutil

    from mgtoolkit.comm.ranks import free_port

    if launcher == "srun" and (
        shutil.which("srun") is None or subprocess.run(["sinfo"], capture_output=True).returncode
    ):
        pytest.fail("no Slurm here: run `bash .ci/setup.d/slurm.sh` (as root) first")
    cfg = _write(tmp_path, store2d_fem)
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "one"), "--no-progress"]) == 0
    bindir = os.path.dirname(sys.executable)
    prefix = {
        # torchrun's static rendezvous does not accept port 0
        "torchrun": [f"{bindir}/torchrun", "--nproc-per-node", "2", "--master-port",
                     str(free_port())],
        "mpirun": [f"{bindir}/mpirun", "-n", "2", "--oversubscribe"],
        "srun": ["srun", "-n", "2", "--mpi=none"],
    }[launcher]  # fmt: skip
    cmd = [*prefix, sys.executable, "-m", "mgtoolkit", "train", str(cfg), "--run-dir",
           str(tmp_path / "two"), "--spatial", "2", "--no-progress"]  # fmt: skip
    if launcher == "torchrun":
        cmd.remove(sys.executable)  # torchrun runs `-m mgtoolkit` itself
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        # Open MPI refuses root without these; CI containers run as root.
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    }
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    start = read_events(tmp_path / "two" / "events.jsonl")[0]
    assert (start["type"], start["world_size"], start["spatial"]) == ("run_start", 2, 2)
    # sums and halos: over MPI under mpirun, shared memory otherwise (one machine)
    assert start["transport"] == ("mpi" if launcher == "mpirun" else "shm")
    one, two = load_model(tmp_path / "one"), load_model(tmp_path / "two")
    for a, b in zip(one.parameters(), two.parameters(), strict=True):
        # float32 with batch norm and Adam: rounding only (measured in docs/spatial.md)
        assert float((a - b).norm() / a.norm()) < 1e-3


def test_bad_config_exits_with_a_clear_message(store2d, tmp_path, capsys):
    cfg = _write(tmp_path, store2d, "\n[cycle.overrides]\n'0' = { patience = 0 }\n")
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "r")]) == 2
    assert "patience must be an integer ≥ 1" in capsys.readouterr().err


def test_compare_cycles_and_predict(store2d_fem, tmp_path, capsys, dask_client):
    cfg = _write(tmp_path, store2d_fem)
    out = tmp_path / "cmp"
    # whether each run reaches this target is not the point: table, CSV and plot are
    code = main(
        [
            "compare-cycles",
            str(cfg),
            "--cycles",
            "half-V",
            "V",
            "--target",
            "20",
            "--metric",
            "energy_gap",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "time to energy_gap ≤ 20" in text
    for name in ("base", "half-V", "V"):
        assert name in text and (out / name / "report.md").exists()
    rows = (out / "comparison.csv").read_text().splitlines()
    assert rows[0].startswith("cycle,reached,time_to_target_s,speedup")
    assert len(rows) == 4
    assert (out / "comparison.png").stat().st_size > 1000

    metrics = tmp_path / "m.csv"
    code = main(
        [
            "predict",
            str(store2d_fem),
            str(out / "half-V"),
            "--metrics",
            str(metrics),
            "--no-progress",
            "--scheduler",
            dask_client.scheduler.address,
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "rel L2" in text and "mean" in text
    lines = metrics.read_text().splitlines()
    assert lines[0] == "sample,rel_l2,max_abs,energy_gap" and len(lines) == 25
    u = LevelDataset(store2d_fem, 1, variables=("u_pred",))[3]["u_pred"]
    assert u.shape == (17, 17) and (u[:, 0] == 1).all() and (u[:, -1] == 0).all()

    # --mirror-average: the network averaged over the field's four mirror images; the
    # arguments in the old order (RUN STORE) still work, with a deprecation warning
    args = [str(out / "half-V"), str(store2d_fem), "--name", "u_sym", "--mirror-average"]
    scheduler = ["--no-progress", "--scheduler", dask_client.scheduler.address]
    assert main(["predict", *args, *scheduler]) == 0
    assert "write `mgtoolkit predict STORE MODEL`" in capsys.readouterr().err
    item = LevelDataset(store2d_fem, 1, variables=("nu", "u_sym"))[3]
    with torch.no_grad():
        expected = load_model(out / "half-V", mirror_average=True)(item["nu"][None])[0]
    torch.testing.assert_close(item["u_sym"], expected, rtol=0, atol=1e-6)
    assert (item["u_sym"] - u).abs().max() > 1e-4


def test_compare_cycles_needs_u_fem_and_a_target(store2d, tmp_path, capsys):
    cfg = _write(tmp_path, store2d)
    assert main(["compare-cycles", str(cfg), "--out", str(tmp_path / "c")]) == 2
    assert "needs a target" in capsys.readouterr().err
    code = main(
        [
            "compare-cycles",
            str(cfg),
            "--target",
            "0.1",
            "--out",
            str(tmp_path / "c"),
            "--no-progress",
        ]
    )
    assert code == 2
    assert "mgtoolkit fem solve" in capsys.readouterr().err
    # "base" is a target too (base's own final value); anything else non-numeric is refused
    code = main(["compare-cycles", str(cfg), "--target", "base", "--out", str(tmp_path / "c")])
    assert code == 2 and "mgtoolkit fem solve" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare-cycles", str(cfg), "--target", "fast", "--out", str(tmp_path / "c")])
    assert "a number (e.g. 0.05) or 'base'" in capsys.readouterr().err


def test_export_tensorboard_command(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mgtoolkit.train import EventLog

    for name, loss in (("a", 2.0), ("b", 3.0)):
        log = EventLog(name, tmp_path / "runs" / name / "events.jsonl")
        log.emit("run_start", dim=2)
        log.emit("batch_end", step=0, level=1, epoch=0, batch=0, loss=loss)
        log.close()
    runs = [str(tmp_path / "runs" / n) for n in ("a", "b")]
    assert main(["export-tensorboard", *runs, "--out", str(tmp_path / "tb")]) == 0
    printed = capsys.readouterr().out
    assert f"view with: tensorboard --logdir {tmp_path / 'tb'}" in printed
    for name, loss in (("a", 2.0), ("b", 3.0)):  # one folder per run under --out
        acc = EventAccumulator(str(tmp_path / "tb" / name))
        acc.Reload()
        assert [(s.step, s.value) for s in acc.Scalars("loss/batch/level1")] == [(1, loss)]
    assert main(["export-tensorboard", runs[0]]) == 0  # default: RUN_DIR/tensorboard
    assert any((tmp_path / "runs" / "a" / "tensorboard").iterdir())
    capsys.readouterr()
    assert main(["export-tensorboard", str(tmp_path / "nothing")]) == 2
    assert "has no events.jsonl: pass a run directory" in capsys.readouterr().err
    (tmp_path / "other" / "a").mkdir(parents=True)
    twin = str(tmp_path / "other" / "a")
    assert main(["export-tensorboard", runs[0], twin, "--out", str(tmp_path / "tb2")]) == 2
    assert "would share a folder under --out" in capsys.readouterr().err
