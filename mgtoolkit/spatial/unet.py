"""The U-Net on slabs: :func:`to_slabs` turns a :class:`~mgtoolkit.nn.UNet` into the network
that runs on one slab per rank and computes, over the spatial group, the unsplit function.

What changes on a slab, layer by layer (docs/spatial.md):

- **Input.** The mean of log ν over each whole field is summed over the slabs
  (:func:`~mgtoolkit.spatial.halo.field_sum`); the x coordinate is not on the split axis.
- **Convolutions** (3^d, padding 1) get one plane from each neighbour (:func:`halo`), and
  zero padding only at the outer faces, as the unsplit network pads.
- **Pooling and transposed convolutions** need nothing: slabs are a multiple of ``2**depth``
  planes (:meth:`SlabLayout.check`), so no window straddles two slabs at any depth.
- **Batch norm** uses the statistics of every rank of the world
  (:class:`~mgtoolkit.comm.SyncBatchNorm`): all slabs of all fields of the global batch, the
  statistics of single-rank training on the global batch.
- **Head.** The cells → nodes convolution gets one halo cell plane from each neighbour and
  the unsplit replicate padding at the outer faces; it gives u on the node planes the slab
  *holds* (its own and the next slab's first, :mod:`~mgtoolkit.spatial.layout`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mgtoolkit.comm import convert_sync_batchnorm
from mgtoolkit.nn import UNet
from mgtoolkit.spatial.halo import field_sum, gather, halo
from mgtoolkit.spatial.layout import SlabLayout

__all__ = ["HaloConv", "SlabUNet", "to_slabs"]

#: Normalizations whose statistics a slab computes exactly (with the world's batch norm).
SLAB_NORMS = ("batch", "none")


class HaloConv(nn.Module):
    """A convolution with padding along the split axis, run on a slab.

    Holds the wrapped convolution's own ``weight`` and ``bias`` (the same tensors, under the
    same names, so state dicts match). Input and output: ``(B, C) + slab`` on cells, the split
    axis first among the spatial ones.
    """

    def __init__(self, conv: nn.Conv2d | nn.Conv3d, layout: SlabLayout) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or any(s != 1 for s in conv.stride):
            raise ValueError(
                f"only stride-1 convolutions with zero padding run on slabs (got {conv})"
            )
        self.weight = conv.weight
        self.register_parameter("bias", conv.bias)
        self.layout = layout
        self.padding = tuple(conv.padding)
        self.dilation, self.groups = conv.dilation, conv.groups
        self._conv = F.conv2d if isinstance(conv, nn.Conv2d) else F.conv3d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.padding[0]
        x = halo(x, self.layout, axis=2, lo=p, hi=p, outer="zeros")
        return self._conv(
            x, self.weight, self.bias, 1, (0, *self.padding[1:]), self.dilation, self.groups
        )


def _halo_convs(module: nn.Module, layout: SlabLayout) -> None:
    """Replace, in place, every convolution of ``module`` that pads the split axis."""
    for name, child in module.named_children():
        if isinstance(child, (nn.Conv2d, nn.Conv3d)) and child.padding[0]:
            setattr(module, name, HaloConv(child, layout))
        else:
            _halo_convs(child, layout)


class SlabUNet(nn.Module):
    """A :class:`~mgtoolkit.nn.UNet` run on one slab of each field per rank.

    Build it with :func:`to_slabs`. Every rank of the world calls :meth:`forward` together.

    Attributes
    ----------
    net : UNet
        The converted network; its parameters and buffers are the original UNet's.
    layout : SlabLayout
    """

    def __init__(self, net: UNet, layout: SlabLayout) -> None:
        super().__init__()
        self.net, self.layout = net, layout

    def forward(self, nu: torch.Tensor) -> torch.Tensor:
        """u on the node planes this slab holds from ν on its cell planes.

        Parameters
        ----------
        nu : torch.Tensor, shape ``(B, m) + (n,) * (dim − 1)`` on cells
            This rank's slab (``layout.split(nu, grid="cells", dim=dim)``), ``m = n / S``.

        Returns
        -------
        torch.Tensor, shape ``(B, m + 1) + (n + 1,) * (dim − 1)`` on nodes
            The node planes ``layout.nodes(n)`` of the unsplit network's output, Dirichlet
            values included.
        """
        net, layout = self.net, self.layout
        d = net.config.dim
        n = int(nu.shape[-1])
        layout.check(n, depth=net.config.depth)
        want = (n // layout.size,) + (n,) * (d - 1)
        if nu.dim() != d + 1 or tuple(nu.shape[1:]) != want:
            raise ValueError(
                f"a slab of a field of {n} cells per side split over {layout.size} ranks has "
                f"shape (batch,) + {want} on cells (got {tuple(nu.shape)})"
            )
        spatial = tuple(range(1, d + 1))
        with torch.no_grad():
            mean = field_sum(torch.log(nu).sum(dim=spatial), layout) / n**d
        x = net.to_layout(net.inputs(nu, log_nu_mean=mean.view(-1, *[1] * d)))
        x = net.features(x)
        # Cells → nodes: the head sees the cell planes on both sides of each node plane.
        x = halo(x, layout, axis=2, lo=1, hi=1, outer="replicate")
        x = F.pad(x, (1, 1) * (d - 1) + (0, 0), mode="replicate")
        return net.outputs(net.head(x))

    @torch.no_grad()
    def predict(self, nu: torch.Tensor) -> torch.Tensor:
        """u on the nodes of the whole fields, on every rank, from this rank's slab of ν.

        The network in eval mode (batch norm with its running statistics), as
        ``unet.eval()(nu)`` on the whole fields of the data group; it stays in eval mode.
        ``nu`` as in :meth:`forward`; returns ``(B,) + (n + 1,) * dim`` (gathered from every
        slab's own node planes, :func:`~mgtoolkit.spatial.halo.gather`).
        """
        self.eval()
        return gather(self(nu), self.layout, grid="nodes", dim=self.net.config.dim)


def to_slabs(unet: UNet, layout: SlabLayout) -> SlabUNet:
    """The slab-parallel form of ``unet``, sharing its parameters and buffers.

    ``unet`` itself is left as it is (it still runs whole fields); the returned network holds
    the same parameter and buffer tensors, so an optimizer over ``unet.parameters()`` trains
    both and ``unet.state_dict()`` is the checkpoint. Convert after :meth:`UNet.grow` (the
    new blocks are not in an earlier conversion).

    Parameters
    ----------
    unet : UNet
        Normalization "batch" or "none" (instance and group norm normalise each sample over
        its whole field: not supported on slabs); no ``mirror_average``.
    layout : SlabLayout

    Raises
    ------
    ValueError
        For a normalization or symmetry averaging that slabs do not support.
    """
    if unet.cascades:
        raise ValueError(
            "a cascaded network (UNet.cascade) runs whole fields: its coarse stage cannot be "
            "split in slabs; train it with one rank per field"
        )
    cfg = unet.config
    if cfg.norm not in SLAB_NORMS:
        raise ValueError(
            f"model.norm = {cfg.norm!r} normalises each sample over its whole field, which a "
            f"slab does not hold: use one of {', '.join(SLAB_NORMS)} with spatial parallelism"
        )
    if unet.mirror_average:
        raise ValueError(
            "mirror_average maps whole fields (reversing the split axis moves data between "
            "ranks): set mirror_average = False on the network run on slabs"
        )
    shared = {id(t): t for t in (*unet.parameters(), *unet.buffers())}
    net = copy.deepcopy(unet, memo=shared)
    _halo_convs(net, layout)
    net = convert_sync_batchnorm(net)
    return SlabUNet(net, layout)
