"""Datasets of diffusivity fields: multilevel zarr stores, generation and FEM solution on dask,
torch access.

``import mgtoolkit.data`` loads neither dask, xarray, zarr nor torch (dask workers that only
write fields stay light); each is imported by the function or class that uses it.
"""

from mgtoolkit.data.generate import generate, import_arrays
from mgtoolkit.data.mapping import map_samples
from mgtoolkit.data.solve import FemSolveFn, solve_store
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
    "FemSolveFn",
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
    "solve_store",
    "store_summary",
]


def __getattr__(name: str):
    if name == "LevelDataset":  # imports torch
        from mgtoolkit.data.dataset import LevelDataset

        return LevelDataset
    raise AttributeError(f"module 'mgtoolkit.data' has no attribute {name!r}")
