"""Task planning: units cover exactly the incomplete write blocks, never a complete one."""

import numpy as np
import pytest
import zarr

from mgtoolkit.data._tasks import MIN_TASKS, plan_units, write_blocks


def covered(units):
    return sorted(s for u in units for s in range(u.start, u.stop))


@pytest.mark.parametrize(("samples", "shards"), [(40, (5, 8, 8)), (13, (4, 8, 8)), (9, None)])
def test_units_cover_incomplete_blocks_aligned_to_shards(tmp_path, samples, shards):
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=(samples, 8, 8), chunks=(1, 8, 8),
                            shards=shards, dtype="f4")  # fmt: skip
    step = shards[0] if shards else 1
    rng = np.random.default_rng(0)
    for _ in range(20):
        done = rng.random(samples) < 0.4
        # A block counts as done only when all its samples are (markers are set per unit).
        for b in range(0, samples, step):
            done[b : b + step] = done[b]
        units = plan_units(arr, done, 1)
        assert covered(units) == list(np.flatnonzero(~done))
        for u in units:
            assert u.start % step == 0 and (u.stop % step == 0 or u.stop == samples)
            blocks = list(write_blocks(arr, u))
            assert blocks[0][0] == u.start and blocks[-1][1] == u.stop
    assert len(plan_units(arr, np.zeros(samples, bool), 1)) >= min(MIN_TASKS, -(-samples // step))


def test_spatially_chunked_samples_become_rows_of_chunks(tmp_path):
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=(3, 16, 16, 16), chunks=(1, 8, 8, 8),
                            dtype="f4")  # fmt: skip
    units = plan_units(arr, np.array([True, False, False]), 2)
    rows = [((0, 8), (0, 8)), ((0, 8), (8, 16)), ((8, 16), (0, 8)), ((8, 16), (8, 16))]
    assert [(u.start, u.row) for u in units] == [(s, r) for s in (1, 2) for r in rows]
    assert all(u.level == 2 and u.stop == u.start + 1 for u in units)
    whole = plan_units(arr, np.array([True, False, False]), 2, split=False)
    assert [(u.start, u.stop, u.row) for u in whole] == [(1, 2, None), (2, 3, None)]


def test_chunk_regions_tile_a_row_exactly():
    from mgtoolkit.data._tasks import chunk_regions

    cover = np.zeros((20, 12, 10), dtype=int)
    for region in chunk_regions((20, 12, 10), (8, 8, 8), ((8, 16), (8, 12))):
        assert all(r.start % 8 == 0 for r in region)
        cover[region] += 1
    assert (cover[8:16, 8:12] == 1).all() and cover.sum() == 8 * 4 * 10
