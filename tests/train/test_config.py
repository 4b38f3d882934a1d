"""Training configuration files: TOML and YAML, and clear rejection of bad values."""

import pytest

from mgtoolkit.nn import UNetConfig
from mgtoolkit.train import DataConfig, OptimConfig, TrainConfig, load_config
from mgtoolkit.train.optim import epoch_lr, warmup_factor

GOOD = """
seed = 1
[data]
store = "kl.zarr"
[model]
dim = 2
[cycle]
name = "half-V"
levels = 3
[optim]
lr = 0.002
"""


def test_toml_and_yaml_give_the_same_config(tmp_path):
    (tmp_path / "a.toml").write_text(GOOD)
    (tmp_path / "a.yaml").write_text(
        "seed: 1\ndata: {store: kl.zarr}\nmodel: {dim: 2}\n"
        "cycle: {name: half-V, levels: 3}\noptim: {lr: 0.002}\n"
    )
    a, b = load_config(tmp_path / "a.toml"), load_config(tmp_path / "a.yaml")
    assert a == b
    assert a.data.store == str(tmp_path / "kl.zarr")  # relative to the config file
    assert a.cycle.build().levels == (3, 2, 1)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[optim]\nlr_rate = 1\n", r"unknown key\(s\) \['lr_rate'\] in \[optim\]"),
        ("colour = 1\n", r"unknown key\(s\) \['colour'\] in \[config\]"),
        ("[cycle]\nname = 'Z'\n", "unknown cycle 'Z'"),
        ("[cycle]\npatience = 0\n", "patience must be an integer ≥ 1"),
        ("[cycle]\nmax_epochs = 0\n", "max_epochs must be an integer ≥ 1"),
        ("[cycle]\nepochs = -2\n", "epochs must be an integer ≥ 0"),
        ("[cycle]\nlevels = 0\n", "levels must be an integer ≥ 1"),
        ("[cycle.overrides]\n'7' = {epochs = 1}\n", "step index 7 out of range"),
        ("[cycle.overrides]\n'0' = {speed = 1}\n", "unknown rule field"),
        ("[optim]\nbatch_size = 0\n", "optim.batch_size must be an integer ≥ 1"),
        ("[optim]\nname = 'sgd'\n", "optim.name must be 'adam' or 'lbfgs'"),
        ("[optim]\nlr = -1\n", "optim.lr must be a number > 0"),
        ("[optim]\nloss = 'l2'\n", "optim.loss must be one of energy, scaled_energy"),
        ("[optim]\nlr_schedule = 'linear'\n", "optim.lr_schedule must be one of constant"),
        ("[optim]\nlr_factor = 1\n", r"optim.lr_factor must be a number in \(0, 1\)"),
        ("[optim]\nlr_patience = 0\n", "optim.lr_patience must be an integer ≥ 1"),
        ("[optim]\nmin_lr = 0\n", "optim.min_lr must be a number > 0"),
        ("[model]\ndepth = 0\n", "model.depth must be an integer ≥ 1"),
        ("adaptation = 'shrink'\n", "adaptation must be one of none, grow, cascade"),
        (
            "adaptation = 'cascade'\n[cycle]\nname = 'W'\n",
            r"must not return to a coarser level once it moved finer \(\[1, 2, 3, 2, 3, 2, 1\]",
        ),
        ("adaptation = 'cascade'\n[cycle]\nsequence = [3, 1]\n", "one level finer at a time"),
        (
            "adaptation = 'cascade'\n[parallel]\nspatial = 2\n",
            "trains whole fields, but parallel asks for 2 ranks per field",
        ),
        ("target = 0\n", "target must be a number > 0"),
        ("[data]\nstore = 'kl.zarr'\nval_samples = -1\n", "val_samples must be an integer ≥ 0"),
    ],
)
def test_bad_values_are_rejected_clearly(tmp_path, text, match):
    if "[data]" not in text:
        text += "\n[data]\nstore = 'kl.zarr'\n"
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_config(path)


def test_missing_store_and_bad_file(tmp_path):
    with pytest.raises(ValueError, match=r"data\.store must name a dataset store"):
        TrainConfig()
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "none.toml")
    (tmp_path / "x.toml").write_text("[data\n")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_config(tmp_path / "x.toml")


def test_plateau_learning_rate_is_a_function_of_the_step_losses():
    o = OptimConfig(lr=1e-2, lr_schedule="plateau", lr_factor=0.5, lr_patience=2, min_lr=3e-3)
    rate = lambda losses: epoch_lr(o, losses, min_rel_improvement=0.01)  # noqa: E731
    assert rate([]) == 1e-2
    assert rate([4.0, 3.0, 2.0, 1.0]) == 1e-2  # improving by more than 1 % each epoch
    assert rate([4.0, 3.995, 3.99]) == 5e-3  # two epochs within 1 % of the best: halve
    # an improvement resets the count; the next plateau halves again, floored at min_lr
    assert rate([4.0, 3.995, 3.99, 2.0, 2.5, 2.1]) == 3e-3
    # the count restarts after each decay
    assert rate([4.0, 4.1, 4.2, 4.3]) == 5e-3
    assert rate([4.0, 4.1, 4.2, 4.3, 4.4]) == 3e-3
    assert rate([4.0] * 20) == 3e-3
    constant = OptimConfig(lr=1e-2, lr_schedule="constant")
    assert epoch_lr(constant, [4.0] * 20, min_rel_improvement=0.01) == 1e-2


def test_coarse_rule_fields_round_trip_and_reach_the_schedule(tmp_path):
    from mgtoolkit.cycles import EarlyStopping
    from mgtoolkit.train import CycleConfig, DataConfig, TrainConfig, to_toml

    cycle = CycleConfig(name="half-V", levels=3, patience=9, coarse={"max_epochs": 4})
    steps = cycle.build().steps
    assert [s.rule for s in steps[:2]] == [EarlyStopping(9, 1e-3, 4)] * 2
    assert steps[-1].rule == EarlyStopping(9, 1e-3, 50)
    cfg = TrainConfig(data=DataConfig(store=str(tmp_path / "s.zarr")), cycle=cycle)
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg
    for bad, match in (({"epochs": 3}, "unknown rule field"), ([2], "table of rule fields")):
        with pytest.raises(ValueError, match=match):
            CycleConfig(coarse=bad)


def test_a_checkpoint_from_before_a_setting_existed_compares_as_what_it_did():
    from mgtoolkit.train.config import config_differences

    def trajectory(**kw):
        return TrainConfig(
            data=DataConfig(store="x.zarr"), model=UNetConfig(dim=2), **kw
        ).trajectory_dict()

    old = trajectory(optim=OptimConfig(lr_schedule="constant"))
    del old["precision"], old["data"]["augment"], old["optim"]["lr_schedule"]
    assert config_differences(old, trajectory(optim=OptimConfig(lr_schedule="constant"))) == []
    # the absent keys stand for the former behaviour, not for today's defaults
    assert config_differences(old, trajectory()) == [
        "optim.lr_schedule: 'constant' in the checkpoint, 'plateau' now"
    ]
    assert config_differences(
        old, trajectory(optim=OptimConfig(lr_schedule="constant"), precision="bf16")
    ) == ["precision: 'fp32' in the checkpoint, 'bf16' now"]


def test_warmup_raises_the_rate_of_later_steps_batch_by_batch():
    o = OptimConfig(warmup_epochs=2)
    assert warmup_factor(o, 0, 0, 4) == 1.0  # the first step starts at the full rate
    assert [warmup_factor(o, 1, b, 4) for b in range(9)] == [
        1 / 8,
        2 / 8,
        3 / 8,
        4 / 8,
        5 / 8,
        6 / 8,
        7 / 8,
        1.0,
        1.0,
    ]
    assert warmup_factor(OptimConfig(), 3, 0, 4) == 1.0  # off by default
    with pytest.raises(ValueError, match="warmup_epochs must be a number ≥ 0"):
        OptimConfig(warmup_epochs=-1)


def test_loss_power_is_checked_and_belongs_to_the_multigrid_loss():
    assert OptimConfig(loss="multigrid", loss_power=4).loss_power == 4
    for bad in (1.5, float("nan"), float("inf"), True, "4"):
        with pytest.raises(ValueError, match="loss_power must be a finite number ≥ 2"):
            OptimConfig(loss="multigrid", loss_power=bad)
    with pytest.raises(ValueError, match="applies to loss = 'multigrid' only"):
        OptimConfig(loss="energy", loss_power=4)
