"""Activation checkpointing and bf16 autocast of the U-Net, applied from outside; heap reuse."""

from __future__ import annotations

import copy

import pytest
import torch

from mgtoolkit.fem import energy
from mgtoolkit.nn import UNet
from mgtoolkit.nn.memory import CheckpointedSequential, autocast, checkpoint_blocks


def _net(seed=0):
    torch.manual_seed(seed)
    net = UNet(dim=3, depth=2, base_filters=4)
    net.grow()
    return net.train()


def _nu(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.exp(torch.randn(2, 16, 16, 16, generator=g))


def _step(net, nu):
    net.zero_grad()
    loss = energy(nu, net(nu)).mean()
    loss.backward()
    return loss.detach(), {
        k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None
    }


def _saved_bytes(net, nu) -> int:
    """Bytes autograd keeps for backward during one forward pass (distinct storages)."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        energy(nu, net(nu)).mean()
    return sum(seen.values())


def test_checkpointing_same_loss_grads_and_norm_stats():
    plain, nu = _net(), _nu()
    ckpt = checkpoint_blocks(copy.deepcopy(plain))
    assert isinstance(ckpt.encoder[0], CheckpointedSequential)
    assert isinstance(ckpt.grown_in[0].body, CheckpointedSequential)
    assert ckpt.state_dict().keys() == plain.state_dict().keys()
    loss_a, grads_a = _step(plain, nu)
    loss_b, grads_b = _step(ckpt, nu)
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=0)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], rtol=1e-5, atol=1e-7)
    # running statistics updated once, as without checkpointing (not twice)
    for (k, a), b in zip(plain.state_dict().items(), ckpt.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=k)
    assert int(ckpt.encoder[0][1].num_batches_tracked) == 1


def test_checkpointing_keeps_less_for_backward_and_switches_off():
    net, nu = _net(), _nu()
    before = _saved_bytes(net, nu)
    checkpoint_blocks(net)
    after = _saved_bytes(net, nu)
    assert after < 0.6 * before
    checkpoint_blocks(net, enabled=False)
    assert type(net.encoder[0]) is torch.nn.Sequential
    assert _saved_bytes(net, nu) == before
    # eval / no-grad passes do not checkpoint (nothing to recompute)
    with torch.no_grad():
        checkpoint_blocks(net)(nu)


def test_bf16_autocast_close_to_fp32_and_energy_in_fp32():
    net, nu = _net().eval(), _nu()
    with torch.no_grad():
        ref = net(nu)
        with autocast("bf16"):
            coarse = net(nu)
        with autocast("bf16", model=net):
            u = net(nu)
    assert coarse.dtype == torch.bfloat16 and u.dtype == torch.float32
    assert type(net.head) is torch.nn.Conv3d  # restored on exit
    # bf16 body, float32 head: u deviates by far less than bf16's quantization step of u
    err = (u - ref).abs().max()
    assert 0 < err < 2e-4 and (coarse.float() - ref).abs().max() > 5 * err
    gap = (energy(nu, u) - energy(nu, ref)).abs() / energy(nu, ref)
    assert gap.max() < 1e-3


def test_bad_input():
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast("fp16")
    with pytest.raises(TypeError, match="UNet"):
        checkpoint_blocks(torch.nn.Linear(2, 2))
