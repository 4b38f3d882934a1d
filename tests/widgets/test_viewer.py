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
    v.field = "nu"  # the 3D view reads 64³ of the 512³ cells (the store has no coarser level)
    vol = v.volume()
    assert vol.array.shape == (64, 64, 64) and vol.source == "every 8th cell of level 1"
    surf = v.isosurface()
    assert len(surf.triangles) == 0 and "64³ cells shown of 512³" in surf.title


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


# ---------------------------------------------------------------- the view, read back from Bokeh
def shown(pane) -> np.ndarray:
    """The array a displayed panel draws: the Bokeh image glyph's data, read from the model."""
    from bokeh.models import GlyphRenderer, Image

    images = [
        r.data_source.data["image"][0]
        for r in pane.get_root().select({"type": GlyphRenderer})
        if isinstance(r.glyph, Image)
    ]
    assert len(images) == 1
    return np.asarray(images[0], dtype=np.float64)


def test_3d_view_slider_and_index_box_show_the_stored_slice(store3d):
    v = FieldViewer(store3d, sample=1, axis="y")
    view = v.view()
    parts = v.parts
    nu, u = raw(store3d, 1, "nu")[1], raw(store3d, 1, "u_fem")[1]

    def check(index):
        assert v.index == index and parts["slider"].value == index
        assert parts["box"].value == str(index)
        panes = parts["plots"].objects
        assert len(panes) == 2  # ν and u_fem (no prediction in this store)
        np.testing.assert_array_equal(shown(panes[0]), np.take(nu, min(index, 7), axis=1))
        np.testing.assert_allclose(shown(panes[1]), np.take(u, index, axis=1), rtol=1e-6)

    check(4)  # the middle plane of 8 cells
    parts["slider"].value = 1  # dragging the slider
    check(1)
    parts["box"].value = "8"  # typing 8 and pressing Enter in the index box
    check(8)
    assert parts["slider"].end == 8
    # an index out of range: a warning and no figure, then a valid index removes the warning
    parts["box"].value = "9"
    assert parts["alert"].object is not None and "out of range" in parts["alert"].object
    assert parts["plots"].objects == []
    parts["box"].value = "3"
    assert parts["alert"].object is None
    check(3)
    # another axis keeps each axis' own index (the cursor)
    v.axis = "z"
    assert v.index == 4 and v.cursor == {"z": 4, "y": 3, "x": 4}
    np.testing.assert_array_equal(shown(parts["plots"].objects[0]), nu[4])
    assert view.sizing_mode == "stretch_width"


def test_three_orthogonal_slices_through_the_cursor(store3d):
    v = FieldViewer(store3d, sample=0, three=True, field="reference")
    v.view()
    for axis, index in (("z", 2), ("y", 6), ("x", 1)):
        v.axis, v.index = axis, index
    assert v.cursor == {"z": 2, "y": 6, "x": 1}
    u = raw(store3d, 1, "u_fem")[0]
    expected = {"z": u[2], "y": u[:, 6, :], "x": u[:, :, 1]}
    planes = v.orthogonal()
    panes = v.parts["plots"].objects
    assert len(panes) == 3
    for (axis, want), pane, panel in zip(expected.items(), panes, v.panels(), strict=True):
        np.testing.assert_array_equal(planes[axis], want)
        np.testing.assert_allclose(shown(pane), want, rtol=1e-6)
        assert panel["title"].endswith(f"{axis} node {v.cursor[axis]}")
    # the dashed lines mark the other two planes: in the z plane (y, x) = (6, 1) / 8
    assert v.panels()[0]["cross"] == (6 / 8, 1 / 8)
    v.field = "nu"  # ν on the cells above each node plane
    nu = raw(store3d, 1, "nu")[0]
    np.testing.assert_array_equal(shown(v.parts["plots"].objects[1]), nu[:, 6, :])
    v.field = "difference"  # needs u_pred, which this store lacks: the fix, not a stale figure
    assert "mgtoolkit predict" in v.parts["alert"].object
    assert v.parts["plots"].objects == []


def test_save_writes_the_shown_arrays(store2d, store3d, tmp_path):
    v = FieldViewer(store2d, sample=3)
    fig = v.matplotlib_figure()
    drawn = [np.asarray(ax.images[0].get_array()) for ax in fig.axes if ax.images]
    np.testing.assert_array_equal(drawn[0], raw(store2d, 1, "nu")[3])
    np.testing.assert_allclose(drawn[2], raw(store2d, 1, "u_fem")[3], rtol=1e-6)
    png = v.save(tmp_path / "sample3.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = v.save(tmp_path / "sample3.html").read_text()
    assert "Bokeh" in html and "cdn.bokeh.org" not in html  # JavaScript inline: opens offline
    three = FieldViewer(store3d, three=True, field="reference")
    assert three.save(tmp_path / "three.svg").read_text().startswith("<?xml")
    with pytest.raises(ValueError, match="png"):
        v.save(tmp_path / "x.jpg")
    v.view()
    assert v.parts["download"].callback().getvalue()[:4] == b"\x89PNG"


def test_browser_and_viewer_linked_both_ways(store2d):
    v = FieldViewer(store2d, sample=5)
    b = DatasetBrowser(store2d, viewer=v)
    assert b.sample == 5
    v.sample = 2  # chosen in the viewer: ringed in the browser
    assert b.sample == 2
    b.sample = 4
    assert v.sample == 4


# ---------------------------------------------------------------- 3D view and click-to-move
def test_volume_is_the_coarsened_or_strided_store(store3d):
    from mgtoolkit.widgets.viewer import SURFACE_MAX_CELLS

    v = FieldViewer(store3d, sample=1, field="reference")
    u = raw(store3d, 1, "u_fem")[1]
    full = v.volume()  # 8³ cells fit under the cap: every node
    assert 8**3 <= SURFACE_MAX_CELLS and full.cells == 8 and full.nodes
    np.testing.assert_array_equal(full.array, u)
    half = v.volume(max_cells=4**3)  # every 2nd node of level 1
    assert half.cells == 4 and half.source == "every 2nd node of level 1"
    np.testing.assert_array_equal(half.array, u[::2, ::2, ::2])
    v.field = "nu"  # ν at 4³: the store's own level 2, as log10
    nu = v.volume(max_cells=4**3)
    assert nu.source == "level 2 of the store" and not nu.nodes and nu.origin == 1 / 8
    np.testing.assert_allclose(nu.array, np.log10(raw(store3d, 2, "nu")[1]), rtol=1e-6)
    v.level = 2  # no level 3 to read: the cell at the centre of each 2³ block of level 2
    nu2 = v.volume(max_cells=2**3)
    assert nu2.cells == 2 and nu2.source == "every 2nd cell of level 2"
    np.testing.assert_allclose(nu2.array, np.log10(raw(store3d, 2, "nu")[1][1::2, 1::2, 1::2]))


def test_isosurface_of_the_shown_volume(store3d, tmp_path):
    from mgtoolkit.widgets.isosurface import isosurface

    v = FieldViewer(store3d, sample=0, field="reference", iso=0.3)
    u = raw(store3d, 1, "u_fem")[0].astype(np.float64)[::2, ::2, ::2]
    surf = v.isosurface(max_cells=4**3)
    value = u.min() + 0.3 * (u.max() - u.min())
    assert surf.value == pytest.approx(value)
    np.testing.assert_array_equal(surf.triangles, isosurface(u, value, spacing=0.25))
    assert len(surf.triangles) > 0
    assert "u_fem = " in surf.title and "4³ cells shown of 8³ (every 2nd node" in surf.title
    # too many triangles: the surface is made again from half the resolution
    coarse = v.isosurface(max_triangles=len(surf.triangles) - 1, max_cells=4**3)
    assert coarse.volume.cells == 2 and "2³ cells shown of 8³" in coarse.title
    fig = v.isosurface_figure()
    assert fig.axes[0].name == "3d" and len(fig.axes[0].collections) == 1
    saved = v.save(tmp_path / "surface.png", figure="isosurface")
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved.read_bytes() != v.save(tmp_path / "slices.png").read_bytes()
    with pytest.raises(ValueError, match=r"isosurface to \.png"):
        v.save(tmp_path / "surface.html", figure="isosurface")
    # turning the view reuses the surface; another sample reads its own volume
    v.azimuth = 30.0
    assert v.isosurface(max_cells=4**3) is v.isosurface(max_cells=4**3)
    v.sample = 1
    other = raw(store3d, 1, "u_fem")[1].astype(np.float64)[::2, ::2, ::2]
    np.testing.assert_array_equal(v.isosurface(max_cells=4**3).volume.array, other)


def test_3d_view_needs_a_3d_store_and_the_field(store2d, store3d):
    with pytest.raises(ValueError, match=r"3D view needs a 3D store; .*s2\.zarr holds 2D fields"):
        FieldViewer(store2d).volume()
    with pytest.raises(MissingFieldError, match="mgtoolkit predict"):
        FieldViewer(store3d, field="difference").isosurface()


def test_view_shows_the_isosurface(store3d):
    import panel as pn
    import param

    v = FieldViewer(store3d, sample=1, field="reference")
    v.view()
    assert len(v.parts["plots"].objects) == 2
    v.parts["surface"].value = True  # ticking "isosurface"
    panes = v.parts["plots"].objects
    assert len(panes) == 3 and isinstance(panes[2], pn.pane.Matplotlib)
    assert panes[2].object.axes[0].get_title() == v.isosurface().title
    slider = v.parts["elevation"]
    with param.edit_constant(slider):  # what the browser sends when the slider is released
        slider.value_throttled = 60.0
    assert v.elevation == 60.0 and v.parts["plots"].objects[2].object.axes[0].elev == 60.0


def test_clicking_a_slice_moves_the_cursor(store3d):
    v = FieldViewer(store3d, sample=0, three=True, field="reference")
    v.view()
    u = raw(store3d, 1, "u_fem")[0]
    assert v.cursor == {"z": 4, "y": 4, "x": 4}
    z_plane = shown(v.parts["plots"].objects[0])
    v.parts["taps"][0].event(x=0.26, y=0.74)  # a click in the z slice at (x, y) ≈ (2, 6) / 8
    assert v.cursor == {"z": 4, "y": 6, "x": 2}
    panes = v.parts["plots"].objects
    np.testing.assert_allclose(shown(panes[0]), z_plane)  # the clicked plane stays
    np.testing.assert_allclose(shown(panes[1]), u[:, 6, :], rtol=1e-6)  # the others follow
    np.testing.assert_allclose(shown(panes[2]), u[:, :, 2], rtol=1e-6)
    assert v.panels()[0]["cross"] == (6 / 8, 2 / 8)
    v.parts["taps"][2].event(x=0.0, y=1.2)  # in the x slice (z up, y across), clipped to 8
    assert v.cursor == {"z": 8, "y": 0, "x": 2} and v.index == 8  # the selected axis is z
    np.testing.assert_allclose(shown(v.parts["plots"].objects[0]), u[8], rtol=1e-6)
