"""Every bad input: a clear error naming the fix, and nothing written or overwritten."""

import json

import numpy as np
import pytest
import zarr

from mgtoolkit.data import (
    LevelDataset,
    check_store,
    generate,
    import_arrays,
    map_samples,
    open_level,
    open_store,
)

GOOD = dict(dim=2, resolution=16, levels=2, samples=3, seed=0, progress=False)


def snapshot(path):
    return {p: p.stat().st_mtime_ns for p in path.rglob("*")}


@pytest.fixture
def store(tmp_path, dask_client):
    path = tmp_path / "d.zarr"
    generate(path, client=dask_client, **GOOD)
    return path


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"resolution": 24}, "power of two"),
        ({"resolution": 0}, "power of two"),
        ({"resolution": 4, "levels": 3}, "use at most 2 levels"),
        ({"levels": 0}, "levels must be a positive integer"),
        ({"dim": 4}, "dim must be 2 or 3"),
        ({"dim": 1}, "dim must be 2 or 3"),
        ({"samples": 0}, "samples must be a positive integer"),
        ({"samples": -2}, "samples must be a positive integer"),
        ({"family": "nope"}, "unknown coefficient family 'nope'"),
        ({"omega": np.zeros((3, 5))}, "4 entries per sample"),
        ({"omega": np.full((3, 4), 3.5)}, r"\[-3, 3\]"),
        ({"omega": np.zeros((2, 4))}, "omega has 2 rows but samples=3"),
    ],
)
def test_bad_parameters_write_nothing(tmp_path, change, match):
    path = tmp_path / "d.zarr"
    with pytest.raises(ValueError, match=match):
        generate(path, **{**GOOD, **change})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"resolution": 32}, r"resolution=16 \(asked 32\)"),
        ({"samples": 4}, r"samples=3 \(asked 4\)"),
        ({"seed": 1}, r"seed=0 \(asked 1\)"),
        ({"dim": 3, "resolution": 8}, r"dim=2 \(asked 3\)"),
        ({"omega": np.zeros((3, 4)), "seed": 0}, r"omega \(the stored ω differ from those asked\)"),
    ],
)
def test_existing_store_with_other_parameters_is_left_alone(store, change, match):
    before = snapshot(store)
    with pytest.raises(ValueError, match=match) as err:
        generate(store, **{**GOOD, **change})
    assert "--overwrite" in str(err.value)
    assert snapshot(store) == before


def test_path_that_is_not_a_store_is_refused_even_with_overwrite(tmp_path):
    somefile = tmp_path / "notes.txt"
    somefile.write_text("keep me")
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "a.csv").write_text("1,2")
    for path in (somefile, folder):
        for overwrite in (False, True):
            with pytest.raises(ValueError, match="is not a zarr store; choose another output"):
                generate(path, overwrite=overwrite, **GOOD)
    assert somefile.read_text() == "keep me" and (folder / "a.csv").read_text() == "1,2"


def test_readers_refuse_paths_that_are_not_stores(tmp_path):
    with pytest.raises(FileNotFoundError, match="mgtoolkit data generate --out"):
        open_store(tmp_path / "missing.zarr")
    with pytest.raises(ValueError, match="is not a zarr store"):
        open_level(tmp_path, 1)
    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w").attrs["hello"] = 1
    with pytest.raises(ValueError, match="not an mgtoolkit dataset"):
        LevelDataset(other, 1)
    with pytest.raises(ValueError, match="not an mgtoolkit dataset"):
        generate(other, **GOOD)


def set_format_version(path, version):
    meta = path / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["format_version"] = version
    meta.write_text(json.dumps(doc))


def test_incompatible_format_version_is_refused_until_overwrite(store, dask_client):
    set_format_version(store, 99)
    for call in (
        lambda: open_store(store),
        lambda: check_store(store),
        lambda: LevelDataset(store, 1),
    ):
        with pytest.raises(ValueError, match=r"format version 99.*reads version 1.*--overwrite"):
            call()
    before = snapshot(store)
    with pytest.raises(ValueError, match="format version 99"):
        generate(store, client=dask_client, **GOOD)
    assert snapshot(store) == before
    generate(store, client=dask_client, overwrite=True, **GOOD)
    assert check_store(store)["format_version"] == 1


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (np.full((2, 8, 8), np.nan), "NaN or inf"),
        (np.full((2, 8, 8), np.inf), "NaN or inf"),
        (np.zeros((2, 8, 8)), "≤ 0"),
        (-np.ones((2, 8, 8, 8)), "≤ 0"),
        (np.ones((2, 2, 2, 8, 8)), "rank 5"),
        (np.ones((2, 8, 4)), "equal sides"),
    ],
)
def test_bad_user_arrays_write_nothing(tmp_path, data, match):
    with pytest.raises(ValueError, match=match):
        import_arrays(tmp_path / "d.zarr", data, levels=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_reads_and_maps_name_the_fix(store, dask_client):
    with pytest.raises(ValueError, match=r"level must be 1 \(finest\) .. 2"):
        open_level(store, 3)
    with pytest.raises(ValueError, match=r"no variable 'u_fem' at level 1.*mgtoolkit fem solve"):
        LevelDataset(store, 1, variables=("nu", "u_fem"))
    with pytest.raises(ValueError, match=r"indices must be sample numbers in 0 \.\. 2"):
        LevelDataset(store, 1, indices=[0, 3])
    with pytest.raises(ValueError, match="cannot name a node field"):
        map_samples(store, np.ones_like, level=1, name="nu")
    with pytest.raises(ValueError, match=r"level must be 1 \(finest\) .. 2"):
        map_samples(store, np.ones_like, level=0, name="u_fem")
    with pytest.raises(RuntimeError, match=r"needs \(17, 17\) \(n \+ 1 nodes per side"):
        map_samples(store, np.ones_like, level=1, name="u_fem", client=dask_client, progress=False)
    assert not zarr.open_array(str(store), path="level1/u_fem_complete", mode="r")[:].any()


def test_incomplete_samples_are_not_served(store):
    marker = zarr.open_array(str(store), path="level1/nu_complete", mode="r+")
    marker[1] = False
    with pytest.raises(
        ValueError, match="1 requested samples \\(first: 1\\) have no complete 'nu'"
    ):
        LevelDataset(store, 1)
    assert len(LevelDataset(store, 1, indices=[0, 2])) == 2
    with pytest.raises(ValueError, match="have no complete ν yet"):
        map_samples(store, np.ones_like, level=1, name="u_fem")
