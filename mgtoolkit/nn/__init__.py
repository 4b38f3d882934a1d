"""Neural networks: the level-independent U-Net from ν on cells to u on nodes."""

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
    "UNet",
    "UNetConfig",
    "mirror_back",
    "mirror_mean",
    "mirrors",
]
