"""Field viewer and dataset browser over a dataset store (:mod:`mgtoolkit.data.store`).

:class:`FieldViewer` shows ν, the prediction, the FEM reference and their difference side by
side for one sample and level — a 2D field whole, a 3D field as a slice through a chosen axis
and node index — with shared colour scales and the sample's error figures.
:class:`DatasetBrowser` picks samples by their family parameters ω.

Everything reads lazily through :func:`mgtoolkit.data.open_level`: opening a 512³ store reads
metadata only, and a slice reads only the chunks it crosses.

Slicing convention (3D): ``index`` is a *node* index ``0..n`` along ``axis``; node fields are
shown on that node plane, ν on the layer of cells just above it (cell index
``min(index, n - 1)``), so both describe the same place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import param

from mgtoolkit.grids import AXES
from mgtoolkit.widgets._view import Slot, holoviews, named

__all__ = ["DatasetBrowser", "FieldViewer", "MissingFieldError"]

#: Bokeh figure names (tests look them up).
VIEWER_NAME = "mgtoolkit-field-viewer"

#: Largest sample (cells) for which the energy gap is computed in memory (float64 copies).
ENERGY_GAP_MAX_CELLS = 256**3


class MissingFieldError(ValueError):
    """A node field the viewer needs is not in the store (the message says how to add it)."""


def _how_to_add(name: str, store: Path, level: int) -> str:
    if name == "u_fem":
        return (
            f"compute the FEM reference with `mgtoolkit fem solve {store} --level {level}` "
            "(or mgtoolkit.data.solve_store)"
        )
    if name == "u_pred":
        return (
            f"write a trained network's prediction with `mgtoolkit predict <run_dir> {store} "
            f"--level {level}` (or mgtoolkit.infer.predict)"
        )
    return f"add the node field {name!r} with mgtoolkit.data.map_samples(..., name={name!r})"


class FieldViewer(param.Parameterized):
    """Selection state of the field viewer; :meth:`selection` returns the arrays shown.

    Parameters
    ----------
    store : path-like
        A dataset store.
    """

    level = param.Integer(default=1, bounds=(1, None), doc="Level (1 = finest).")
    sample = param.Integer(default=0, bounds=(0, None))
    axis = param.Selector(default="z", objects=["z", "y", "x"], doc="Slice normal (3D only).")
    index = param.Integer(default=None, allow_None=True, doc="Node index 0..n (default: middle).")
    prediction = param.String(default="u_pred", doc="Node field of the prediction.")
    reference = param.String(default="u_fem", doc="Node field of the FEM reference.")

    def __init__(self, store: str | Path, **params):
        from mgtoolkit.data import check_store

        self.store = Path(store)
        self.attrs = check_store(self.store)
        self._levels: dict[int, object] = {}
        super().__init__(**params)
        self.param.level.bounds = (1, self.attrs["levels"])
        self.param.sample.bounds = (0, self.attrs["samples"] - 1)
        if self.dim == 3 and self.index is None:
            self.index = self.n() // 2

    @param.depends("level", watch=True)
    def _recentre(self) -> None:
        # Node indices of one level mean nothing on another: start from the middle plane.
        if self.dim == 3:
            self.index = self.n() // 2

    # ------------------------------------------------------------------ store access
    @property
    def dim(self) -> int:
        return int(self.attrs["dim"])

    def n(self, level: int | None = None) -> int:
        """Cells per side at ``level`` (default: the selected level)."""
        return int(self.attrs["resolution"]) >> ((level or self.level) - 1)

    def dataset(self, level: int | None = None):
        """The lazy :class:`xarray.Dataset` of ``level`` (opened once)."""
        from mgtoolkit.data import open_level

        level = level or self.level
        if level not in self._levels:
            self._levels[level] = open_level(self.store, level)
        return self._levels[level]

    def has(self, name: str, *, level: int | None = None, sample: int | None = None) -> bool:
        """Whether node field ``name`` exists and is complete for the sample."""
        ds = self.dataset(level)
        marker = f"{name}_complete"
        if name not in ds or marker not in ds:
            return False
        return bool(ds[marker][self.sample if sample is None else sample].values)

    def require(self, name: str) -> None:
        """Raise :class:`MissingFieldError` (saying how to add it) unless ``name`` is there."""
        ds = self.dataset()
        if name not in ds:
            raise MissingFieldError(
                f"{self.store} has no {name!r} at level {self.level}; "
                f"{_how_to_add(name, self.store, self.level)}"
            )
        if not self.has(name):
            done = int(ds[f"{name}_complete"].sum().values)
            raise MissingFieldError(
                f"sample {self.sample} has no {name!r} yet at level {self.level} ({done}/"
                f"{ds.sizes['sample']} samples complete); rerun the command that writes it "
                f"(it resumes): {_how_to_add(name, self.store, self.level)}"
            )

    # ------------------------------------------------------------------ selection
    def slice_index(self) -> int | None:
        """The validated node index of the slice (None in 2D).

        Raises
        ------
        ValueError
            An index outside ``0..n`` (nodes) for the selected level.
        """
        if self.dim == 2:
            return None
        n = self.n()
        index = n // 2 if self.index is None else self.index
        if not 0 <= index <= n:
            raise ValueError(
                f"slice index {index} is out of range for axis {self.axis} at level "
                f"{self.level} ({n} cells per side): use a node index 0..{n}"
            )
        return int(index)

    def _cut(self, name: str, *, nodes: bool) -> np.ndarray:
        """One field of the selected sample as a 2D array (y-like axis first)."""
        da = self.dataset()[name].isel(sample=self.sample)
        if self.dim == 3:
            index = self.slice_index()
            dim = f"{self.axis}_node" if nodes else self.axis
            da = da.isel({dim: index if nodes else min(index, self.n() - 1)})
        return np.asarray(da.values, dtype=np.float64)

    def plane_axes(self) -> tuple[str, str]:
        """Names of the (vertical, horizontal) axes of the shown plane."""
        axes = AXES[self.dim]
        rest = tuple(a for a in axes if a != self.axis) if self.dim == 3 else axes
        return rest[0], rest[1]

    def selection(self) -> dict[str, np.ndarray]:
        """The arrays shown for the current selection.

        Returns
        -------
        dict
            ``"nu"``: ν on the cells of the plane, shape ``(n, n)``; when present and complete,
            the prediction and reference on its nodes, ``(n + 1, n + 1)``, under their field
            names, and ``"difference"`` = prediction − reference. The first axis is the
            plane's vertical axis (:meth:`plane_axes`).
        """
        self.slice_index()  # validate before reading anything
        out = {"nu": self._cut("nu", nodes=False)}
        for name in (self.prediction, self.reference):
            if self.has(name):
                out[name] = self._cut(name, nodes=True)
        if self.prediction in out and self.reference in out:
            out["difference"] = out[self.prediction] - out[self.reference]
        return out

    def compare(self) -> dict[str, np.ndarray]:
        """Like :meth:`selection` but requires both fields (else :class:`MissingFieldError`)."""
        self.require(self.reference)
        self.require(self.prediction)
        return self.selection()

    def errors(self) -> dict[str, float | None]:
        """Error figures of the selected sample (whole field, not just the slice).

        ``rel_l2`` = ‖u_pred − u_fem‖ / ‖u_fem‖ over nodes, ``max_abs``, and the energy gap
        (J(u_pred) − J(u_fem)) / J(u_fem) (None above ``ENERGY_GAP_MAX_CELLS`` cells, where
        the in-memory float64 energy would not fit comfortably).
        """
        self.require(self.reference)
        self.require(self.prediction)
        ds = self.dataset().isel(sample=self.sample)
        u, ref = ds[self.prediction], ds[self.reference]
        if self.n() ** self.dim <= ENERGY_GAP_MAX_CELLS:
            import torch

            from mgtoolkit.infer import sample_metrics

            return sample_metrics(
                torch.from_numpy(np.asarray(ds["nu"].values)),
                torch.from_numpy(np.asarray(u.values)),
                torch.from_numpy(np.asarray(ref.values)),
            )
        # Chunked reductions: memory stays at a few chunks whatever the resolution.
        diff = u.astype("float64") - ref.astype("float64")
        num = float(np.sqrt((diff**2).sum().compute()))
        den = float(np.sqrt((ref.astype("float64") ** 2).sum().compute()))
        return {
            "rel_l2": num / den,
            "max_abs": float(abs(diff).max().compute()),
            "energy_gap": None,
        }

    # ------------------------------------------------------------------ view
    def images(self, *, size: int = 200):
        """The selection as a holoviews Layout (ν log scale; shared scale for u; diff ±)."""
        hv = holoviews()

        arrays = self.selection()
        vert, horiz = self.plane_axes()
        h = 1.0 / self.n()

        def image(arr, label, *, nodes, **opts):
            pad = h / 2 if nodes else 0.0
            return hv.Image(
                np.flipud(arr),  # hv.Image rows run from the top; our index 0 is the bottom
                bounds=(-pad, -pad, 1 + pad, 1 + pad),
                kdims=[horiz, vert],
                vdims=[label],
                label=label,
            ).opts(frame_width=size, frame_height=size, colorbar=True, tools=["hover"], **opts)

        where = "" if self.dim == 2 else f", {self.axis} node {self.slice_index()}"
        panels = [
            image(arrays["nu"], "ν", nodes=False, cmap="viridis", logz=True).opts(
                title=f"ν, sample {self.sample}{where}"
            )
        ]
        fields = [k for k in (self.prediction, self.reference) if k in arrays]
        if fields:
            lo = min(float(np.nanmin(arrays[k])) for k in fields)
            hi = max(float(np.nanmax(arrays[k])) for k in fields)
            for k in fields:
                panels.append(
                    image(arrays[k], k, nodes=True, cmap="plasma", clim=(lo, hi)).opts(title=k)
                )
        if "difference" in arrays:
            m = float(np.nanmax(np.abs(arrays["difference"]))) or 1.0
            panels.append(
                image(
                    arrays["difference"], "difference", nodes=True, cmap="RdBu_r", clim=(-m, m)
                ).opts(title=f"{self.prediction} − {self.reference}")
            )
        panels[0] = panels[0].opts(hooks=[named(VIEWER_NAME)])
        return hv.Layout(panels).cols(4).opts(shared_axes=True)

    def error_text(self) -> str:
        """The error figures as Markdown, or why they are missing (with the fix)."""
        try:
            e = self.errors()
        except MissingFieldError as exc:
            return f"**No comparison:** {exc}"
        gap = "n/a (too large)" if e["energy_gap"] is None else f"{e['energy_gap']:.3g}"
        return (
            f"sample {self.sample}, level {self.level}: relative L2 error **{e['rel_l2']:.3g}**, "
            f"max |error| **{e['max_abs']:.3g}**, energy gap **{gap}**"
        )

    def view(self):
        """Widgets (level, sample, slice axis and index) over the images and error figures."""
        import panel as pn

        params = ["level", "sample"] + (["axis", "index"] if self.dim == 3 else [])
        controls = pn.Param(
            self.param,
            parameters=params,
            widgets={
                "level": {"type": pn.widgets.IntInput, "start": 1, "end": self.attrs["levels"]},
                "sample": {
                    "type": pn.widgets.IntInput,
                    "start": 0,
                    "end": self.attrs["samples"] - 1,
                },
                "index": {"type": pn.widgets.IntInput, "start": 0},
            },
            show_name=False,
            default_layout=pn.Row,
        )
        plots, text, alert = Slot(), Slot(), Slot()

        def redraw(*_):
            try:
                plots.show(self.images())
                text.show(self.error_text())
                alert.clear()
            except ValueError as exc:
                alert.alert(str(exc), alert_type="warning")

        self.param.watch(redraw, ["level", "sample", "axis", "index", "prediction", "reference"])
        redraw()
        return pn.Column(controls, alert.layout, plots.layout, text.layout)


class DatasetBrowser(param.Parameterized):
    """Pick samples of a store by their family parameters ω (two modes at a time).

    Parameters
    ----------
    store : path-like
    viewer : FieldViewer, optional
        Kept in sync: picking a sample selects it in the viewer.
    """

    mode_x = param.Integer(default=1, bounds=(1, None), doc="ω mode on the horizontal axis.")
    mode_y = param.Integer(default=2, bounds=(1, None), doc="ω mode on the vertical axis.")
    sample = param.Integer(default=0, bounds=(0, None))

    def __init__(self, store: str | Path, *, viewer: FieldViewer | None = None, **params):
        from mgtoolkit.data import check_store, open_level

        self.store = Path(store)
        self.attrs = check_store(self.store)
        ds = open_level(self.store, 1)
        if "omega" not in ds:
            raise ValueError(
                f"{self.store} has no family parameters ω (family {self.attrs['family']!r}); "
                "pick samples by index in FieldViewer instead"
            )
        #: ω of every sample, shape (samples, modes) — small, read once.
        self.omega = np.asarray(ds["omega"].values, dtype=np.float64)
        super().__init__(**params)
        modes = self.omega.shape[1]
        self.param.mode_x.bounds = self.param.mode_y.bounds = (1, modes)
        self.param.sample.bounds = (0, len(self.omega) - 1)
        self.viewer = viewer
        if viewer is not None:
            self.param.watch(lambda e: setattr(viewer, "sample", e.new), "sample")

    def pick(self, x: float, y: float) -> int:
        """Select (and return) the sample whose (ω_mode_x, ω_mode_y) is nearest to (x, y)."""
        pts = self.omega[:, [self.mode_x - 1, self.mode_y - 1]]
        self.sample = int(np.argmin(((pts - [x, y]) ** 2).sum(axis=1)))
        return self.sample

    def where(self, **bounds: tuple[float, float]) -> np.ndarray:
        """Samples whose ω lies in the given ranges, e.g. ``where(omega1=(-3, -2))``."""
        keep = np.ones(len(self.omega), dtype=bool)
        for key, (lo, hi) in bounds.items():
            if not key.startswith("omega") or not key[5:].isdigit():
                raise ValueError(f"use keywords omega1..omega{self.omega.shape[1]} (got {key!r})")
            col = self.omega[:, int(key[5:]) - 1]
            keep &= (col >= lo) & (col <= hi)
        return np.flatnonzero(keep)

    def points(self):
        """ω scatter (selected sample ringed); tapping a point selects that sample."""
        hv = holoviews()

        x, y = self.omega[:, self.mode_x - 1], self.omega[:, self.mode_y - 1]
        kx, ky = f"ω{self.mode_x}", f"ω{self.mode_y}"
        pts = hv.Points({kx: x, ky: y, "sample": np.arange(len(x))}, [kx, ky], ["sample"]).opts(
            size=7, tools=["tap", "hover"], width=340, height=300, color="#0072B2"
        )
        sel = hv.Points(([x[self.sample]], [y[self.sample]]), [kx, ky]).opts(
            size=16, fill_alpha=0, line_color="red", line_width=2
        )
        return pts * sel

    def view(self):
        hv = holoviews()
        import panel as pn

        tap = hv.streams.Tap(x=None, y=None)

        def on_tap(x, y):
            if x is not None and y is not None:
                self.pick(x, y)

        tap.add_subscriber(on_tap)
        dmap = hv.DynamicMap(
            lambda mode_x, mode_y, sample: self.points(),
            streams=[self.param.mode_x, self.param.mode_y, self.param.sample],
        )
        tap.source = dmap
        table = Slot()

        def describe(*_):
            om = ", ".join(f"ω{i + 1} = {v:+.2f}" for i, v in enumerate(self.omega[self.sample]))
            table.show(f"sample **{self.sample}**: {om}")

        self.param.watch(describe, "sample")
        describe()
        controls = pn.Param(
            self.param, parameters=["mode_x", "mode_y", "sample"], show_name=False, width=200
        )
        return pn.Row(controls, pn.Column(dmap, table.layout))
