"""The field viewer served by panel in headless Chromium: the panels fit the page at 1500 px and
wrap at 700 px (nothing clipped), typing an index and pressing Enter shows that slice, clicking
in a slice moves the other two — read back from the Bokeh models in the page and compared with
the zarr store — and ticking *isosurface* shows the 3D view (an inline image: no request)."""

from __future__ import annotations

import socket
import time
import urllib.request

import numpy as np
import zarr

#: The image of every figure in the page's documents, with the figure's title.
IMAGES_JS = """() => {
  const out = [];
  for (const doc of Bokeh.documents) {
    for (const fig of doc.all_models) {
      if (fig.renderers === undefined || fig.title == null) continue;
      for (const r of fig.renderers) {
        if (r.glyph === undefined || r.glyph.type !== "Image") continue;
        const data = r.data_source.data.image[0];
        const nd = data.shape !== undefined;  // an NDArray, or nested arrays
        const shape = nd ? [data.shape[0], data.shape[1]] : [data.length, data[0].length];
        const flat = nd ? Array.from(data) : data.flat();
        out.push({title: fig.title.text, shape, flat});
      }
    }
  }
  return out;
}"""


#: Page coordinates of the data point (x, y) in the figure titled ``title``.
POINT_JS = """([title, x, y]) => {
  const view = Bokeh.index.query_one(
    v => v.frame !== undefined && v.model.title != null && v.model.title.text === title);
  const box = view.el.getBoundingClientRect();
  return [box.left + view.frame.x_scale.compute(x), box.top + view.frame.y_scale.compute(y)];
}"""


def shown_images(page) -> dict[str, np.ndarray]:
    """Figure title -> the image it draws (the last figure with that title)."""
    return {
        i["title"]: np.asarray(i["flat"], dtype=np.float64).reshape(i["shape"])
        for i in page.evaluate(IMAGES_JS)
    }


def shows(page, title, want) -> bool:
    img = shown_images(page).get(title)
    return img is not None and img.shape == want.shape and np.allclose(img, want, rtol=1e-6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=30.0, what=""):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_viewer_fits_the_page_and_applies_an_index_on_enter(
    browser_page, tmp_path, dask_client, monkeypatch
):
    import panel as pn

    from mgtoolkit.data import FemSolveFn, generate, map_samples
    from mgtoolkit.widgets import FieldViewer, extension

    store = tmp_path / "s3.zarr"
    generate(store, dim=3, resolution=8, levels=1, samples=2, seed=3, client=dask_client,
             progress=False)  # fmt: skip
    map_samples(store, FemSolveFn(), level=1, name="u_fem", client=dask_client, progress=False)
    u = np.asarray(zarr.open_group(str(store), mode="r")["level1"]["u_fem"][1])

    monkeypatch.setenv("BOKEH_RESOURCES", "server")  # served by panel itself: no CDN
    extension()
    viewer = FieldViewer(store, sample=1, axis="x", three=True, field="reference")
    port = free_port()
    server = pn.serve(
        {"viewer": lambda: viewer.view()}, port=port, address="127.0.0.1", show=False,
        threaded=True, websocket_origin=f"127.0.0.1:{port}",
    )  # fmt: skip
    page, problems = browser_page
    try:

        def up() -> bool:
            try:
                return (
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/viewer", timeout=5).status
                    == 200
                )
            except OSError:
                return False

        wait_for(up, what="the panel server")
        page.goto(f"http://127.0.0.1:{port}/viewer")
        # the three orthogonal slices through the middle node (4) of the 8-cell sample
        planes = {"z": u[4], "y": u[:, 4, :], "x": u[:, :, 4]}
        for axis, want in planes.items():
            title = f"u_fem, sample 1, {axis} node 4"
            wait_for(lambda t=title, w=want: shows(page, t, w), what=f"{title} in the page")
        page.screenshot(path=str(tmp_path / "viewer-1500.png"), full_page=False)

        def rightmost() -> float:
            return max(page.locator("canvas").evaluate_all(
                "cs => cs.map(c => c.getBoundingClientRect().right)"))  # fmt: skip

        def widest() -> float:  # every widget and plot: nothing sticks out of the page
            return max(page.locator(".bk-input-group, canvas, .bk-btn").evaluate_all(
                "es => es.map(e => e.getBoundingClientRect().right)"))  # fmt: skip

        assert rightmost() <= 1500, "a panel is clipped at 1500 px"
        assert widest() <= 1500 and page.evaluate("document.documentElement.scrollWidth") <= 1500
        page.set_viewport_size({"width": 700, "height": 3000})
        time.sleep(1.0)
        assert rightmost() <= 700, "the panels do not wrap at 700 px"
        assert widest() <= 700, "a widget sticks out at 700 px"
        assert page.evaluate("document.documentElement.scrollWidth") <= 700
        page.screenshot(path=str(tmp_path / "viewer-700.png"), full_page=True)

        # type 2 in the index box and press Enter: the x plane moves to node 2
        box = page.locator(".bk-input-group", has_text="index (Enter)").locator("input")
        box.fill("2")
        box.press("Enter")
        wait_for(lambda: viewer.index == 2, what="the index from the box")
        wait_for(
            lambda: shows(page, "u_fem, sample 1, x node 2", u[:, :, 2]),
            what="the x slice at node 2 in the page",
        )
        assert viewer.cursor == {"z": 4, "y": 4, "x": 2}
        page.screenshot(path=str(tmp_path / "viewer-index2.png"), full_page=True)

        # click the point (x, y) = (6, 2) / 8 in the z slice: the y and x slices move there
        wait_for(lambda: shows(page, "u_fem, sample 1, z node 4", u[4]), what="the z slice")
        x, y = page.evaluate(POINT_JS, ["u_fem, sample 1, z node 4", 0.75, 0.25])
        page.mouse.click(x, y)
        wait_for(lambda: viewer.cursor == {"z": 4, "y": 2, "x": 6}, what="the clicked cursor")
        for title, want in (("y node 2", u[:, 2, :]), ("x node 6", u[:, :, 6])):
            wait_for(
                lambda t=f"u_fem, sample 1, {title}", w=want: shows(page, t, w),
                what=f"the {title} slice after the click",
            )

        # tick "isosurface": the 3D view appears as an inline PNG
        page.locator(".bk-Checkbox", has_text="isosurface").locator("input").check()
        wait_for(lambda: viewer.surface, what="the isosurface box")
        png = page.locator("img[src^='data:image/png']")
        wait_for(lambda: png.count() == 1, what="the isosurface image")
        page.screenshot(path=str(tmp_path / "viewer-isosurface.png"), full_page=True)
    finally:
        server.stop()
    assert not problems.external_requests, problems.external_requests
    outside = [r for r in problems.failed_requests if "127.0.0.1" not in r]
    assert not outside, outside
    assert not problems.console_errors, problems.console_errors
