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

**Transport.** Synchronized batch norm needs two small all-reduces per layer and step (about 30
for the paper's U-Net), strictly one after the other. Over gloo each costs 0.5–1.5 ms even
between processes of one machine (measured: median 0.5 ms, 10 % of calls above 3.5 ms), which
alone cost half the parallel efficiency at p = 2. When every rank runs on the same machine
(LocalCluster, :func:`mgtoolkit.dist.spawn`, ``mpirun`` on one node), CPU tensors are therefore
summed through a shared-memory segment instead (about 12 µs per call, checked to be truly shared
when the group starts; ``MGTOOLKIT_SHARED_MEMORY=0`` turns it off). Both transports give every
rank the bit-identical result. GPU tensors and multi-node groups use the process group.
"""

from __future__ import annotations

import os
import time
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


class _SharedMemoryChannel:
    """Sum tensors over the ranks of one machine through a shared-memory segment.

    Layout: one int64 round counter and one pid per rank, then two banks (alternate rounds)
    of one slot per rank. In round k a rank copies its part into its slot of bank k % 2,
    publishes k, waits until every rank has published k and sums the slots in rank order —
    the same additions on every rank, hence bit-identical sums. A bank is rewritten two rounds
    later, after every rank has published the round in between, i.e. finished reading it.
    Larger tensors pass in several rounds of ``SLOT_BYTES``.

    The slots are torch views of the segment, so a round is one copy into the own slot and one
    addition per peer straight out of the others' slots: about 12 µs in all for the small
    vectors of synchronized batch norm, which exchanges ~30 of them per step.

    x86-64 only: it relies on stores (and loads) staying in program order (TSO); elsewhere the
    process group is used.
    """

    SLOT_BYTES = 1 << 20
    #: How long a waiting rank polls before it starts to sleep, in seconds (see ``spin_s``).
    SPIN_S = 0.02

    def __init__(self, rank: int, size: int, path: str, *, create: bool):
        import mmap

        self.rank, self.size = rank, size
        header = 8 * 2 * size
        total = header + 2 * size * self.SLOT_BYTES
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, total)
            self._map = mmap.mmap(fd, total)
        finally:
            os.close(fd)
        # The round counters as a memoryview: reading one is a plain load of shared memory
        # (~50 ns from Python), which is what the wait loop does over and over.
        self._words = memoryview(self._map).cast("q")
        self.seq = self._words[:size]
        self.pids = np.frombuffer(self._map, dtype=np.int64, count=size, offset=8 * size)
        self.banks = torch.frombuffer(
            self._map, dtype=torch.uint8, offset=header, count=2 * size * self.SLOT_BYTES
        ).view(2, size, self.SLOT_BYTES)
        self._rows: dict[torch.dtype, list[list[torch.Tensor]]] = {}
        self.round = 0
        # Poll (a few µs between a peer's store and this rank seeing it) only when every rank
        # can have a core of its own; with more ranks than cores a polling rank would take
        # the core its peer needs, so it sleeps at once.
        self.spin_s = self.SPIN_S if size <= len(os.sched_getaffinity(0)) else 0.0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of the CPU tensor ``t`` over the ranks, as a new contiguous tensor."""
        src = t.detach().reshape(-1)
        rows = self._rows.get(src.dtype) or self._make_rows(src.dtype)
        step = self.SLOT_BYTES // src.element_size()
        sums = []
        for start in range(0, max(src.numel(), 1), step):
            part = src[start : start + step]
            n = part.numel()
            bank = rows[(self.round + 1) % 2]
            bank[self.rank][:n].copy_(part)
            self._publish_and_wait()
            # Rank-order accumulation: the same operations, hence bits, on every rank.
            acc = torch.add(bank[0][:n], bank[1][:n]) if self.size > 1 else bank[0][:n].clone()
            for r in range(2, self.size):
                acc += bank[r][:n]
            sums.append(acc)
        return (sums[0] if len(sums) == 1 else torch.cat(sums)).view(t.shape)

    def _make_rows(self, dtype: torch.dtype) -> list[list[torch.Tensor]]:
        """``rows[bank][rank]``: the slots as 1-D tensors of ``dtype`` (made once per dtype)."""
        typed = self.banks.view(dtype)
        self._rows[dtype] = [[typed[b, r] for r in range(self.size)] for b in range(2)]
        return self._rows[dtype]

    def _publish_and_wait(self) -> None:
        self.round += 1
        k = self.round
        self.seq[self.rank] = k  # published after the data (x86-64 keeps the stores in order)
        if min(self.seq) >= k:
            return
        seq, deadline = self.seq, time.perf_counter() + self.spin_s
        while time.perf_counter() < deadline:
            if min(seq) >= k:
                return
        self._sleep_until(k)

    def _sleep_until(self, k: int) -> None:
        """Sleep in growing steps until every rank has published round k; watch the peers."""
        t0 = time.monotonic()
        next_check, pause = t0 + 1.0, 1e-5
        while min(self.seq) < k:
            time.sleep(pause)
            pause = min(2 * pause, 1e-3)
            if time.monotonic() > next_check:
                next_check += 1.0
                self._check_peers(k, time.monotonic() - t0)

    def _behind(self, k: int) -> list[int]:
        return [r for r in range(self.size) if self.seq[r] < k]

    def _check_peers(self, k: int, waited: float) -> None:
        from torch.distributed import default_pg_timeout

        for r in self._behind(k):
            try:
                os.kill(int(self.pids[r]), 0)
            except ProcessLookupError:
                raise RuntimeError(
                    f"rank {r} (pid {self.pids[r]}) exited while rank {self.rank} waited for "
                    "it in an all-reduce"
                ) from None
            except PermissionError:
                pass  # alive, owned by another user
        if waited > default_pg_timeout.total_seconds():
            raise RuntimeError(
                f"rank {self.rank} waited {waited:.0f} s for ranks {self._behind(k)} in an "
                "all-reduce (timed out)"
            )

    def close(self) -> None:
        # Every view of the segment must be gone before the map can close.
        self.seq.release()
        self._words.release()
        self.seq = self.pids = self.banks = None
        self._rows.clear()
        self._map.close()


_channel: dict = {"group": None, "channel": None}


def _shared_memory_channel() -> _SharedMemoryChannel | None:
    """The channel of the current default group, set up on first use (collectively)."""
    import torch.distributed as dist

    group = dist.group.WORLD
    if _channel["group"] is group:
        return _channel["channel"]
    import platform
    import uuid

    if _channel["channel"] is not None:
        _channel["channel"].close()
    _channel.update(group=group, channel=None)
    rank, size = dist.get_rank(), dist.get_world_size()
    enabled = os.environ.get("MGTOOLKIT_SHARED_MEMORY", "1") != "0"
    if not (enabled and platform.machine().lower() in ("x86_64", "amd64")) or not os.path.isdir(
        "/dev/shm"
    ):
        return None
    # Rank 0 creates the segment in /dev/shm (node-local memory, never a shared file system)
    # and writes a random token into it; a rank that reads the token back shares memory with
    # rank 0 (on another node the path does not exist).
    path = f"/dev/shm/mgtoolkit-{uuid.uuid4().hex}"
    token = int.from_bytes(os.urandom(7), "little")
    proposal = [(path, token)]
    channel = None
    if rank == 0:
        try:
            channel = _SharedMemoryChannel(rank, size, path, create=True)
            channel.pids[0] = token
        except OSError:
            proposal = [(None, 0)]
    dist.broadcast_object_list(proposal, src=0)
    path, token = proposal[0]
    if rank > 0 and path is not None:
        try:
            channel = _SharedMemoryChannel(rank, size, path, create=False)
        except OSError:
            channel = None
    votes = [None] * size
    dist.all_gather_object(votes, channel is not None and int(channel.pids[0]) == token)
    if rank == 0 and channel is not None:
        os.unlink(path)  # every rank has opened (or failed to open) it; memory stays mapped
    if not all(votes):
        if channel is not None:
            channel.close()
        return None
    channel.pids[rank] = os.getpid()  # for telling a dead peer from a slow one
    dist.barrier()
    _channel["channel"] = channel
    return channel


def _sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over all ranks as a new tensor (an active process group is required)."""
    import torch.distributed as dist

    channel = _shared_memory_channel() if t.device.type == "cpu" else None
    if channel is not None:
        return channel.sum(t)
    out = t.detach().clone(memory_format=torch.contiguous_format)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def _reduce(t: torch.Tensor, *, mean: bool) -> torch.Tensor:
    if not _active():
        return t
    import torch.distributed as dist

    out = _sum_over_ranks(t)
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
        flat = _sum_over_ranks(torch.cat([*parts, flags]))
        flat /= size
        # The averaged gradients stay views of the one new buffer (no copy per parameter).
        grads = flat[: -len(group)].split([p.numel() for p in group])
        for p, g, had in zip(group, grads, flat[-len(group) :].tolist(), strict=True):
            if had > 0:
                p.grad = g.view_as(p)


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
            stats = torch.from_numpy(np.stack([mean, var, unbiased])).to(x.device, x.dtype)
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
