"""Training configs that are wrong, hostile or not configs at all: one line naming the file."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from badcases import expect_api_error, expect_error

from mgtoolkit.train import load_config

GOOD = """seed = 0
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
[optim]
batch_size = 10
lr = 0.003
"""

BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
optim:
  lr: [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

YAML_GOOD = """data:
  store: "{store}"
model:
  dim: 2
"""


def _toml(store, **changes) -> str:
    lines = GOOD.format(store=store).splitlines()
    for key, value in changes.items():
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{key} = "))
        lines[i] = f"{key} = {value}"
    return "\n".join(lines) + "\n"


def _train(capsys, tmp_path, name: str, content: str | bytes, match: str):
    cfg = tmp_path / name
    if isinstance(content, bytes):
        cfg.write_bytes(content)
    else:
        cfg.write_text(content)
    line = expect_error(capsys, ["train", cfg, "--run-dir", tmp_path / "run"], match)
    assert not (tmp_path / "run").exists()  # nothing written
    return line


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("list.yaml", "- 1\n- 2\n", r"list.yaml holds a list at the top level"),  # [T]
        ("scalar.yaml", "42\n", r"holds a int at the top level"),
        ("string.json", '"hello"', r"holds a str at the top level"),
        ("array.json", "[1, 2, 3]", r"array.json holds a list"),  # API [T]
        ("bad.json", "{bad", r"bad.json is not valid JSON"),  # API [C~]
        ("bad.toml", "[data\nstore=", r"bad.toml is not valid TOML"),
        ("bad.yaml", "a: [1, 2\n", r"bad.yaml is not a valid YAML config"),
        ("tabs.yaml", "a:\n\t- 1\n", r"tabs.yaml is not a valid YAML config"),
        ("cfg.ini", "[data]\n", r"must end in .toml, .yaml, .yml or .json"),
        ("bomb.yaml", BOMB, r"bomb.yaml, line 1: YAML anchors and aliases"),  # [H]
        ("anchor.yaml", "model: &m {dim: 2}\n", "anchors and aliases"),
        ("alias.yaml", "a: &x 1\nb: *x\n", "anchors and aliases"),
        ("python.yaml", "!!python/object/apply:os.system ['touch pwned']\n", r"constructor"),
        ("pyname.yaml", "a: !!python/name:os.system\n", r"constructor"),
        ("unknown_key.toml", "[data]\nstore='x'\nfoo=1\n", r"unknown key\(s\) \['foo'\]"),
        ("section_value.toml", "data = 3\n", r"\[data\] must be a table"),
        ("nul.yaml", "a: 1\x00\n", r"NUL bytes"),
    ],
)
def test_config_files(capsys, tmp_path, name, content, match):
    t0 = time.perf_counter()
    _train(capsys, tmp_path, name, content, match)
    assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_binary_file_as_config(capsys, tmp_path, suffix):  # [C~] random-binary .toml
    data = bytes((i * 167 + 13) % 256 for i in range(600))
    _train(capsys, tmp_path, "random" + suffix, data, r"random\.\w+ is not a UTF-8 text file")


def test_huge_config_refused_unread(capsys, tmp_path):
    _train(capsys, tmp_path, "big.toml", "#" * (2 << 20), r"big.toml is \d+ bytes")


def test_directory_and_missing_config(capsys, tmp_path):
    (tmp_path / "dir.toml").mkdir()
    expect_error(capsys, ["train", tmp_path / "dir.toml"], "is a directory")
    expect_error(capsys, ["train", tmp_path / "missing.toml"], "does not exist")


def test_alias_bomb_fails_fast_and_small(tmp_path):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(BOMB)
    assert len(BOMB) < 700
    tracemalloc.start()
    t0 = time.perf_counter()
    expect_api_error(lambda: load_config(cfg), "anchors and aliases")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - t0 < 1 and peak < 20 * 2**20


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"lr": "1e30"}, r"optim.lr must be a finite number ≤ 1e6"),  # [T] FloatingPointError
        ({"lr": "-1.0"}, r"optim.lr must be a number > 0"),
        ({"lr": "0.0"}, r"optim.lr must be a number > 0"),
        ({"lr": "nan"}, r"optim.lr must be a number > 0"),
        ({"lr": "inf"}, r"optim.lr must be a finite number"),
        ({"lr": '"fast"'}, r"optim.lr must be a number > 0 \(got 'fast'\)"),
        ({"lr": '"' + "9" * 100_000 + '"'}, r"optim.lr must be a number > 0 \(got '9+…"),
        ({"batch_size": "0"}, r"batch_size"),
        ({"val_samples": "-1"}, r"data.val_samples must be an integer ≥ 0"),
        ({"dim": "4"}, r"model.dim must be 2 or 3"),
        ({"depth": "40"}, r"model.depth must be at most 12"),
        ({"depth": "0"}, r"model.depth must be an integer ≥ 1"),
        ({"base_filters": "0"}, r"base_filters"),
        ({"levels": "0"}, r"levels"),
        ({"epochs": "-1"}, r"epochs"),
        ({"name": '"zigzag"'}, r"unknown cycle 'zigzag'"),
        ({"seed": '"x"'}, r"seed"),
    ],
)
def test_bad_values(capsys, tmp_path, store2d_fem, changes, match):
    line = _train(capsys, tmp_path, "cfg.toml", _toml(store2d_fem, **changes), match)
    assert len(line) < 400


@pytest.mark.parametrize(
    ("store", "match"),
    [
        ("missing.zarr", r"no dataset at .*missing.zarr"),
        ("notes.txt", r"is not a zarr store"),
    ],
)
def test_config_store_missing_or_wrong(capsys, tmp_path, store, match):
    (tmp_path / "notes.txt").write_text("x")
    _train(capsys, tmp_path, "cfg.toml", GOOD.format(store=tmp_path / store), match)


def test_val_samples_zero_warns(capsys, tmp_path):  # [S]
    text = GOOD.format(store=tmp_path / "missing.zarr").replace(
        "val_samples = 4", "val_samples = 0"
    )
    (tmp_path / "cfg.toml").write_text(text)
    with pytest.warns(UserWarning, match="val_samples = 0"):
        load_config(tmp_path / "cfg.toml")
    expect_error(capsys, ["train", tmp_path / "cfg.toml"], "no dataset")
    # the CLI printed the warning as one line before the error
    capsys.readouterr()
    from badcases import run_cli

    run_cli(["train", str(tmp_path / "cfg.toml")])
    err = capsys.readouterr().err
    assert "mgtoolkit: warning:" in err and "val_samples = 0" in err


def test_depth_too_deep_for_store_warns(capsys, tmp_path, copy_store, store2d):  # [S]
    from badcases import run_cli, shard_file

    store = copy_store(store2d)
    shard_file(store).unlink()  # stop the run right after the checks
    text = GOOD.format(store=store).replace("depth = 2", "depth = 9")
    (tmp_path / "cfg.toml").write_text(text)
    capsys.readouterr()
    assert run_cli(["train", str(tmp_path / "cfg.toml"), "--run-dir", str(tmp_path / "r")]) != 0
    err = capsys.readouterr().err
    assert "model.depth = 9 pads" in err and "is damaged" in err


def test_yaml_good_config_still_loads(tmp_path, store2d):
    (tmp_path / "ok.yaml").write_text(YAML_GOOD.format(store=store2d))
    assert load_config(tmp_path / "ok.yaml").model.dim == 2
