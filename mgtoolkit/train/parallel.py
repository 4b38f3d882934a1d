"""Data-parallel primitives over ``torch.distributed`` (DESIGN.md §3, loss integrity).

Every function is a no-op (or the identity) when ``torch.distributed`` is not initialized, so
the trainer calls them unconditionally and a single process runs exactly the serial code.

The recipe that makes a run independent of the number of ranks p (up to rounding):

1. Every rank builds the *same* global sample order (same seed) and pads it with
   :func:`padded_order` (to a multiple of the global batch: every mini-batch is then full).
2. Each global mini-batch of B samples is split into p equal, contiguous local batches with
   :func:`local_slice`; their union, in rank order, is the single-process batch.
3. Each rank computes the *mean* loss over its local batch and back-propagates it;
   :func:`average_gradients` then averages the gradients, which equals the gradient of the
   global mean loss because the local batches have equal sizes.
4. Batch norm uses global batch statistics: :func:`convert_sync_batchnorm`.
5. Reported losses and metrics are global: :func:`all_reduce_mean` / :func:`all_reduce_sum`.
6. Initial weights are equal on every rank: :func:`broadcast_module` after construction.

For L-BFGS the closure does steps 3–5 so that it returns the global loss and leaves the global
gradient in ``.grad``; every rank then runs the identical L-BFGS update.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "SyncBatchNorm",
    "all_reduce_mean",
    "all_reduce_sum",
    "average_gradients",
    "broadcast_module",
    "convert_sync_batchnorm",
    "local_slice",
    "padded_order",
    "world",
]


def _active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """Return ``(rank, size)`` of the default process group, ``(0, 1)`` if there is none."""
    if not _active():
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size()


def local_slice(global_batch: int) -> slice:
    """This rank's contiguous part of a global mini-batch of ``global_batch`` samples.

    Rank r of p gets ``slice(r * B // p, (r + 1) * B // p)``; the parts, in rank order,
    concatenate to the whole batch.

    Raises
    ------
    ValueError
        If the world size does not divide ``global_batch``. The batch is refused rather than
        split unevenly: unequal local batches would weight samples differently in the averaged
        gradient and break loss integrity.
    """
    rank, size = world()
    if not isinstance(global_batch, int | np.integer) or global_batch < 1:
        raise ValueError(f"global batch must be a positive integer (got {global_batch!r})")
    if global_batch % size:
        lower = (global_batch // size) * size
        options = ", ".join(str(b) for b in (lower, lower + size) if b > 0)
        raise ValueError(
            f"global batch {global_batch} is not divisible by the world size {size}: each rank "
            f"must get an equal share. Use a global batch that is a multiple of {size} "
            f"(e.g. {options}) or a number of ranks that divides {global_batch}"
        )
    part = int(global_batch) // size
    return slice(rank * part, (rank + 1) * part)


def padded_order(indices: Sequence[int] | np.ndarray, size: int) -> np.ndarray:
    """Pad a sample order to a multiple of ``size`` by repeating its first entries.

    ``order + order[:k]`` with the smallest ``k ≥ 0`` that makes the length a multiple of
    ``size`` (the order is cycled if ``k`` exceeds its length). The padding depends only on
    the order and ``size``, so every rank computes the same padded order.

    Pass ``size = global_batch`` (a multiple of the world size) to make every mini-batch full:
    the padded order, and hence the training trajectory, is then the same for every world
    size. ``size = world_size`` pads minimally, but then the last, partial batch of an epoch
    depends on the world size.

    Parameters
    ----------
    indices : sequence of int, shape (N,)
        Sample indices in the order they will be visited (already shuffled, N ≥ 1).
    size : int
        The multiple to pad to.

    Returns
    -------
    numpy.ndarray of int64, shape (ceil(N / size) * size,)
    """
    order = np.asarray(indices, dtype=np.int64).reshape(-1)
    if order.size == 0:
        raise ValueError("cannot pad an empty sample order: the dataset has no samples")
    if not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"size must be a positive integer (got {size!r})")
    total = -(-order.size // int(size)) * int(size)
    return np.resize(order, total)  # np.resize cycles the input to fill


def _reduce(t: torch.Tensor, *, mean: bool) -> torch.Tensor:
    if not _active():
        return t
    import torch.distributed as dist

    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    if mean:
        out /= dist.get_world_size()
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over all ranks, as a new tensor (``t`` itself when not distributed).

    Not differentiable: use it for reported values (losses, metrics, counts).
    """
    return _reduce(t, mean=False)


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over all ranks, as a new tensor (``t`` itself when not distributed).

    The mean of per-rank mean losses is the global mean loss when local batches are equal.
    Not differentiable: use it for reported values.
    """
    return _reduce(t, mean=True)


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace each parameter's ``.grad`` by its mean over all ranks (in place).

    All gradients travel in one flat buffer per dtype (one all-reduce, not one per tensor).
    A parameter without a gradient on some rank counts as a zero gradient there; it keeps
    ``grad = None`` only if it has no gradient on any rank, as in a single process.
    """
    if not _active():
        return
    import torch.distributed as dist

    size = dist.get_world_size()
    params = [p for p in params if p.requires_grad]
    by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
    for p in params:
        by_dtype.setdefault(p.dtype, []).append(p)
    for group in by_dtype.values():
        # One flag per parameter appended to the buffer says "this rank had a gradient".
        parts = [
            p.grad.detach().reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)
            for p in group
        ]
        flags = torch.tensor(
            [p.grad is not None for p in group], dtype=group[0].dtype, device=group[0].device
        )
        flat = torch.cat([*parts, flags])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= size
        offset = 0
        for i, p in enumerate(group):
            n = p.numel()
            if flat[-len(group) + i] > 0:
                p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n


@torch.no_grad()
def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (in place).

    Call it once after building the model (and after loading a checkpoint on rank 0 only).
    """
    if not _active():
        return
    import torch.distributed as dist

    tensors = [*module.parameters(), *module.buffers()]
    by_key: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in tensors:
        by_key.setdefault((t.dtype, t.device), []).append(t)
    for group in by_key.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.broadcast(flat, src=0)
        offset = 0
        for t in group:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of a sum is the sum of the gradients.

    (``torch.distributed.nn.functional.all_reduce`` does the same but is deprecated.)
    """

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalization with statistics over the global batch, on CPU (gloo) and GPU.

    ``torch.nn.SyncBatchNorm`` runs only on CUDA. This layer gathers each rank's
    (count, mean, sum of squared deviations) per channel with one *differentiable*
    all-reduce (``torch.distributed.nn.functional.all_reduce``) and combines them with the
    pairwise formula of Chan et al. — stable, unlike sum-of-squares minus squared mean.
    Gradients flow back through the statistics to every rank's inputs, so with
    :func:`average_gradients` the result is the gradient of the global loss.

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
        import torch.distributed as dist

        rank, size = dist.get_rank(), dist.get_world_size()
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = x.numel() // c
        shape = (1, c, *([1] * (x.dim() - 2)))
        # Local two-pass statistics in the input's precision (no float64 copy of the
        # activations); the per-channel vectors combine in float64, because counts reach
        # 10^8 at 512³ and exceed float32's 2^24.
        mean_r = x.mean(dim=dims)
        m2_r = (x - mean_r.view(shape)).square().sum(dim=dims)
        slots = torch.zeros(size, 2 * c + 1, dtype=torch.float64, device=x.device)
        mine = torch.cat([mean_r.double(), m2_r.double(), slots.new_tensor([float(count)])])
        slots = slots.index_copy(0, torch.tensor([rank], device=x.device), mine[None])
        gathered = _AllReduceSum.apply(slots)  # row r holds rank r's statistics
        means, m2s, counts = gathered[:, :c], gathered[:, c : 2 * c], gathered[:, 2 * c :]
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        m2 = (m2s + counts * (means - mean).square()).sum(0)
        var = m2 / total

        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = m2 / (total - 1) if total > 1 else var
                self.running_mean.mul_(1 - factor).add_(factor * mean.to(x.dtype))
                self.running_var.mul_(1 - factor).add_(factor * unbiased.to(x.dtype))

        scale = torch.rsqrt(var + self.eps).to(x.dtype)
        if self.affine:
            scale = scale * self.weight
        y = (x - mean.to(x.dtype).view(shape)) * scale.view(shape)
        if self.affine:
            y = y + self.bias.view(shape)
        return y


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every batch-norm layer of ``module`` by :class:`SyncBatchNorm`.

    Parameters and running statistics are carried over. Returns ``module`` unchanged when
    the world size is 1 (plain batch norm is then the same computation), otherwise the
    converted module (the root object is replaced if it is itself a batch-norm layer).
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
        with torch.no_grad():
            if module.affine:
                new.weight.copy_(module.weight)
                new.bias.copy_(module.bias)
            if module.track_running_stats:
                new.running_mean.copy_(module.running_mean)
                new.running_var.copy_(module.running_var)
                new.num_batches_tracked.copy_(module.num_batches_tracked)
            if module.affine:
                new.weight.requires_grad_(module.weight.requires_grad)
                new.bias.requires_grad_(module.bias.requires_grad)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, _convert(child))
    return module
