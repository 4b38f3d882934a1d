"""Training configuration files: TOML and YAML, and clear rejection of bad values."""

import pytest

from mgtoolkit.train import TrainConfig, load_config

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
        ("[model]\ndepth = 0\n", "model.depth must be an integer ≥ 1"),
        ("adaptation = 'shrink'\n", "adaptation must be one of none, grow"),
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
