"""Streamed inference equals the network's own forward pass, for every layer kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nets import make_net

from mgtoolkit.infer.stream import StreamedUNet
from mgtoolkit.nn import UNet


def _stream(net, nu, planes):
    """Stream the network's own input channels of ``nu`` (1, n, ...) through it."""
    with torch.no_grad():
        x = net.inputs(nu)
    return StreamedUNet(net, planes=planes)(lambda a, b: x[:, :, a:b], cells=nu.shape[1])


@pytest.mark.parametrize(
    ("dim", "depth", "cpb", "growth", "planes", "n"),
    [
        (3, 2, 1, 0, 8, 32),  # steps aligned to the pooling grid
        (3, 2, 2, 1, 5, 32),  # odd steps, grown residual blocks, two convs per block
        (2, 3, 2, 1, 3, 64),  # 2D, deeper than the steps are long
        (2, 2, 1, 0, 1000, 16),  # one step for the whole field
        (2, 3, 1, 0, 1, 32),  # one plane per step
    ],
)
def test_streamed_equals_forward_float64(dim, depth, cpb, growth, planes, n):
    net = make_net(dim=dim, depth=depth, convs_per_block=cpb, growth=growth)
    nu = torch.exp(2 * torch.randn((1,) + (n,) * dim, dtype=torch.float64))
    with torch.no_grad():
        ref = net(nu)[0]
    u = _stream(net, nu, planes)
    assert u.shape == ref.shape
    # Folded batch norm and the blocked evaluation reorder float64 sums only.
    torch.testing.assert_close(u, ref, rtol=0, atol=1e-12)


def test_streamed_float32_through_onednn_without_norm():
    """float32 slabs go to oneDNN directly; a norm-free network keeps its conv biases."""
    torch.manual_seed(1)
    net = UNet(dim=3, depth=2, base_filters=4, norm="none", convs_per_block=1).eval()
    for m in net.modules():  # non-zero biases, so that dropping one would show
        if isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d) and m.bias is not None:
            torch.nn.init.uniform_(m.bias, -0.5, 0.5)
    nu = torch.exp(2 * torch.randn(1, 64, 24, 40))
    with torch.no_grad():
        ref = net(nu)[0]
    np.testing.assert_allclose(_stream(net, nu, 16).numpy(), ref.numpy(), rtol=0, atol=2e-6)


def test_streamed_refuses_training_mode_and_bad_planes():
    net = make_net(dim=2, depth=2)
    with pytest.raises(ValueError, match="positive integer"):
        StreamedUNet(net, planes=0)
    with pytest.raises(ValueError, match="eval-mode"):
        StreamedUNet(net.train())
    with pytest.raises(ValueError, match="multiple of 2"):
        StreamedUNet(net.eval())(lambda a, b: None, cells=6)
