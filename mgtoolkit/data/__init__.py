"""Datasets of diffusivity fields: multilevel zarr stores, generation on dask, torch access.

``import mgtoolkit.data`` loads torch but not dask, xarray or zarr; those are imported by the
functions that use them.
"""

from mgtoolkit.data.dataset import LevelDataset
from mgtoolkit.data.generate import generate, import_arrays
from mgtoolkit.data.mapping import map_samples
from mgtoolkit.data.store import (
    FORMAT_VERSION,
    Chunking,
    allocate_node_field,
    check_store,
    completed,
    node_dims,
    open_level,
    open_store,
    store_summary,
)

__all__ = [
    "FORMAT_VERSION",
    "Chunking",
    "LevelDataset",
    "allocate_node_field",
    "check_store",
    "completed",
    "generate",
    "import_arrays",
    "map_samples",
    "node_dims",
    "open_level",
    "open_store",
    "store_summary",
]
