"""Batch norm with statistics over the global batch of every rank, and its exact gradient."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mgtoolkit.comm.reduce import _active, _sum_over_ranks, world

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm"]


def _global_moments(
    mean_r: torch.Tensor, var_r: torch.Tensor, count: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Global per-channel mean and biased variance from every rank's, with the global count.

    ``mean_r``, ``var_r``: shape (C,), this rank's statistics over its ``count`` values per
    channel. Rank r writes row r of a zero table, so one sum over ranks gathers every rank's
    (mean, variance, count). The rows combine on the host in float64 — counts reach 10^8 at
    512³, beyond float32's 2^24 — with the pairwise formula of Chan et al. (stable, unlike
    sum of squares minus squared mean). Returns ``(mean, var, total)``, float64 arrays of
    shape (C,) and the global count.
    """
    rank, size = world()
    c = mean_r.numel()
    table = torch.zeros(size, 2 * c + 1, dtype=torch.float64, device=mean_r.device)
    torch.cat([mean_r, var_r, mean_r.new_zeros(1)], out=table[rank])
    table[rank, -1] = count
    rows = _sum_over_ranks(table).cpu().numpy()
    means, variances, counts = rows[:, :c], rows[:, c:-1], rows[:, -1:]
    total = counts.sum()
    mean = (counts * means).sum(0) / total
    var = (counts * (variances + (means - mean) ** 2)).sum(0) / total
    return mean, var, float(total)


class _SyncBatchNormFunction(torch.autograd.Function):
    """y = (x − μ) / √(σ² + ε) · w + b with global (μ, σ²), and its exact global gradient.

    Forward and backward use torch's fused batch-norm kernels (in inference mode, fed with
    the global statistics). The gradient w.r.t. x needs the global sums Σ∂y and Σ∂y·x̂ per
    channel: one all-reduce in backward. ``weight``/``bias`` get their local gradients, which
    :func:`average_gradients` averages like every other parameter's.

    Backward makes three passes over the activations (torch's training-mode backward makes
    two): the local sums in one fused kernel, then ∂x = ∂y·w/σ + x·a + b per channel as one
    ``addcmul`` into a new tensor and one in place. The per-channel arithmetic runs on the
    host in float64 numpy: a few dozen operations on vectors of C values per layer, where
    each torch call would cost more than the arithmetic.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, moments, eps):
        # moments: (μ, 1/√(σ² + ε), N) on the host, float64, for backward.
        ctx.save_for_backward(x, weight, mean, var)
        ctx.moments, ctx.eps = moments, eps
        return torch.batch_norm(x, weight, bias, mean, var, False, 0.0, eps, False)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, mean, var = ctx.saved_tensors
        grad_y = grad_y.contiguous(memory_format=_memory_format(x))
        # The local Σ∂y·x̂ (as ∂w) and Σ∂y (as ∂b) of the inference-mode backward.
        _, sum_dy_xhat, sum_dy = torch.ops.aten.native_batch_norm_backward(
            grad_y, x, weight, mean, var, None, None, False, ctx.eps, [False, True, True]
        )
        grad_w = sum_dy_xhat if ctx.needs_input_grad[1] else None
        grad_b = sum_dy if ctx.needs_input_grad[2] else None
        if not ctx.needs_input_grad[0]:
            return None, grad_w, grad_b, None, None, None, None
        c = x.shape[1]
        sums = _sum_over_ranks(torch.cat([sum_dy, sum_dy_xhat])).cpu().numpy()
        mu, invstd, total = ctx.moments
        w_invstd = invstd if weight is None else weight.detach().cpu().numpy() * invstd
        # Training-mode gradient: ∂y·w/σ minus w/σ times the global means of ∂y and ∂y·x̂,
        # ∂x = ∂y·w/σ − w/σ · (Σ∂y + x̂ Σ∂y·x̂) / N, written as ∂y·w/σ + x·a + b per channel.
        a = -w_invstd * invstd * sums[c:] / total
        b = -w_invstd * sums[:c] / total - mu * a
        coef = torch.from_numpy(np.stack([a, b, w_invstd])).to(x.device, x.dtype)
        shape = (1, c, *([1] * (x.dim() - 2)))
        grad_x = torch.addcmul(coef[1].view(shape), x, coef[0].view(shape))
        grad_x.addcmul_(grad_y, coef[2].view(shape))
        return grad_x, grad_w, grad_b, None, None, None, None


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalization with statistics over the global batch, on CPU (gloo) and GPU.

    ``torch.nn.SyncBatchNorm`` runs only on CUDA. This layer computes each rank's mean and
    variance per channel with torch's fused kernel and combines them over the ranks with one
    all-reduce (:func:`_global_moments`). Its backward is the exact gradient of the global
    loss: it sums the two per-channel terms the statistics contribute over all ranks (a
    second all-reduce), so with :func:`average_gradients` every parameter gets the
    single-process gradient.

    Input: (N, C, *spatial) with any number of spatial axes. Without an initialized process
    group, or in eval mode, it is plain batch norm. Running statistics are updated with the
    global mean and the global unbiased variance, as a single process would.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected input of shape (N, C, ...) (got {tuple(input.shape)})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        use_batch = self.training or not self.track_running_stats
        if not (use_batch and _active()):
            return super().forward(x)
        with torch.no_grad():
            # The local statistics come from the kernel plain batch norm uses (one pass over
            # the activations, accumulated in float64 on CPU, no copy of them).
            mean_r, var_r = torch.batch_norm_update_stats(x, None, None, 0.0)
            mean, var, total = _global_moments(mean_r, var_r, x.numel() // x.shape[1])
            unbiased = var * (total / (total - 1)) if total > 1 else var
            # In the parameters' dtype: under bf16 autocast x is bfloat16 while the weights
            # stay float32, and torch's mixed-dtype batch norm wants float32 statistics too.
            dtype = self.weight.dtype if self.affine else x.dtype
            stats = torch.from_numpy(np.stack([mean, var, unbiased])).to(x.device, dtype)
            if self.training and self.track_running_stats:
                self.num_batches_tracked.add_(1)
                factor = (
                    1.0 / int(self.num_batches_tracked) if self.momentum is None else self.momentum
                )
                self.running_mean.mul_(1 - factor).add_(stats[0], alpha=factor)
                self.running_var.mul_(1 - factor).add_(stats[2], alpha=factor)
        return _SyncBatchNormFunction.apply(
            x,
            self.weight if self.affine else None,
            self.bias if self.affine else None,
            stats[0],
            stats[1],
            (mean, 1.0 / np.sqrt(var + self.eps), total),
            self.eps,
        )


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every batch-norm layer of ``module`` by :class:`SyncBatchNorm`.

    The new layers hold the same parameters and running statistics (the same tensors).
    Returns ``module`` unchanged when the world size is 1 (plain batch norm is then the same
    computation), otherwise the converted module (the root object is replaced if it is itself
    a batch-norm layer).
    """
    if world()[1] == 1:
        return module
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, SyncBatchNorm
    ):
        new = SyncBatchNorm(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
            device=module.weight.device if module.affine else None,
            dtype=module.weight.dtype if module.affine else None,
        )
        # The same parameter and buffer tensors, not copies: an optimizer built before the
        # conversion, or another module sharing them, keeps working.
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, _convert(child))
    return module
