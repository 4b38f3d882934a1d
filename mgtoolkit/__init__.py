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

__all__ = ["Grid", "__version__", "hierarchy", "load_model"]


def load_model(source, *, device="cpu", mirror_average=False, predict_at=None):
    """A trained network from a run directory, a checkpoint file or a pretrained model's name.

    In eval mode. ``mgtoolkit.load_model("kl2d-128")`` loads a packaged model by name;
    ``load_model("kl3d-64", predict_at=64)`` predicts finer fields at 64³ and interpolates.

    See :func:`mgtoolkit.rundir.load_model` (imported here on first use, so that
    ``import mgtoolkit`` stays light).
    """
    from mgtoolkit.rundir import load_model as _load_model

    return _load_model(source, device=device, mirror_average=mirror_average, predict_at=predict_at)
