"""Neural networks: the level-independent U-Net from ν on cells to u on nodes, and the
problem's symmetry group (:mod:`mgtoolkit.nn.symmetry`)."""

from mgtoolkit.nn import symmetry
from mgtoolkit.nn.symmetry import SymmetryMap
from mgtoolkit.nn.unet import (
    ACTIVATIONS,
    NORMS,
    UNet,
    UNetConfig,
    mirror_back,
    mirror_mean,
    mirrors,
)

__all__ = [
    "ACTIVATIONS",
    "NORMS",
    "SymmetryMap",
    "UNet",
    "UNetConfig",
    "mirror_back",
    "mirror_mean",
    "mirrors",
    "symmetry",
]
