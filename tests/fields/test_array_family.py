"""User arrays as a family: validation and geometric-mean coarsening."""

import itertools

import numpy as np
import pytest
import zarr

from mgtoolkit.fields import ArrayFamily, geometric_coarsen


def test_geometric_coarsen_is_the_geometric_mean_of_the_children():
    rng = np.random.default_rng(0)
    nu = np.exp(rng.normal(size=(4, 4, 4)))
    coarse = geometric_coarsen(nu, 2)
    for k, j, i in itertools.product(range(2), repeat=3):
        children = [
            nu[2 * k + a, 2 * j + b, 2 * i + c] for a, b, c in itertools.product((0, 1), repeat=3)
        ]
        assert coarse[k, j, i] == pytest.approx(np.prod(children) ** (1 / 8), rel=1e-12)


def test_block_at_a_coarse_level_nests_and_reads_by_pieces(monkeypatch):
    rng = np.random.default_rng(1)
    data = np.exp(rng.normal(size=(2, 16, 16)))
    fam = ArrayFamily(data)
    assert fam.data_shape == (2, 2, 16)
    # Reading the fine data in many small pieces must not change the result.
    monkeypatch.setattr("mgtoolkit.fields.arrays._PIECE_BYTES", 8 * 16 * 4)
    got = fam.block(1, None, dim=2, n=4, region=(slice(0, 4), slice(0, 4)))
    np.testing.assert_allclose(got, geometric_coarsen(geometric_coarsen(data[1], 2), 2), rtol=1e-12)


def test_a_zarr_array_is_read_lazily_and_validated(tmp_path):
    arr = zarr.create_array(
        str(tmp_path / "in.zarr"), shape=(3, 8, 8, 8), chunks=(1, 8, 8, 8), dtype="f4"
    )
    arr[:] = 2.0
    fam = ArrayFamily(arr)
    assert fam.data_shape == (3, 3, 8)
    np.testing.assert_array_equal(fam.block(2, None, dim=3, n=8, region=(slice(0, 8),) * 3), 2.0)


@pytest.mark.parametrize(
    ("data", "kwargs", "match"),
    [
        (np.full((2, 8, 8), np.nan), {}, "sample 0 contains NaN or inf"),
        (
            np.pad(np.ones((1, 7, 8)), ((0, 0), (0, 1), (0, 0)), constant_values=np.inf),
            {},
            "NaN or inf",
        ),
        (np.concatenate([np.ones((1, 8, 8)), -np.ones((1, 8, 8))]), {}, "sample 1 has values ≤ 0"),
        (np.zeros((8, 8)), {}, "values ≤ 0"),
        (np.ones(8), {}, "rank 1"),
        (np.ones((2, 2, 8, 8, 8)), {}, "rank 5"),
        (np.ones((8, 8)), {"dim": 3}, r"\(samples,\) \+ \(n,\)\*3"),
        (np.ones((2, 8, 4)), {}, "equal sides"),
        (np.ones((2, 6, 6)), {}, "power of two"),
    ],
)
def test_bad_user_arrays_are_refused(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ArrayFamily(data, **kwargs)


def test_one_field_without_sample_axis_becomes_one_sample():
    assert ArrayFamily(np.ones((8, 8, 8))).data_shape == (1, 3, 8)
    assert ArrayFamily(np.ones((8, 8))).data_shape == (1, 2, 8)
    assert ArrayFamily(np.ones((8, 8, 8)), dim=2).data_shape == (8, 2, 8)
