"""`mgtoolkit data import`, `import_arrays`: checked after the float32 cast, real numbers only."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from badcases import expect_api_error, expect_error

from mgtoolkit.data import import_arrays


def _ones(shape=(2, 16, 16)):
    return np.ones(shape)


def _with(value, dtype=float):
    a = np.ones((2, 16, 16), dtype=dtype)
    a[1, 3, 4] = value
    return a


CASES = [
    ("complex", np.ones((2, 16, 16), complex), "real numbers \\(got complex\\)"),  # [S]
    ("complex64", np.ones((2, 16, 16), np.complex64), "got complex"),
    ("bool", np.ones((2, 16, 16), bool), "got booleans"),
    ("tiny", _with(1e-300), "round to 0 in float32"),  # [S] stored as 0
    ("denormal_zero", _with(1e-46), "round to 0 in float32"),
    ("huge", _with(1e300), "beyond the float32 range"),  # [S] stored as inf
    ("huge39", _with(1e39), "beyond the float32 range"),
    ("nan", _with(np.nan), "NaN or inf"),
    ("inf", _with(np.inf), "NaN or inf"),
    ("negative", _with(-1.0), "values ≤ 0"),
    ("zero", _with(0.0), "values ≤ 0"),
    ("int_zero", np.zeros((2, 16, 16), dtype=np.int32), "values ≤ 0"),
    ("unequal", np.ones((2, 16, 8)), "equal sides"),
    ("not_pow2", np.ones((2, 12, 12)), "power of two"),
    ("rank1", np.ones(16), "rank 1"),
    ("rank5", np.ones((2, 2, 4, 4, 4)), "rank 5"),
    ("no_samples", np.ones((0, 16, 16)), "no samples"),
    ("one_cell", np.ones((2, 1, 1)), "power of two ≥ 2"),
]


@pytest.mark.parametrize(("name", "data", "match"), CASES, ids=[c[0] for c in CASES])
def test_import_npy(capsys, tmp_path, scheduler, name, data, match):
    src = tmp_path / f"{name}.npy"
    np.save(src, data)
    out = tmp_path / "d.zarr"
    expect_error(capsys, ["data", "import", src, "--out", out, "--scheduler", scheduler], match)
    assert not out.exists()


def test_import_object_dtype(capsys, tmp_path):  # [C~] 'can't be memory-mapped'
    src = tmp_path / "obj.npy"
    np.save(src, np.array([[1, 2], [3, 4]], dtype=object), allow_pickle=True)
    expect_error(
        capsys,
        ["data", "import", src, "--out", tmp_path / "o"],
        r"obj\.npy holds Python objects .*save ν as a float array",
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "content", [b"garbage" * 20, b"", b"\x93NUMPY\x01\x00{'descr': '<f8'", b"PK\x03\x04zip"]
)
def test_import_garbage_npy(capsys, tmp_path, content):  # [C~] 'contains pickled data'
    src = tmp_path / "g.npy"
    src.write_bytes(content)
    line = expect_error(
        capsys,
        ["data", "import", src, "--out", tmp_path / "o"],
        r"g\.npy.* \.npy array.*numpy\.save",
    )
    assert "pickled" not in line and not (tmp_path / "o").exists()


def test_import_missing_and_wrong_inputs(capsys, tmp_path, files, store2d):
    expect_error(
        capsys, ["data", "import", tmp_path / "x.npy", "--out", tmp_path / "o"], "no input"
    )
    expect_error(capsys, ["data", "import", files["text"], "--out", tmp_path / "o"], "neither")
    expect_error(
        capsys,
        ["data", "import", store2d, "--variable", "u", "--out", tmp_path / "o"],
        "has no array 'u'",
    )


def test_import_zarr_complex(capsys, tmp_path, scheduler):
    src = tmp_path / "c.zarr"
    zarr.create_array(str(src), shape=(2, 8, 8), dtype="complex128")[:] = 1 + 1j
    expect_error(
        capsys, ["data", "import", src, "--out", tmp_path / "o", "--scheduler", scheduler],
        "got complex",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (None, "got None"),
        (np.ones((2, 8, 8)) + 1j, "complex"),
        (np.array(["a"] * 64).reshape(1, 8, 8), "dtype <U1"),
        (_with(1e-300), "round to 0"),
    ],
)
def test_import_arrays_api(tmp_path, data, match):
    expect_api_error(
        lambda: import_arrays(tmp_path / "d.zarr", data, levels=1, progress=False), match
    )
    assert not (tmp_path / "d.zarr").exists()


def test_good_import_still_works(tmp_path, dask_client):
    a = np.exp(np.random.default_rng(0).normal(size=(2, 8, 8)))
    path = import_arrays(tmp_path / "d.zarr", a, levels=2, client=dask_client, progress=False)
    np.testing.assert_array_equal(
        zarr.open_group(str(path))["level1"]["nu"][:], a.astype(np.float32)
    )
