"""Shared view helpers: offline resources, figure names, level colours.

Everything here imports panel/holoviews inside functions, so the logic classes stay importable
and testable without them loaded.
"""

from __future__ import annotations

__all__ = ["LEVEL_COLORS", "extension", "holoviews", "level_color", "named"]

#: One colour per multigrid level (level 1 first); colour-blind friendly (Okabe–Ito).
LEVEL_COLORS = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#D55E00",
    "#56B4E9",
    "#F0E442",
    "#000000",
)


def level_color(level: int) -> str:
    """The colour of ``level`` (1 = finest) in every mgtoolkit plot."""
    return LEVEL_COLORS[(int(level) - 1) % len(LEVEL_COLORS)]


def extension() -> None:
    """Load panel and the holoviews bokeh backend with resources inline.

    panel loads its JavaScript from a CDN by default, so plots stay blank offline (CI,
    air-gapped HPC portals); inline resources render everywhere. Call once per notebook,
    before displaying any widget.
    """
    import holoviews as hv
    import panel as pn

    pn.extension(inline=True)
    hv.extension("bokeh", inline=True)


def holoviews():
    """The holoviews module with its bokeh backend registered (options need a backend).

    Outside a notebook (scripts, tests) nobody calls ``hv.extension``; importing the bokeh
    plotting module registers the backend without loading any notebook JavaScript.
    """
    import holoviews as hv
    import holoviews.plotting.bokeh

    return hv


def named(name: str):
    """A holoviews hook giving the bokeh figure ``name`` (tests and users find it in the page)."""

    def hook(plot, element) -> None:
        plot.state.name = name

    return hook
