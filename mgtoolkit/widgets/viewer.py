"""Field viewer and dataset browser over a dataset store (:mod:`mgtoolkit.data.store`).

:class:`FieldViewer` shows ν, the prediction, the FEM reference and their difference side by
side for one sample and level — a 2D field whole, a 3D field as a slice through a chosen axis
and node index, or as three orthogonal slices through a cursor point — with shared colour
scales and the sample's error figures. Clicking a point in one of the three slices moves the
cursor there (the other two slices follow). For 3D fields :meth:`FieldViewer.isosurface` adds an
isosurface of u, log ν or the error, read from a downsampled volume (:meth:`FieldViewer.volume`:
at most ``SURFACE_MAX_CELLS`` cells, from a coarser level of the store or every s-th node).
:meth:`FieldViewer.save` writes the figure to a file (HTML with inline JavaScript, or
PNG/SVG/PDF through matplotlib).
:class:`DatasetBrowser` picks samples by their family parameters ω.

Everything reads lazily through :func:`mgtoolkit.data.open_level`: opening a 512³ store reads
metadata only, and a slice reads only the chunks it crosses.

Slicing convention (3D): ``index`` is a *node* index ``0..n`` along ``axis``; node fields are
shown on that node plane, ν on the layer of cells just above it (cell index
``min(index, n - 1)``), so both describe the same place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import param

from mgtoolkit.grids import AXES
from mgtoolkit.widgets._view import Slot, holoviews, named

__all__ = ["DatasetBrowser", "FieldViewer", "MissingFieldError", "Surface", "Volume"]

#: Bokeh figure names (tests look them up).
VIEWER_NAME = "mgtoolkit-field-viewer"

#: Largest sample (cells) for which the energy gap is computed in memory (float64 copies).
ENERGY_GAP_MAX_CELLS = 256**3

#: Most cells of the volume behind the 3D view (a 512³ field is shown at 64³).
SURFACE_MAX_CELLS = 64**3
#: Most triangles drawn: a rougher surface is read at half the resolution until it fits.
SURFACE_MAX_TRIANGLES = 60_000


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


@dataclass(frozen=True)
class Volume:
    """A 3D field of one sample as the 3D view shows it, downsampled to fit.

    Attributes
    ----------
    array : ndarray
        The values, axes (z, y, x): shape ``(cells + 1,) * 3`` on nodes, ``(cells,) * 3`` on
        cells; log10 ν for ν.
    label : str
        What the values are (``"log10 ν"``, a node field's name, or ``"pred − ref"``).
    nodes : bool
        Node values (points ``i / cells``) or cell values (centres ``(i + ½) / cells``).
    cells : int
        Cells per side of the volume.
    source : str
        Where it was read, in words: ``"level 3 of the store"``, ``"every 8th node of level
        1"``, ``"every 2nd cell of level 2"``.
    """

    array: np.ndarray
    label: str
    nodes: bool
    cells: int
    source: str

    @property
    def origin(self) -> float:
        """Coordinate of the first grid point on every axis (the domain is [0, 1]³)."""
        return 0.0 if self.nodes else 0.5 / self.cells


@dataclass(frozen=True)
class Surface:
    """An isosurface of a :class:`Volume`.

    Attributes
    ----------
    volume : Volume
    value : float
        The level of the surface (in the volume's values: log10 ν for ν).
    triangles : ndarray, shape (triangles, 3, 3)
        Vertices as (z, y, x) coordinates in [0, 1]
        (:func:`~mgtoolkit.widgets.isosurface.isosurface`).
    title : str
        Says the field, the level, the sample and the resolution shown.
    """

    volume: Volume
    value: float
    triangles: np.ndarray
    title: str


def _ordinal(k: int) -> str:
    return {1: "every", 2: "every 2nd"}.get(k, f"every {k}th")


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
    three = param.Boolean(default=False, doc="3D: three orthogonal slices through the cursor.")
    field = param.Selector(
        default="nu",
        objects=["nu", "prediction", "reference", "difference"],
        doc="The field shown in the three orthogonal slices and the isosurface.",
    )
    surface = param.Boolean(default=False, doc="3D: also show an isosurface of the field.")
    iso = param.Number(
        default=0.5,
        bounds=(0.0, 1.0),
        doc="Isosurface level as a fraction of the shown volume's range (log10 ν for ν).",
    )
    azimuth = param.Number(default=-60.0, bounds=(-180.0, 180.0), doc="3D view, degrees.")
    elevation = param.Number(default=25.0, bounds=(-90.0, 90.0), doc="3D view, degrees.")
    moved = param.Event(doc="Fires when :meth:`click` moved the cursor.")

    def __init__(self, store: str | Path, **params):
        from mgtoolkit.data import check_store

        self.store = Path(store)
        self.attrs = check_store(self.store)
        self._levels: dict[int, object] = {}
        self._surface: tuple[tuple, Surface] | None = None  # the last isosurface and its key
        super().__init__(**params)
        self.param.level.bounds = (1, self.attrs["levels"])
        self.param.sample.bounds = (0, self.attrs["samples"] - 1)
        #: Node indices of the three slice planes (3D): the index of each axis, kept when
        #: the slice axis changes; :attr:`index` is the entry of the selected axis.
        self.cursor = {}
        if self.dim == 3:
            middle = self.n() // 2
            self.cursor = dict.fromkeys(AXES[3], middle)
            if self.index is None:
                self.index = middle
            self.cursor[self.axis] = self.index

    @param.depends("level", watch=True)
    def _recentre(self) -> None:
        # Node indices of one level mean nothing on another: start from the middle plane.
        if self.dim == 3:
            self.cursor = dict.fromkeys(AXES[3], self.n() // 2)
            self.index = self.n() // 2

    @param.depends("index", watch=True)
    def _move_cursor(self) -> None:
        if self.dim == 3 and self.index is not None:
            self.cursor[self.axis] = self.index

    @param.depends("axis", watch=True)
    def _follow_axis(self) -> None:
        if self.dim == 3:
            self.index = self.cursor.get(self.axis, self.n() // 2)

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

    def _cut(
        self, name: str, *, nodes: bool, axis: str | None = None, index: int | None = None
    ) -> np.ndarray:
        """One field of the selected sample as a 2D array (y-like axis first)."""
        da = self.dataset()[name].isel(sample=self.sample)
        if self.dim == 3:
            axis = axis or self.axis
            index = self.slice_index() if index is None else index
            dim = f"{axis}_node" if nodes else axis
            da = da.isel({dim: index if nodes else min(index, self.n() - 1)})
        return np.asarray(da.values, dtype=np.float64)

    def plane_axes(self, axis: str | None = None) -> tuple[str, str]:
        """Names of the (vertical, horizontal) axes of the shown plane (normal ``axis``)."""
        axes = AXES[self.dim]
        axis = axis or self.axis
        rest = tuple(a for a in axes if a != axis) if self.dim == 3 else axes
        return rest[0], rest[1]

    def field_name(self) -> str:
        """The store field behind :attr:`field` (``"difference"`` stays as it is)."""
        return {"prediction": self.prediction, "reference": self.reference}.get(
            self.field, self.field
        )

    def orthogonal(self) -> dict[str, np.ndarray]:
        """3D: :attr:`field` on the three planes through :attr:`cursor`, keyed by normal axis.

        ν is cut on the cells above each node plane (as in :meth:`selection`), node fields on
        the plane; ``"difference"`` is prediction − reference. Raises ValueError in 2D or for a
        cursor outside ``0..n``, :class:`MissingFieldError` for a missing field.
        """
        if self.dim != 3:
            raise ValueError("three orthogonal slices need a 3D store")
        n = self.n()
        for axis, index in self.cursor.items():
            if not 0 <= index <= n:
                raise ValueError(
                    f"slice index {index} is out of range for axis {axis} at level "
                    f"{self.level} ({n} cells per side): use a node index 0..{n}"
                )
        names = self._sources()
        out = {}
        for axis in AXES[3]:
            cuts = [
                self._cut(name, nodes=name != "nu", axis=axis, index=self.cursor[axis])
                for name in names
            ]
            out[axis] = cuts[0] - cuts[1] if len(cuts) == 2 else cuts[0]
        return out

    def _sources(self) -> list[str]:
        """The store fields behind :attr:`field` (two for the difference), checked present."""
        names = (
            [self.prediction, self.reference] if self.field == "difference" else [self.field_name()]
        )
        for name in names:
            if name != "nu":
                self.require(name)
        return names

    def click(self, axis: str, x: float, y: float) -> None:
        """Move the cursor to the node nearest to the point clicked in a slice (3D).

        Parameters
        ----------
        axis : {"z", "y", "x"}
            Normal of the clicked slice.
        x, y : float
            Horizontal and vertical coordinates of the click in [0, 1], as the slice is
            drawn (:meth:`plane_axes`). The two other slices move through the new point.
        """
        if self.dim != 3:
            raise ValueError("the cursor exists in 3D stores only; this store is 2D")
        n = self.n()
        vert, horiz = self.plane_axes(axis)
        self.cursor[horiz] = int(np.clip(round(x * n), 0, n))
        self.cursor[vert] = int(np.clip(round(y * n), 0, n))
        # One batch: the view redraws once, whether or not the selected axis' index changed.
        self.param.update(index=self.cursor[self.axis], moved=True)

    def volume(self, *, max_cells: int = SURFACE_MAX_CELLS) -> Volume:
        """:attr:`field` of the selected sample in 3D, with at most ``max_cells`` cells.

        The resolution is halved until it fits (a 512³ level gives 64³ by default). ν is read
        from the store's coarser level of that resolution when there is one (its own
        coarsening), else as the cell at the centre of each block; node fields and their
        difference are read at every s-th node of the selected level (a coarser level's u
        solves the coarsened problem: another field). Only the chunks holding those values
        are read, one sample at a time.

        Raises
        ------
        ValueError
            A 2D store; :class:`MissingFieldError` for a missing field.
        """
        if self.dim != 3:
            raise ValueError(
                f"the 3D view needs a 3D store; {self.store} holds 2D fields: show them with "
                "FieldViewer.view() or images()"
            )
        names = self._sources()
        n = self.n()
        stride = 1
        while (n // stride) ** 3 > max_cells and n // stride > 2:
            stride *= 2
        cells = n // stride
        if names == ["nu"]:
            coarse = self.level + stride.bit_length() - 1
            if coarse <= self.attrs["levels"]:
                da = self.dataset(coarse)["nu"].isel(sample=self.sample)
                source = f"level {coarse} of the store"
            else:
                pick = slice(stride // 2, None, stride)
                da = self.dataset()["nu"].isel(sample=self.sample, z=pick, y=pick, x=pick)
                source = f"{_ordinal(stride)} cell of level {self.level}"
            nu = np.asarray(da.values, dtype=np.float64)
            return Volume(np.log10(nu), "log10 ν", nodes=False, cells=cells, source=source)
        pick = slice(None, None, stride)
        arrays = [
            np.asarray(
                self.dataset()[name]
                .isel(sample=self.sample, z_node=pick, y_node=pick, x_node=pick)
                .values,
                dtype=np.float64,
            )
            for name in names
        ]
        if len(arrays) == 2:
            array, label = arrays[0] - arrays[1], f"{names[0]} − {names[1]}"
        else:
            array, label = arrays[0], names[0]
        source = f"{_ordinal(stride)} node of level {self.level}"
        return Volume(array, label, nodes=True, cells=cells, source=source)

    def isosurface(
        self,
        *,
        max_cells: int = SURFACE_MAX_CELLS,
        max_triangles: int = SURFACE_MAX_TRIANGLES,
    ) -> Surface:
        """The isosurface of :meth:`volume` at ``min + iso · (max − min)`` of its values.

        A surface of more than ``max_triangles`` triangles is made again from a volume of half
        the resolution, until it fits. The last surface is kept: turning the view (azimuth,
        elevation) reads nothing again; any other change of the selection reads the volume
        afresh. Raises like :meth:`volume`.
        """
        from mgtoolkit.widgets import isosurface as marching

        key = (
            self.level,
            self.sample,
            self.field,
            self.prediction,
            self.reference,
            self.iso,
            max_cells,
            max_triangles,
        )
        if self._surface is not None and self._surface[0] == key:
            return self._surface[1]
        while True:
            vol = self.volume(max_cells=max_cells)
            finite = vol.array[np.isfinite(vol.array)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
            value = lo + self.iso * (hi - lo)
            triangles = marching.isosurface(
                vol.array, value, spacing=1.0 / vol.cells, origin=vol.origin
            )
            if len(triangles) <= max_triangles or vol.cells <= 2:
                break
            max_cells = (vol.cells // 2) ** 3
        title = (
            f"{vol.label} = {value:.3g}, sample {self.sample}\n{vol.cells}³ cells shown of "
            f"{self.n()}³ ({vol.source})"
        )
        self._surface = (key, Surface(vol, value, triangles, title))
        return self._surface[1]

    def isosurface_figure(self, *, size: float = 4.2):
        """:meth:`isosurface` drawn with matplotlib, seen from :attr:`azimuth`, :attr:`elevation`
        (a static image: no JavaScript, so it renders offline and saves as PNG/SVG/PDF)."""
        from matplotlib.figure import Figure
        from mpl_toolkits.mplot3d.art3d import Poly3DCollection

        surf = self.isosurface()
        fig = Figure(figsize=(size, size), layout="constrained")
        ax = fig.add_subplot(projection="3d")
        if len(surf.triangles):
            color = {"nu": "#009E73", "difference": "#CC79A7"}.get(self.field, "#E69F00")
            # matplotlib's 3D axes are (x, y, z), the arrays' (z, y, x)
            faces = Poly3DCollection(
                surf.triangles[..., ::-1], shade=True, facecolors=color, linewidths=0
            )
            ax.add_collection3d(faces)
        else:
            ax.text2D(
                0.5, 0.5, "the field does not cross this level", ha="center", transform=ax.transAxes
            )
        ax.set(xlim=(0, 1), ylim=(0, 1), zlim=(0, 1), xlabel="x", ylabel="y", zlabel="z")
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=self.elevation, azim=self.azimuth)
        ax.set_title(surf.title, fontsize=9)
        return fig

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
    def panels(self) -> list[dict]:
        """What the figure shows, panel by panel (plain data: the view and :meth:`save` draw it).

        Each entry: ``array`` (2D, vertical axis first, index 0 at the bottom), ``title``,
        ``label``, ``axes`` (vertical, horizontal names), ``nodes`` (node or cell values),
        ``cmap``, ``clim`` (or None), ``log`` (log colour scale), and for three-slice panels
        ``cross`` (the other two planes' positions: (vertical, horizontal) in [0, 1]).
        """
        if self.dim == 3 and self.three:
            return self._orthogonal_panels()
        arrays = self.selection()
        axes = self.plane_axes()
        where = "" if self.dim == 2 else f", {self.axis} node {self.slice_index()}"
        out = [
            dict(
                array=arrays["nu"],
                title=f"ν, sample {self.sample}{where}",
                label="ν",
                axes=axes,
                nodes=False,
                cmap="viridis",
                clim=None,
                log=True,
            )
        ]
        fields = [k for k in (self.prediction, self.reference) if k in arrays]
        if fields:
            lo = min(float(np.nanmin(arrays[k])) for k in fields)
            hi = max(float(np.nanmax(arrays[k])) for k in fields)
            for k in fields:
                out.append(
                    dict(
                        array=arrays[k],
                        title=k,
                        label=k,
                        axes=axes,
                        nodes=True,
                        cmap="plasma",
                        clim=(lo, hi),
                        log=False,
                    )
                )
        if "difference" in arrays:
            m = float(np.nanmax(np.abs(arrays["difference"]))) or 1.0
            title = f"{self.prediction} − {self.reference}"
            out.append(
                dict(
                    array=arrays["difference"],
                    title=title,
                    label="difference",
                    axes=axes,
                    nodes=True,
                    cmap="RdBu_r",
                    clim=(-m, m),
                    log=False,
                )
            )
        return out

    def _orthogonal_panels(self) -> list[dict]:
        planes = self.orthogonal()
        name = self.field_name()
        if self.field == "difference":
            m = max(float(np.nanmax(np.abs(a))) for a in planes.values()) or 1.0
            cmap, clim, log, label = "RdBu_r", (-m, m), False, "difference"
        else:
            lo = min(float(np.nanmin(a)) for a in planes.values())
            hi = max(float(np.nanmax(a)) for a in planes.values())
            cmap = "viridis" if name == "nu" else "plasma"
            clim, log, label = ((lo, hi) if lo < hi else None), name == "nu", name
        n = self.n()
        out = []
        for axis, arr in planes.items():
            vert, horiz = self.plane_axes(axis)
            out.append(
                dict(
                    array=arr,
                    title=f"{label}, sample {self.sample}, {axis} node {self.cursor[axis]}",
                    label=label,
                    axes=(vert, horiz),
                    nodes=name != "nu",
                    cmap=cmap,
                    clim=clim,
                    log=log,
                    cross=(self.cursor[vert] / n, self.cursor[horiz] / n),
                )
            )
        return out

    def figures(self, *, size: int = 220) -> list:
        """The panels as holoviews elements (each fixed at ``size`` pixels: the view wraps
        them to the notebook's width)."""
        hv = holoviews()
        h = 1.0 / self.n()
        out = []
        for p in self.panels():
            pad = h / 2 if p["nodes"] else 0.0
            vert, horiz = p["axes"]
            opts = dict(cmap=p["cmap"], logz=p["log"], title=p["title"])
            if p["clim"] is not None:
                opts["clim"] = p["clim"]
            img = hv.Image(
                np.flipud(p["array"]),  # hv.Image rows run from the top; our index 0 is the bottom
                bounds=(-pad, -pad, 1 + pad, 1 + pad),
                kdims=[horiz, vert],
                vdims=[p["label"]],
                label=p["label"],
            ).opts(frame_width=size, frame_height=size, colorbar=True, tools=["hover"], **opts)
            if "cross" in p:  # the other two planes through the cursor
                y, x = p["cross"]
                style = dict(color="white", line_width=1, line_dash="dashed")
                img = img * hv.HLine(y).opts(**style) * hv.VLine(x).opts(**style)
            out.append(img)
        out[0] = out[0].opts(hooks=[named(VIEWER_NAME)])
        return out

    def images(self, *, size: int = 200):
        """The selection as a holoviews Layout (ν log scale; shared scale for u; diff ±)."""
        hv = holoviews()

        return hv.Layout(self.figures(size=size)).cols(4).opts(shared_axes=True)

    def matplotlib_figure(self, *, size: float = 3.2):
        """The figure drawn with matplotlib (what :meth:`save` writes as PNG/SVG/PDF)."""
        from matplotlib.colors import LogNorm, Normalize
        from matplotlib.figure import Figure

        panels = self.panels()
        fig = Figure(figsize=(size * 1.25 * len(panels), size), layout="constrained")
        h = 1.0 / self.n()
        for ax, p in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
            pad = h / 2 if p["nodes"] else 0.0
            arr = p["array"]
            lo, hi = p["clim"] if p["clim"] is not None else (np.nanmin(arr), np.nanmax(arr))
            norm = LogNorm(lo, hi) if p["log"] and lo > 0 else Normalize(lo, hi)
            im = ax.imshow(
                arr,
                origin="lower",
                extent=(-pad, 1 + pad, -pad, 1 + pad),
                cmap=p["cmap"],
                norm=norm,
            )
            if "cross" in p:
                y, x = p["cross"]
                ax.axhline(y, color="white", lw=0.8, ls="--")
                ax.axvline(x, color="white", lw=0.8, ls="--")
            ax.set(title=p["title"], xlabel=p["axes"][1], ylabel=p["axes"][0])
            fig.colorbar(im, ax=ax, shrink=0.8)
        return fig

    def save(self, path: str | Path, *, figure: str = "slices") -> Path:
        """Write a figure of the current selection to ``path``; returns it.

        Parameters
        ----------
        path : str or path
            ``.html``: the interactive bokeh slices with their JavaScript inline (opens
            offline); ``.png``, ``.svg``, ``.pdf``: a static matplotlib figure.
        figure : {"slices", "isosurface"}
            The slices as shown, or the 3D view (:meth:`isosurface_figure`, as seen from
            :attr:`azimuth`, :attr:`elevation`; a 3D store, a static format).
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if figure not in ("slices", "isosurface"):
            raise ValueError(f"figure is 'slices' or 'isosurface' (got {figure!r})")
        if figure == "isosurface":
            if suffix not in (".png", ".svg", ".pdf"):
                raise ValueError(f"save the isosurface to .png, .svg or .pdf (got {path.name!r})")
            self.isosurface_figure().savefig(path, dpi=120)
        elif suffix in (".html", ".htm"):
            hv = holoviews()
            hv.save(self.images(), path, backend="bokeh", resources="inline")
        elif suffix in (".png", ".svg", ".pdf"):
            self.matplotlib_figure().savefig(path, dpi=120)
        else:
            raise ValueError(f"save to .html, .png, .svg or .pdf (got {path.name!r})")
        return path

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
        """Widgets over the figure and the error figures.

        Level and sample; for 3D fields the slice axis, a slider over the node index and an
        index box (Enter or leaving the box applies it), *three slices* with the field
        they show (clicking a slice moves the cursor there), and *isosurface* of that field
        with its level and view angles. The panels have a fixed size and wrap to the notebook's
        width; an invalid
        selection shows a warning instead of the figure (never a stale figure under it), and
        a valid one removes the warning. *Save figure* downloads the figure as PNG.
        """
        import io

        import panel as pn

        params = ["level", "sample"] + (["axis"] if self.dim == 3 else [])
        controls = pn.Param(
            self.param,
            parameters=params,
            widgets={
                "level": {
                    "type": pn.widgets.IntInput,
                    "start": 1,
                    "end": self.attrs["levels"],
                    "width": 90,
                },
                "sample": {
                    "type": pn.widgets.IntInput,
                    "start": 0,
                    "end": self.attrs["samples"] - 1,
                    "width": 110,
                },
                "axis": {"type": pn.widgets.Select, "width": 80},
            },
            show_name=False,
            default_layout=pn.Row,
        )
        row = [controls]
        widgets: dict = {}
        if self.dim == 3:
            n = self.n()
            slider = pn.widgets.IntSlider(
                label="node index", start=0, end=n, value=self.slice_index(), width=220
            )
            box = pn.widgets.TextInput(label="index (Enter)", value=str(self.index), width=90)
            three = pn.widgets.Checkbox(label="three slices", value=self.three)
            field = pn.widgets.Select(
                label="field", options=list(self.param.field.objects), value=self.field, width=120
            )
            surface = pn.widgets.Checkbox(label="isosurface", value=self.surface)
            angles = {
                name: pn.widgets.FloatSlider(
                    label=label, start=lo, end=hi, step=step, value=getattr(self, name), width=150
                )
                for name, label, lo, hi, step in (
                    ("iso", "iso level (fraction)", 0.0, 1.0, 0.05),
                    ("azimuth", "azimuth °", -180.0, 180.0, 5.0),
                    ("elevation", "elevation °", -90.0, 90.0, 5.0),
                )
            }
            for name, w in angles.items():  # on release: each redraw reads the volume
                w.param.watch(lambda e, name=name: setattr(self, name, e.new), "value_throttled")
            widgets.update(slider=slider, box=box, three=three, field=field, surface=surface)
            widgets.update(angles)

            def from_slider(event):
                self.index = event.new

            def from_box(event):
                try:
                    self.index = int(str(event.new).strip())
                except ValueError:
                    alert.alert(
                        f"the slice index must be a whole number (got {event.new!r})",
                        alert_type="warning",
                    )

            def to_widgets(*_):
                slider.end = self.n()
                if self.index is not None and 0 <= self.index <= self.n():
                    slider.value = self.index
                box.value = str(self.index)
                three.value, field.value = self.three, self.field
                surface.value = self.surface
                for name, w in angles.items():
                    w.value = getattr(self, name)

            slider.param.watch(from_slider, "value")
            box.param.watch(from_box, "value")  # TextInput.value changes on Enter (or blur)
            three.param.watch(lambda e: setattr(self, "three", e.new), "value")
            field.param.watch(lambda e: setattr(self, "field", e.new), "value")
            surface.param.watch(lambda e: setattr(self, "surface", e.new), "value")
            self.param.watch(
                to_widgets,
                ["index", "level", "axis", "three", "field", "surface", *angles],
            )
            row += [slider, box, three, field, surface, *angles.values()]

        def png():
            buffer = io.BytesIO()
            self.matplotlib_figure().savefig(buffer, format="png", dpi=120)
            buffer.seek(0)
            return buffer

        download = pn.widgets.FileDownload(
            callback=png, filename="field-viewer.png", label="Save figure (PNG)", width=170
        )
        widgets["download"] = download
        plots = pn.FlexBox(sizing_mode="stretch_width")  # panels wrap: nothing is clipped
        text, alert = Slot(), Slot()
        taps: list = []  # the three slices' click streams (replaced on every redraw)

        def clicked(axis):
            def move(x, y):
                if x is not None and y is not None:
                    self.click(axis, x, y)

            return move

        def redraw(*_):
            try:
                figures = self.figures()
                panes = [pn.pane.HoloViews(f, linked_axes=False) for f in figures]
                taps.clear()
                if self.dim == 3 and self.three:  # figures are the slices in AXES order
                    hv = holoviews()
                    for axis, figure in zip(AXES[3], figures, strict=True):
                        taps.append(hv.streams.Tap(source=figure, x=None, y=None))
                        taps[-1].add_subscriber(clicked(axis))
                if self.dim == 3 and self.surface:
                    figure = self.isosurface_figure()
                    panes.append(pn.pane.Matplotlib(figure, dpi=96, tight=True, format="png"))
                plots.objects = panes
                text.show(self.error_text())
                alert.clear()
            except ValueError as exc:  # out of range, or a missing field (MissingFieldError)
                plots.objects = []
                alert.alert(str(exc), alert_type="warning")

        self.param.watch(
            redraw,
            [
                "level",
                "sample",
                "axis",
                "index",
                "prediction",
                "reference",
                "three",
                "field",
                "surface",
                "iso",
                "azimuth",
                "elevation",
                "moved",
            ],
        )
        redraw()
        #: The view's parts (tests and notebooks reach the widgets and panes through it).
        self.parts = dict(plots=plots, alert=alert, text=text, taps=taps, **widgets)
        top = pn.FlexBox(*row, download, sizing_mode="stretch_width")  # wraps when narrow
        return pn.Column(top, alert.layout, plots, text.layout, sizing_mode="stretch_width")


class DatasetBrowser(param.Parameterized):
    """Pick samples of a store by their family parameters ω (two modes at a time).

    Parameters
    ----------
    store : path-like
    viewer : FieldViewer, optional
        Kept in sync both ways: picking a sample here selects it in the viewer, and a sample
        chosen in the viewer is ringed here.
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
        if viewer is not None:  # linked both ways: a sample picked in either shows in both
            self.sample = viewer.sample
            self.param.watch(lambda e: setattr(viewer, "sample", e.new), "sample")
            viewer.param.watch(lambda e: setattr(self, "sample", e.new), "sample")

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
