"""compare_cycles: the target base itself reaches, on a real 16² store with u_fem."""

import pytest

from mgtoolkit.nn import UNetConfig
from mgtoolkit.train import CycleConfig, DataConfig, OptimConfig, TrainConfig, compare_cycles


def _config(store) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(store=str(store), val_samples=4),
        model=UNetConfig(dim=2, depth=2, base_filters=4, norm="none"),
        cycle=CycleConfig(
            levels=3, epochs=1, patience=20, max_epochs=6, coarse={"patience": 1, "max_epochs": 2}
        ),
        optim=OptimConfig(batch_size=10, lr=3e-3, loss="multigrid"),
        target_metric="rel_l2",
    )


def test_target_from_base_is_the_value_base_ends_with(store2d_fem, tmp_path):
    comp = compare_cycles(
        _config(store2d_fem), ["half-V"], out_dir=tmp_path, target="base", plot=False
    )
    base, half_v = comp.results["base"], comp.results["half-V"]
    assert comp.target_from_base and "(the value base ends with)" in comp.table
    # base ran its whole rule (no target to stop it): 6 epochs on level 1, no patience stop
    assert base.reason == "schedule complete" and base.steps[-1]["epochs"] == 6
    assert comp.target == base.validation["val_rel_l2"] == base.validations[-1]["val_rel_l2"]
    # base's time to target: its first validation at or below its own final value
    first = next(v for v in base.validations if v["val_rel_l2"] <= comp.target)
    assert base.time_to_target_s == first["wall_s"] <= base.wall_s
    # the cycle is timed to the same value; its coarse steps were capped at 2 epochs
    assert [r["epochs"] for r in half_v.steps[:-1]] in ([1, 1], [1, 2], [2, 1], [2, 2])
    assert half_v.reason == "target reached"
    assert half_v.validations[-1]["val_rel_l2"] <= comp.target
    row = {r["cycle"]: r for r in comp.rows}["half-V"]
    assert row["speedup"] == pytest.approx(base.time_to_target_s / half_v.time_to_target_s)


def test_a_target_name_other_than_base_is_rejected(store2d_fem, tmp_path):
    with pytest.raises(ValueError, match='a number or "base"'):
        compare_cycles(_config(store2d_fem), ["V"], out_dir=tmp_path, target="fast")
