"""Field viewer and dataset browser: selections equal direct zarr reads; errors; bad input."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zarr

from mgtoolkit.widgets import DatasetBrowser, FieldViewer, MissingFieldError


def raw(store, level, name):
    """The stored array read with zarr directly (independent of xarray and the viewer)."""
    return np.asarray(zarr.open_group(str(store), mode="r")[f"level{level}"][name][:])


def test_2d_selection_equals_the_store(store2d):
    v = FieldViewer(store2d, sample=4)
    sel = v.selection()
    assert sel.keys() == {"nu", "u_pred", "u_fem", "difference"}
    np.testing.assert_array_equal(sel["nu"], raw(store2d, 1, "nu")[4])
    np.testing.assert_array_equal(sel["u_fem"], raw(store2d, 1, "u_fem")[4])
    np.testing.assert_allclose(
        sel["difference"], raw(store2d, 1, "u_pred")[4] - raw(store2d, 1, "u_fem")[4], atol=1e-7
    )
    assert sel["nu"].shape == (16, 16) and sel["u_fem"].shape == (17, 17)
    assert v.plane_axes() == ("y", "x")


def test_error_figures_match_numpy(store2d):
    v = FieldViewer(store2d, sample=2)
    u = raw(store2d, 1, "u_pred")[2].astype(np.float64)
    ref = raw(store2d, 1, "u_fem")[2].astype(np.float64)
    e = v.errors()
    assert e["rel_l2"] == pytest.approx(np.linalg.norm(u - ref) / np.linalg.norm(ref), rel=1e-9)
    assert e["max_abs"] == pytest.approx(np.abs(u - ref).max(), rel=1e-9)
    assert e["energy_gap"] > 0  # u_fem minimizes the energy
    assert "relative L2 error" in v.error_text()


@pytest.mark.parametrize("axis, index", [("z", 0), ("y", 3), ("x", 8)])
def test_3d_slices(store3d, axis, index):
    v = FieldViewer(store3d, sample=1, axis=axis, index=index)
    sel = v.selection()
    nu, u = raw(store3d, 1, "nu")[1], raw(store3d, 1, "u_fem")[1]
    k = "zyx".index(axis)
    np.testing.assert_array_equal(sel["nu"], np.take(nu, min(index, 7), axis=k))
    np.testing.assert_array_equal(sel["u_fem"], np.take(u, index, axis=k))
    assert "u_pred" not in sel and "difference" not in sel
    assert v.plane_axes() == tuple(a for a in "zyx" if a != axis)


def test_3d_slice_index_out_of_range(store3d):
    v = FieldViewer(store3d, axis="y", index=9)
    with pytest.raises(ValueError, match=r"slice index 9 is out of range.*node index 0\.\.8"):
        v.selection()
    v.level = 2  # 4 cells per side: the index is re-centred on a level change
    assert v.index == 2 and v.selection()["nu"].shape == (4, 4)


def test_missing_reference_explains_how_to_add_it(store3d):
    v = FieldViewer(store3d, level=2)  # u_fem was solved at level 1 only
    with pytest.raises(MissingFieldError, match=r"no 'u_fem' at level 2.*mgtoolkit fem solve"):
        v.compare()
    assert "mgtoolkit fem solve" in v.error_text()
    v1 = FieldViewer(store3d, level=1)
    with pytest.raises(MissingFieldError, match="mgtoolkit predict"):
        v1.errors()


def test_views_render(store2d, store3d):
    import holoviews as hv

    for v in (FieldViewer(store2d), FieldViewer(store3d, axis="x", index=4)):
        hv.render(v.images(), backend="bokeh")
        v.view()


def test_large_store_opens_lazily(tmp_path):
    """A 512³ store (metadata only, nothing written) opens and slices at once."""
    from mgtoolkit import __version__
    from mgtoolkit.data import FORMAT_VERSION, Chunking
    from mgtoolkit.data.store import FORMAT, create_store

    path = tmp_path / "big.zarr"
    attrs = dict(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        mgtoolkit_version=__version__,
        family="kl",
        family_parameters={},
        coarsening="analytic",
        seed=0,
        omega_source="sobol",
        dim=3,
        resolution=512,
        levels=1,
        samples=2,
    )
    create_store(path, attrs=attrs, omega=np.zeros((2, 4)), chunking=Chunking())
    t0 = time.perf_counter()
    v = FieldViewer(path, sample=1, axis="x", index=300)
    sel = v.selection()
    elapsed = time.perf_counter() - t0
    assert sel["nu"].shape == (512, 512) and np.isnan(sel["nu"]).all()  # never written
    assert elapsed < 5.0, f"opening and slicing a 512³ store took {elapsed:.1f} s"


def test_browser_picks_samples_by_omega(store2d):
    v = FieldViewer(store2d)
    b = DatasetBrowser(store2d, viewer=v, mode_x=2, mode_y=3)
    omega = raw(store2d, 1, "omega")
    target = 3
    b.pick(omega[target, 1] + 1e-3, omega[target, 2] - 1e-3)
    assert b.sample == target and v.sample == target
    lo = np.sort(omega[:, 0])[2]
    np.testing.assert_array_equal(b.where(omega1=(-3.0, lo)), np.flatnonzero(omega[:, 0] <= lo))
    with pytest.raises(ValueError, match=r"omega1\.\.omega4"):
        b.where(nu=(0, 1))
