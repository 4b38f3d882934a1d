"""Notebook widgets: cycle composer, live training monitor, field viewer (panel + holoviews).

The state objects are plain :class:`param.Parameterized` classes, testable without a browser;
each has a ``view()`` that builds a thin panel layout. Call :func:`extension` once per notebook
so that panel and bokeh load their JavaScript inline (plots render offline).
``import mgtoolkit`` never imports this package.
"""

from mgtoolkit.widgets._view import LEVEL_COLORS, extension, level_color
from mgtoolkit.widgets.compare import RunComparison, compare_runs
from mgtoolkit.widgets.composer import (
    CycleComposer,
    check_cluster,
    cycle_diagram,
    diagram_data,
    parse_sequence,
)
from mgtoolkit.widgets.monitor import EventFollower, RunMonitor, request_stop
from mgtoolkit.widgets.viewer import DatasetBrowser, FieldViewer, MissingFieldError

__all__ = [
    "LEVEL_COLORS",
    "CycleComposer",
    "DatasetBrowser",
    "EventFollower",
    "FieldViewer",
    "MissingFieldError",
    "RunComparison",
    "RunMonitor",
    "check_cluster",
    "compare_runs",
    "cycle_diagram",
    "diagram_data",
    "extension",
    "level_color",
    "parse_sequence",
    "request_stop",
]
