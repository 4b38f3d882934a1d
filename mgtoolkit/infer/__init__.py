"""Inference at any size: tiled prediction equal to untiled inference, streamed through zarr.

``import mgtoolkit.infer`` loads neither torch, dask nor zarr; the functions import them.
"""

from mgtoolkit.infer.predict import (
    TiledPredictor,
    log_nu_mean,
    predict_store,
    predict_tiled,
)
from mgtoolkit.infer.tiles import Tile, downsampling, needed_cells, receptive_halo, tiles

__all__ = [
    "Tile",
    "TiledPredictor",
    "downsampling",
    "log_nu_mean",
    "needed_cells",
    "predict_store",
    "predict_tiled",
    "receptive_halo",
    "tiles",
]
