"""Neural networks: the level-independent U-Net from ν on cells to u on nodes."""

from mgtoolkit.nn.unet import ACTIVATIONS, NORMS, UNet, UNetConfig

__all__ = ["ACTIVATIONS", "NORMS", "UNet", "UNetConfig"]
