"""Streamed inference: a U-Net's eval-mode forward pass swept along the first spatial axis.

Why: tiles that overlap by the receptive field recompute their halo. At 512³ with slabs that
fit in 8 GiB that is about as much work again as the field itself. Here every layer of the
network becomes a *stream* of planes along the first spatial axis (z in 3D, y in 2D); asking
for the next planes of the output pulls just the planes each layer needs from the layer below,
computes them once, and keeps only the few planes its consumers still need (a rolling buffer).
Nothing is recomputed, and memory is set by the plane area times ``planes`` (a chunk of output
planes) plus the network's lead along the axis (its receptive field), not by the field's depth.

Exact: every layer is local along the axis — a 3-point convolution needs one plane either side
(zero padding at the ends), max-pooling reads planes ``2c, 2c + 1``, the stride-2 transposed
convolution writes planes ``2c, 2c + 1`` from plane ``c``, the cells→nodes head reads cells
``j − 1, j`` (replicated at the ends); the other two axes are computed whole, with the
network's own padding. Batch norm in eval mode is an affine map per channel and is folded into
the preceding convolution (weights ``w·γ/σ``, bias ``(b − μ)·γ/σ + β``), which is exact up to
rounding; activations run in place; tensors use the channels-last layout, oneDNN's native one,
in which a range of planes is a contiguous block.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mgtoolkit.runtime import heap_reuse

__all__ = ["DEFAULT_PLANES", "StreamedUNet"]

#: Output planes computed per step by default: enough to keep the convolutions efficient;
#: larger steps cost memory in proportion and gain almost no time (docs/performance.md).
DEFAULT_PLANES = 16


class _Stream:
    """Planes ``[0, size)`` of one tensor ``(1, C, size, ...)`` along axis 2, made on demand.

    Subclasses compute planes ``[a, b)`` from their inputs (:meth:`_compute`). Computed planes
    are kept in chunks until no consumer can need them again (:meth:`trim`).
    """

    def __init__(self, size: int, inputs: list[_Stream]) -> None:
        self.size = size
        self.inputs = inputs
        self.hi = 0  # planes [0, hi) have been computed
        self.chunks: list[tuple[int, torch.Tensor]] = []  # (first plane, planes), ascending
        self.needs: list = []  # per consumer: () -> lowest plane of ours it may still read
        for s in inputs:
            s.needs.append(self.lowest_input_plane)

    def lowest_input_plane(self) -> int:
        """The lowest plane of an input that a future step of this stream may read."""
        return self.hi

    def _target(self, upto: int) -> int:
        return upto

    def ensure(self, upto: int) -> None:
        """Compute planes up to ``upto`` (exclusive, clipped to the stream)."""
        upto = min(self._target(upto), self.size)
        if upto <= self.hi:
            return
        planes = self._compute(self.hi, upto)
        self.chunks.append((self.hi, planes))
        self.hi = upto
        for s in self.inputs:
            s.trim()

    def _compute(self, a: int, b: int) -> torch.Tensor:
        raise NotImplementedError

    def slab(self, a: int, b: int) -> torch.Tensor:
        """Planes ``[a, b)`` (computed, not yet trimmed): a view if they lie in one chunk."""
        parts = []
        for start, planes in self.chunks:
            stop = start + planes.shape[2]
            if stop > a and start < b:
                parts.append(planes[:, :, max(a, start) - start : min(b, stop) - start])
        if len(parts) == 1:
            return parts[0]
        return _contiguous(torch.cat(parts, dim=2))

    def trim(self) -> None:
        """Drop chunks below the lowest plane any consumer may still read."""
        keep = min((need() for need in self.needs), default=self.hi)
        self.chunks = [(s, p) for s, p in self.chunks if s + p.shape[2] > keep]


def _contiguous(x: torch.Tensor) -> torch.Tensor:
    fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
    return x.contiguous(memory_format=fmt)


class _Input(_Stream):
    """The network's input channels, one range of cell planes at a time from ``source``."""

    def __init__(self, size: int, source) -> None:
        super().__init__(size, [])
        self.source = source

    def _compute(self, a: int, b: int) -> torch.Tensor:
        return _contiguous(self.source(a, b))


class _Conv(_Stream):
    """3-point convolution (padding 1) with folded batch norm, activation and residual.

    ``inputs`` are concatenated along channels (the decoder's skip connection); ``residual``
    is added after the activation-free last convolution of a residual block.
    """

    def __init__(self, inputs, weight, bias, act, residual: _Stream | None = None) -> None:
        self.weight, self.bias, self.act, self.residual = weight, bias, act, residual
        super().__init__(inputs[0].size, inputs)
        if residual is not None:
            residual.needs.append(lambda: self.hi)

    def lowest_input_plane(self) -> int:
        return self.hi - 1

    def _compute(self, a: int, b: int) -> torch.Tensor:
        lo, hi = max(a - 1, 0), min(b + 1, self.size)
        for s in self.inputs:
            s.ensure(hi)
        parts = [s.slab(lo, hi) for s in self.inputs]
        x = parts[0] if len(parts) == 1 else _contiguous(torch.cat(parts, dim=1))
        del parts
        front, back = int(a == 0), int(b == self.size)
        if front or back:  # the network's zero padding at the ends of the axis
            x = _contiguous(F.pad(x, (0, 0) * (x.dim() - 3) + (front, back)))
        y = _conv(x, self.weight, self.bias, padding=(0,) + (1,) * (x.dim() - 3))
        del x
        if self.act is not None:
            y = self.act(y)
        if self.residual is not None:
            self.residual.ensure(b)
            y += self.residual.slab(a, b)
        return y


class _Pool(_Stream):
    """2-wide max-pooling: plane c reads planes 2c, 2c + 1."""

    def __init__(self, src: _Stream) -> None:
        super().__init__(src.size // 2, [src])

    def lowest_input_plane(self) -> int:
        return 2 * self.hi

    def _compute(self, a: int, b: int) -> torch.Tensor:
        (src,) = self.inputs
        src.ensure(2 * b)
        x = src.slab(2 * a, 2 * b)
        return _contiguous((F.max_pool3d if x.dim() == 5 else F.max_pool2d)(x, 2))


class _Up(_Stream):
    """Stride-2 transposed convolution: planes 2c, 2c + 1 come from plane c."""

    def __init__(self, src: _Stream, module: nn.Module) -> None:
        self.module = module
        super().__init__(2 * src.size, [src])

    def lowest_input_plane(self) -> int:
        return self.hi // 2

    def _target(self, upto: int) -> int:
        return upto + upto % 2

    def _compute(self, a: int, b: int) -> torch.Tensor:
        (src,) = self.inputs
        src.ensure(b // 2)
        return _contiguous(self.module(src.slab(a // 2, b // 2)))


class _Head(_Stream):
    """Cells → nodes: node j reads cells j − 1, j (replicated at the ends), then sigmoid."""

    def __init__(self, src: _Stream, module: nn.Module) -> None:
        self.module = module
        super().__init__(src.size + 1, [src])

    def lowest_input_plane(self) -> int:
        return self.hi - 1

    def _compute(self, a: int, b: int) -> torch.Tensor:
        from mgtoolkit.fem import impose_dirichlet

        (src,) = self.inputs
        cells = src.size
        src.ensure(min(b, cells))
        x = src.slab(max(a - 1, 0), min(b, cells))
        if a == 0:
            x = torch.cat([x[:, :, :1], x], dim=2)
        if b == cells + 1:
            x = torch.cat([x, x[:, :, -1:]], dim=2)
        x = F.pad(x, (1, 1) * (x.dim() - 3) + (0, 0), mode="replicate")
        return impose_dirichlet(torch.sigmoid(self.module(x)))


def _conv(x: torch.Tensor, weight: torch.Tensor, bias, *, padding) -> torch.Tensor:
    """Stride-1 convolution, through oneDNN for float32.

    Why not ``F.conv3d`` alone: torch sends a convolution whose input has
    ``channels × planes × rows ≤ 20480`` to its slow im2col kernel, a heuristic for whole
    small inputs that catches our thin slabs (2 input channels × 32 planes × 256 rows) and
    runs them 3–4× slower. float64 has no oneDNN kernel.
    """
    if x.dtype == torch.float32 and torch.backends.mkldnn.is_available():
        ones = [1] * (x.dim() - 2)
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, list(padding), ones, ones, 1)
    return (F.conv3d if x.dim() == 5 else F.conv2d)(x, weight, bias, padding=padding)


def _activation(module: nn.Module):
    """An in-place version of the network's activation where torch has one."""
    if isinstance(module, nn.LeakyReLU):
        slope = module.negative_slope
        return lambda y: F.leaky_relu_(y, slope)
    if isinstance(module, nn.ReLU):
        return F.relu_
    return module


def _fold(conv: nn.Module, norm: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weights and bias of ``norm(conv(x))`` as one convolution (eval-mode batch norm)."""
    weight = conv.weight.detach()
    bias = None if conv.bias is None else conv.bias.detach()
    if norm is None:
        return _contiguous(weight), bias
    scale = (norm.running_var + norm.eps).rsqrt()
    if norm.affine:
        scale = scale * norm.weight.detach()
    shift = -norm.running_mean * scale
    if bias is not None:
        shift = shift + bias * scale
    if norm.affine:
        shift = shift + norm.bias.detach()
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return _contiguous(weight * scale.reshape(shape)), shift


def _layers(block: nn.Sequential) -> list[tuple]:
    """(weight, bias, activation or None) per convolution of a block, batch norm folded in."""
    groups: list[list] = []
    for m in block:
        if isinstance(m, nn.Conv2d | nn.Conv3d):
            groups.append([m, None, None])
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            groups[-1][1] = m
        elif not isinstance(m, nn.Identity):
            groups[-1][2] = _activation(m)
    return [(*_fold(conv, norm), act) for conv, norm, act in groups]


def _chain(layers: list[tuple], inputs: list[_Stream], residual=None) -> _Stream:
    """Streams of one block; ``residual`` is added to its last convolution's output."""
    for i, (weight, bias, act) in enumerate(layers):
        last = i == len(layers) - 1
        inputs = [_Conv(inputs, weight, bias, act, residual if last else None)]
    return inputs[0]


class StreamedUNet:
    """Eval-mode forward pass of a :class:`~mgtoolkit.nn.UNet` streamed along the first axis.

    Parameters
    ----------
    model : mgtoolkit.nn.UNet
        In eval mode with norm "batch" or "none" (its weights are read, not copied, except
        the convolutions that batch norm is folded into).
    planes : int
        Output node planes computed per step (sets memory together with the plane area).

    Calling it on input channels gives the same result as the network's layers after
    :meth:`~mgtoolkit.nn.UNet.inputs`, up to rounding.
    """

    def __init__(self, model, *, planes: int = DEFAULT_PLANES) -> None:
        cfg = model.config
        if model.training or cfg.norm not in ("batch", "none"):
            raise ValueError("streamed inference needs an eval-mode network with batch or no norm")
        if model.cascades:
            raise ValueError(
                "a cascaded network (UNet.cascade) needs whole fields for its coarse stage "
                "and cannot be streamed plane by plane; call it on the whole field"
            )
        if isinstance(planes, bool) or not isinstance(planes, int | np.integer) or planes < 1:
            raise ValueError(f"planes must be a positive integer (got {planes!r})")
        self.model, self.planes = model, int(planes)
        with torch.no_grad():
            self._layers = {id(b): _layers(b) for b in _blocks(model)}

    def __call__(self, source, *, cells: int, out=None) -> torch.Tensor:
        """u on the nodes of a box whose input channels ``source(a, b)`` gives per cell plane.

        Parameters
        ----------
        source : callable ``(a, b) -> torch.Tensor (1, C) + (b - a, ...)``
            Input channels of cell planes ``[a, b)`` along the first spatial axis (as made by
            :meth:`~mgtoolkit.nn.UNet.inputs`), any dtype the network has.
        cells : int
            Cells along that axis (a multiple of ``2**depth``).
        out : callable ``(a, b, u)``, optional
            Receives each computed range of node planes ``u`` of shape ``(b - a, ...)``
            (then dropped); by default they are gathered and returned.

        Returns
        -------
        torch.Tensor ``(cells + 1, ...)`` on nodes, or None when ``out`` is given.
        """
        cfg, model = self.model.config, self.model
        m = 2**cfg.depth
        if cells % m:
            raise ValueError(f"streaming needs a multiple of 2**depth = {m} cells (got {cells})")
        layers = self._layers
        x: _Stream = _Input(cells, source)
        skips = []
        for i, block in enumerate(model.encoder):
            x = _chain(layers[id(block)], [x])
            if i == 0:
                for g in model.grown_in:
                    x = _chain(layers[id(g.body)], [x], residual=x)
            if i < cfg.depth:
                skips.append(x)
                x = _Pool(x)
        for i in reversed(range(cfg.depth)):
            up = _Up(x, model.up[i])
            x = _chain(layers[id(model.decoder[i])], [up, skips[i]])
        for g in model.grown_out:
            x = _chain(layers[id(g.body)], [x], residual=x)
        head = _Head(x, model.head)
        del x, skips, up
        gathered = []
        # Each step allocates and frees the same large tensors: keeping freed memory in the
        # heap saves the page faults of fresh mmap pages. Process-wide;
        # predict_store's workers run one tile at a time.
        with torch.inference_mode(), heap_reuse():
            for a in range(0, head.size, self.planes):
                b = min(a + self.planes, head.size)
                head.ensure(b)
                ((start, u),) = head.chunks
                head.chunks.clear()
                if out is None:
                    gathered.append(u[0, 0])
                else:
                    out(start, b, u[0, 0])
                del u
        return None if out is not None else torch.cat(gathered, dim=0)


def _blocks(model) -> list[nn.Sequential]:
    """Every conv block of a U-Net (encoder, decoder, grown residual bodies)."""
    return [
        *model.encoder,
        *model.decoder,
        *(g.body for g in (*model.grown_in, *model.grown_out)),
    ]
