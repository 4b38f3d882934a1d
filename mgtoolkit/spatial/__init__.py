"""Spatial parallelism: one field split in slabs across the ranks of a spatial group.

A data × space mesh of ranks (:class:`SlabLayout`), the halo exchange inside autograd
(:func:`halo`), the U-Net on slabs (:func:`to_slabs`) and the training loss on slabs
(:func:`slab_loss`): together they compute the unsplit network, loss and gradients.
See docs/spatial.md.
"""

from mgtoolkit.spatial.halo import field_sum, gather, halo
from mgtoolkit.spatial.layout import SlabLayout
from mgtoolkit.spatial.loss import SLAB_LOSSES, slab_loss
from mgtoolkit.spatial.unet import HaloConv, SlabUNet, to_slabs

__all__ = [
    "SLAB_LOSSES",
    "HaloConv",
    "SlabLayout",
    "SlabUNet",
    "field_sum",
    "gather",
    "halo",
    "slab_loss",
    "to_slabs",
]
