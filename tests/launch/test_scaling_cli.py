"""``mgtoolkit scaling``: real ranks, table, CSV and plot; speed-up and efficiency formulas."""

from __future__ import annotations

import csv

import pytest

from mgtoolkit.cli import main


def test_scaling_writes_table_csv_and_plot(tmp_path, capsys):
    out = tmp_path / "scaling"
    argv = ["scaling", "--n", "16", "--ranks", "1", "2", "--batch", "2", "--steps", "1"]
    assert main([*argv, "--warmup", "1", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "scaling.csv")))
    assert [(r["mode"], r["ranks"], r["global_batch"]) for r in rows] == [
        ("strong", "1", "2"),
        ("strong", "2", "2"),
        ("weak", "1", "2"),
        ("weak", "2", "4"),
    ]
    t = {(r["mode"], int(r["ranks"])): float(r["step_s"]) for r in rows}
    for r in rows:
        p, mode = int(r["ranks"]), r["mode"]
        if mode == "strong":  # S = T1/Tp, E = T1/(p Tp)
            expect_s, expect_e = t[mode, 1] / t[mode, p], t[mode, 1] / (p * t[mode, p])
        else:  # fixed work per rank: E = T1/Tp, S = p E
            expect_s, expect_e = p * t[mode, 1] / t[mode, p], t[mode, 1] / t[mode, p]
        assert float(r["speedup"]) == pytest.approx(expect_s)
        assert float(r["efficiency"]) == pytest.approx(expect_e)
        assert 0 < float(r["allreduce_s"]) < float(r["step_s"])
    assert (out / "scaling.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "| strong | 2 | 2 |" in printed and (out / "scaling.md").read_text() in printed


def test_scaling_refuses_a_batch_the_ranks_do_not_divide(capsys):
    assert main(["scaling", "--ranks", "1", "3", "--batch", "8", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "global batch 8 over 3 ranks" in err and "divides" in err


def test_scaling_takes_the_batch_from_a_config(tmp_path):
    """Without --batch the config's global batch is the one split over the ranks."""
    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.train import DataConfig, OptimConfig, TrainConfig, to_toml

    cfg = TrainConfig(
        data=DataConfig(store=str(tmp_path / "unused.zarr")),
        model=UNetConfig(dim=2, depth=2, base_filters=4),
        optim=OptimConfig(batch_size=6),
    )
    (tmp_path / "cfg.toml").write_text(to_toml(cfg))
    out = tmp_path / "scaling"
    argv = ["scaling", "--config", str(tmp_path / "cfg.toml"), "--n", "16", "--ranks", "1", "2"]
    assert (
        main([*argv, "--mode", "strong", "--steps", "1", "--warmup", "1", "--out", str(out)]) == 0
    )
    rows = list(csv.DictReader(open(out / "scaling.csv")))
    assert [(r["ranks"], r["global_batch"], r["local_batch"]) for r in rows] == [
        ("1", "6", "6"),
        ("2", "6", "3"),
    ]
