"""mgtoolkit — multigrid neural solvers for −div(ν∇u) = 0 on 2D/3D grids, with a FEM reference.

The numerical core (grids, fields, fem) imports only numpy, scipy and torch; cluster and
widget libraries are imported inside the functions that need them.
"""

from importlib.metadata import PackageNotFoundError, version

from mgtoolkit.grids import Grid, hierarchy

try:
    __version__ = version("mgtoolkit")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"

__all__ = ["Grid", "__version__", "hierarchy"]
