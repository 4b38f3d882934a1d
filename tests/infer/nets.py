"""A small untrained U-Net with the real architecture and non-trivial batch-norm statistics."""

from __future__ import annotations

import torch

from mgtoolkit.nn import UNet, UNetConfig


def make_net(
    *,
    dim: int = 3,
    depth: int = 2,
    convs_per_block: int = 2,
    growth: int = 0,
    dtype=torch.float64,
    seed: int = 0,
) -> UNet:
    """A U-Net whose batch norms hold running statistics far from (0, 1), in eval mode."""
    torch.manual_seed(seed)
    net = UNet(UNetConfig(dim=dim, depth=depth, base_filters=4, convs_per_block=convs_per_block))
    for _ in range(growth):
        for p in net.grow():  # grown blocks start as the identity: make them act
            torch.nn.init.normal_(p, std=0.2)
    net = net.to(dtype)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.3, 3.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
        net.log_nu_scale.fill_(1.7)
    return net.eval()
