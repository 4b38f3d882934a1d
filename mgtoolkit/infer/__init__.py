"""Inference: whole samples into a store with their errors against FEM (:mod:`.samples`), and
at any size, tiled prediction equal to untiled inference, streamed through zarr
(:mod:`.tiled`, :mod:`.tiles`, :mod:`.stream`), and a network's error on fresh fields
(:mod:`.evaluate`).

``import mgtoolkit.infer`` loads neither dask nor zarr; the functions import them.
"""

from mgtoolkit.infer.evaluate import corner_fields, score, unseen_fields
from mgtoolkit.infer.samples import PredictFn, predict, sample_metrics
from mgtoolkit.infer.tiled import (
    TiledPredictor,
    log_nu_mean,
    predict_store,
    predict_tiled,
)
from mgtoolkit.infer.tiles import Tile, downsampling, needed_cells, receptive_halo, tiles

__all__ = [
    "PredictFn",
    "Tile",
    "TiledPredictor",
    "corner_fields",
    "downsampling",
    "log_nu_mean",
    "needed_cells",
    "predict",
    "predict_store",
    "predict_tiled",
    "receptive_halo",
    "sample_metrics",
    "score",
    "tiles",
    "unseen_fields",
]
