"""Damaged stores: found by `info` and `verify`, named by file and sample, repaired exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from badcases import check_error, expect_api_error, expect_error, run_cli, shard_file, truncate

from mgtoolkit.data import LevelDataset, generate
from mgtoolkit.data.verify import quick_check, verify_store


def _info(capsys, store) -> str:
    capsys.readouterr()
    assert run_cli(["data", "info", store]) == 0
    return capsys.readouterr().out


def _verify(capsys, store) -> tuple[int, str]:
    capsys.readouterr()
    rc = run_cli(["data", "verify", store])
    return rc, capsys.readouterr().out


def _set_sample(store, level, variable, sample, value):
    arr = zarr.open_group(str(store), mode="r+")[f"level{level}"][variable]
    block = (arr.shards or arr.chunks)[0]
    start = sample - sample % block
    data = np.asarray(arr[start : start + block])
    data[sample - start] = value
    arr[start : start + block] = data


@pytest.mark.parametrize("damage", ["truncate", "delete", "empty", "garbage"])
def test_info_and_verify_find_a_damaged_shard(capsys, copy_store, store2d, damage):
    store = copy_store(store2d)
    shard = shard_file(store, level=1, index=1)  # samples 3, 4, 5 (24 samples in 8 shards)
    block = zarr.open_group(str(store))["level1"]["nu"].shards[0]
    if damage == "truncate":
        truncate(shard, 200)
    elif damage == "delete":
        shard.unlink()
    elif damage == "empty":
        shard.write_bytes(b"")
    else:
        shard.write_bytes(b"\x00garbage" * 300)
    info = _info(capsys, store)
    assert "DAMAGED" in info and str(shard.relative_to(store.parent)) in info  # [S] 12/12
    rc, out = _verify(capsys, store)
    assert rc == 1
    for s in range(block, 2 * block):
        assert f"level 1 nu sample {s}:" in out
    assert "mgtoolkit data generate --repair" in out


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("nu", np.nan, "NaN or inf"),
        ("nu", np.inf, "NaN or inf"),
        ("nu", -1.0, "ν ≤ 0"),
        ("nu", 0.0, "ν ≤ 0"),
        ("u_fem", 1.5, r"u outside \[0, 1\]"),
        ("u_fem", -0.43, r"u outside \[0, 1\]"),
        ("u_fem", np.nan, "NaN or inf"),
    ],
)
def test_verify_finds_bad_values(capsys, copy_store, store2d_fem, variable, value, reason):
    store = copy_store(store2d_fem)
    _set_sample(store, 1, variable, 5, value)
    report = verify_store(store)
    assert [(d.level, d.variable, d.sample) for d in report.damaged] == [(1, variable, 5)]
    assert pytest.importorskip("re").search(reason, report.damaged[0].reason)
    rc, out = _verify(capsys, store)
    assert rc == 1 and f"level 1 {variable} sample 5" in out


def test_info_reports_verification_state(capsys, copy_store, store2d):
    store = copy_store(store2d)
    assert "not verified" in _info(capsys, store)
    assert _verify(capsys, store)[0] == 0
    assert "no damage in 72 samples" in _info(capsys, store)
    _set_sample(store, 2, "nu", 0, 7.0)  # a rewrite after the check
    assert "files changed since" in _info(capsys, store)


def test_generate_rerun_rewrites_a_deleted_shard(capsys, copy_store, store2d, scheduler):  # [S]
    store = copy_store(store2d)
    before = shard_file(store, index=2).read_bytes()
    shard_file(store, index=2).unlink()
    truncate(shard_file(store, level=2, index=0), 50)
    rc = run_cli(
        ["data", "generate", "--dim", "2", "--resolution", "16", "--levels", "3", "--samples",
         "24", "--seed", "3", "--out", store, "--scheduler", scheduler, "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    assert shard_file(store, index=2).read_bytes() == before
    assert verify_store(store).ok


def test_generate_repair_rewrites_bad_values_exactly(capsys, copy_store, store2d, scheduler):
    store = copy_store(store2d)
    good = np.asarray(zarr.open_group(str(store))["level1"]["nu"][:])
    _set_sample(store, 1, "nu", 7, np.nan)
    nu_files = [p for p in (store / "level1" / "nu" / "c").rglob("*") if p.is_file()]
    untouched = {p: p.stat().st_mtime_ns for p in nu_files}
    argv = ["data", "generate", "--dim", "2", "--resolution", "16", "--levels", "3",
            "--samples", "24", "--seed", "3", "--out", store, "--scheduler", scheduler,
            "--no-progress"]  # fmt: skip
    assert run_cli(argv) == 0  # without --repair: values are not read
    assert np.isnan(zarr.open_group(str(store))["level1"]["nu"][7]).all()
    assert run_cli([*argv, "--repair"]) == 0
    after = np.asarray(zarr.open_group(str(store))["level1"]["nu"][:])
    np.testing.assert_array_equal(after, good)
    changed = [p for p, t in untouched.items() if p.exists() and p.stat().st_mtime_ns != t]
    assert changed == [shard_file(store, index=7 // 3)]  # only the shard of sample 7


def test_fem_solve_refuses_damaged_nu_naming_the_file(capsys, copy_store, store2d):  # [T]
    store = copy_store(store2d)
    shard_file(store, index=1).unlink()
    expect_error(
        capsys, ["fem", "solve", store, "--level", "1"], r"level1/nu/c/1/0/0.*generate --repair"
    )
    assert "u_fem" not in zarr.open_group(str(store))["level1"]  # nothing written


def test_fem_solve_refuses_truncated_nu(capsys, copy_store, store2d):  # [T] checksum
    store = copy_store(store2d)
    truncate(shard_file(store, index=0), 300)
    expect_error(capsys, ["fem", "solve", store], r"sample 0.*level1/nu/c/0/0/0")
    assert "u_fem" not in zarr.open_group(str(store))["level1"]  # other samples not written


def test_fem_solve_names_sample_with_nan_inside_a_whole_file(
    capsys, copy_store, store2d, scheduler
):
    store = copy_store(store2d)
    _set_sample(store, 3, "nu", 4, np.nan)
    line = expect_error(
        capsys, ["fem", "solve", store, "--level", "3", "--scheduler", scheduler, "--no-progress"],
        r"sample 4 of level 3 of .*NaN",
    )  # fmt: skip
    assert "verify" in line


def test_fem_solve_repair_resolves_bad_u(capsys, copy_store, store2d_fem, scheduler):
    store = copy_store(store2d_fem)
    good = np.asarray(zarr.open_group(str(store))["level1"]["u_fem"][:])
    _set_sample(store, 1, "u_fem", 9, 2.0)
    argv = ["fem", "solve", store, "--level", "1", "--scheduler", scheduler, "--no-progress"]
    assert run_cli([*argv, "--repair"]) == 0
    np.testing.assert_array_equal(zarr.open_group(str(store))["level1"]["u_fem"][:], good)


def test_fem_solve_rerun_resolves_deleted_u_shard(capsys, copy_store, store2d_fem, scheduler):
    store = copy_store(store2d_fem)
    shard_file(store, variable="u_fem", index=0).unlink()
    argv = ["fem", "solve", store, "--level", "1", "--scheduler", scheduler, "--no-progress"]
    assert run_cli(argv) == 0
    assert not quick_check(store, 1, "u_fem")


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_training_data_damage_names_file_and_sample(
    capsys, copy_store, store2d_fem, damage, tmp_path
):
    store = copy_store(store2d_fem)
    shard = shard_file(store, variable="u_fem", index=2)
    shard.unlink() if damage == "delete" else truncate(shard, 120)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'[data]\nstore = "{store}"\nval_samples = 4\n[model]\ndim = 2\ndepth = 2\n'
        "base_filters = 4\n[cycle]\nname = 'half-V'\nlevels = 2\nepochs = 1\n"
    )
    expect_error(
        capsys, ["train", cfg, "--run-dir", tmp_path / "run"], r"damaged.*u_fem.*level1/u_fem/c/2"
    )
    assert not (tmp_path / "run").exists()


def test_level_dataset_names_sample_and_file(copy_store, store2d_fem):  # [C~] checksum
    store = copy_store(store2d_fem)
    ds = LevelDataset(store, 1, variables=("nu", "u_fem"))
    truncate(shard_file(store, variable="u_fem", index=1), 300)
    expect_api_error(lambda: ds[3], r"sample 3 of 'u_fem' at level 1 of .*verify")
    _set_sample(store, 1, "nu", 0, np.nan)
    expect_api_error(lambda: ds[0], r"sample 0 of 'nu' .*NaN")


@pytest.mark.parametrize(
    ("target", "content", "match"),
    [
        ("zarr.json", b'{"zarr_format": 3, "node_ty', r"zarr.json is corrupt"),  # [C~]
        ("zarr.json", b"", r"zarr.json is corrupt"),
        ("zarr.json", b"[1, 2]", r"zarr.json is not zarr metadata"),
        ("level1/nu/zarr.json", b"\x00\x01garbage", r"level1/nu/zarr.json is corrupt"),  # [C~]
        ("level2/zarr.json", b"{", r"level2/zarr.json is corrupt"),
    ],
)
def test_corrupt_metadata_named(capsys, copy_store, store2d, target, content, match):
    store = copy_store(store2d)
    (store / target).write_bytes(content)
    for argv in (["data", "info", store], ["data", "verify", store], ["fem", "solve", store]):
        expect_error(capsys, argv, match)


def test_not_a_dataset(capsys, tmp_path, files):
    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w").attrs["format"] = "someone-else"
    for argv, match in [
        (["data", "info", tmp_path / "none.zarr"], "no dataset at"),
        (["data", "info", files["notzarr"]], "is not a zarr store"),
        (["data", "info", files["text"]], "is not a zarr store"),
        (["data", "info", other], "not an mgtoolkit dataset"),
        (["data", "verify", tmp_path / "none.zarr"], "no dataset at"),
    ]:
        expect_error(capsys, argv, match)


def test_future_format_version(capsys, copy_store, store2d):
    store = copy_store(store2d)
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["format_version"] = 99
    (store / "zarr.json").write_text(json.dumps(meta))
    expect_error(capsys, ["data", "info", store], "format version 99")


def test_stale_creating_dirs_swept(tmp_path, dask_client):
    stale_dead = tmp_path / ".d.zarr.creating-nohost_x-999999999-abcd1234"
    import socket

    host = socket.gethostname().replace("-", "_")
    dead = tmp_path / f".d.zarr.creating-{host}-999999999-abcd1234"
    import os

    alive = tmp_path / f".d.zarr.creating-{host}-{os.getpid()}-abcd1234"
    old = tmp_path / ".d.zarr.creating-abcd1234"
    for d in (stale_dead, dead, alive, old):
        d.mkdir()
    os.utime(old, (0, 0))
    generate(
        tmp_path / "d.zarr", dim=2, resolution=4, levels=1, samples=1, seed=0,
        client=dask_client, progress=False,
    )  # fmt: skip
    assert not dead.exists() and not old.exists()
    assert alive.exists() and stale_dead.exists()  # a live run's, another host's: kept


def test_verify_api_on_missing_store(tmp_path):
    expect_api_error(lambda: verify_store(tmp_path / "x.zarr"), "no dataset", types=(OSError,))


@pytest.mark.parametrize(("value", "match"), [(0.0, "strictly positive"), (np.inf, "NaN or inf")])
def test_fem_solve_names_sample_with_bad_nu_value(
    capsys, copy_store, store2d, scheduler, value, match
):
    """[T] ν stored as 0 or inf (what float32 made of 1e-300 / 1e300 before import refused it)."""
    store = copy_store(store2d)
    _set_sample(store, 2, "nu", 5, value)
    argv = ["fem", "solve", store, "--level", "2", "--scheduler", scheduler, "--no-progress"]
    expect_error(capsys, argv, rf"sample 5 of level 2 of .*({match})")
    done = zarr.open_group(str(store))["level2"]["u_fem_complete"][:]
    assert not done[5]


def _contrast_field(kind: str, n: int = 16) -> np.ndarray:
    rng = np.random.default_rng(1)
    if kind == "random1e10":
        return 10.0 ** rng.choice([-5.0, 5.0], size=(1, n, n))
    nu = np.full((1, n, n), 1e-4)  # islands of 1e4 in 1e-4
    nu[0, 2:6, 3:7] = nu[0, 9:13, 8:12] = 1e4
    return nu


@pytest.mark.parametrize("kind", ["random1e10", "islands1e8"])
def test_fem_solve_high_contrast_never_stores_a_wrong_answer(
    capsys, tmp_path, scheduler, dask_client, kind
):
    """[S] contrast 1e10 stored u_fem with min -0.43; [T] islands: raw Cholesky error."""
    from mgtoolkit.data import import_arrays

    field = _contrast_field(kind)
    store = import_arrays(tmp_path / "c.zarr", field, levels=1, client=dask_client, progress=False)
    capsys.readouterr()
    rc = run_cli(["fem", "solve", store, "--scheduler", scheduler, "--no-progress"])
    err = capsys.readouterr().err
    group = zarr.open_group(str(store))["level1"]
    if rc == 0:
        u = np.asarray(group["u_fem"][0])
        assert u.min() >= -1e-6 and u.max() <= 1 + 1e-6
        assert verify_store(store).ok
    else:
        check_error(rc, err, r"sample 0 of level 1 of .*", "fem solve " + kind)
        assert not group["u_fem_complete"][0]


@pytest.mark.parametrize("damage", ["delete", "truncate", "nan"])
def test_spatially_chunked_store_damage(capsys, tmp_path, dask_client, scheduler, damage):
    """Large samples are split into spatial chunks (here 32² chunks of a 64² field)."""
    from mgtoolkit.data import Chunking

    store = tmp_path / "big.zarr"
    kw = dict(dim=2, resolution=64, levels=1, samples=2, seed=0, progress=False)
    generate(store, chunking=Chunking(chunk_mib=0.004), client=dask_client, **kw)
    good = np.asarray(zarr.open_group(str(store))["level1"]["nu"][:])
    chunk = store / "level1" / "nu" / "c" / "1" / "1" / "0"
    if damage == "delete":
        chunk.unlink()
    elif damage == "truncate":
        truncate(chunk, 40)
    else:
        zarr.open_group(str(store), mode="r+")["level1"]["nu"][1, 40, 3] = np.nan
    report = verify_store(store)
    assert [(d.variable, d.sample) for d in report.damaged] == [("nu", 1)]
    argv = ["data", "generate", "--dim", "2", "--resolution", "64", "--samples", "2",
            "--out", store, "--scheduler", scheduler, "--no-progress", "--repair"]  # fmt: skip
    assert run_cli(argv) == 0
    np.testing.assert_array_equal(zarr.open_group(str(store))["level1"]["nu"][:], good)
