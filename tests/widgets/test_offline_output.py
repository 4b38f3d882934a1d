"""Notebook output of holoviews objects names no CDN: panel's stylesheets are inlined.

holoviews renders its own objects (``hv.Layout(...)`` as a cell's result, notebook 02's cycle
diagrams) through panel, but without the inlining panel applies to its own objects; the output
linked panel's CSS on cdn.holoviz.org — failed requests offline, in the page and again every
time the saved notebook was opened. ``extension()`` wraps holoviews' renderer
(``inline_holoviews_stylesheets``). What the page does with it: tests/browser.
"""

from __future__ import annotations

import json

from mgtoolkit.cycles import schedule
from mgtoolkit.widgets import cycle_diagram
from mgtoolkit.widgets._view import holoviews, inline_holoviews_stylesheets


def test_holoviews_notebook_output_has_panel_css_inline():
    import panel as pn

    hv = holoviews()
    layout = hv.Layout([cycle_diagram(schedule(n, 3), resolution=16) for n in ("V", "half-V")])
    with pn.config.set(inline=True):  # what extension() sets
        inline_holoviews_stylesheets()
        inline_holoviews_stylesheets()  # idempotent
        data, _ = hv.renderer("bokeh").components(layout.cols(2))
    text = json.dumps(data)
    assert "cdn.holoviz.org" not in text
    assert "InlineStyleSheet" in text and "ImportedStyleSheet" not in text
