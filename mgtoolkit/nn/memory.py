"""Training memory options applied from outside the U-Net: activation checkpointing and bf16.

- :func:`checkpoint_blocks` makes every conv block of a :class:`~mgtoolkit.nn.UNet` (encoder,
  decoder and grown blocks) recompute its activations during backward instead of storing them
  (:func:`torch.utils.checkpoint.checkpoint`, non-reentrant). Only each block's input is kept,
  so a block of ``convs_per_block`` × (conv, norm, activation) stores one tensor instead of
  ``3 × convs_per_block``, at the price of one more forward pass of the blocks. The weights,
  their names in ``state_dict`` and the results are unchanged; batch-norm running statistics
  are updated once per step, as without checkpointing (the recomputation restores them).
- :func:`autocast` runs the network in bfloat16 where torch's autocast lists the op
  (convolutions), keeping float32 weights and batch-norm statistics. Given the model, it keeps
  the cells→nodes head in float32, so u keeps float32 resolution (bf16 would quantize u ∈ [0, 1]
  to steps of ~4e-3). Compute the loss, the FEM energy, in float32 as well: it sums ~10⁸ terms
  whose differences matter, which bf16's 8-bit mantissa cannot carry.

``benchmarks/megavoxel.py`` measures both (memory and time per step) against plain float32.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["PRECISIONS", "CheckpointedSequential", "autocast", "checkpoint_blocks"]

#: Training precisions: float32 everywhere, or bf16 autocast of the network.
PRECISIONS = ("fp32", "bf16")


@contextlib.contextmanager
def _restore_norm_stats(module: nn.Module):
    """Undo the batch-norm running-statistics update of a recomputed forward pass."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        [b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
        for m in norms
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, copies in zip(norms, saved, strict=True):
                live = [
                    b
                    for b in (m.running_mean, m.running_var, m.num_batches_tracked)
                    if b is not None
                ]
                for b, c in zip(live, copies, strict=True):
                    b.copy_(c)


class CheckpointedSequential(nn.Sequential):
    """An ``nn.Sequential`` whose activations are recomputed in backward (same parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())):
            return super().forward(x)
        from torch.utils.checkpoint import checkpoint

        return checkpoint(
            super().forward,
            x,
            use_reentrant=False,
            context_fn=lambda: (contextlib.nullcontext(), _restore_norm_stats(self)),
        )


def _blocks(model: nn.Module) -> list[nn.Sequential]:
    blocks = [*model.encoder, *model.decoder]
    blocks += [g.body for g in (*model.grown_in, *model.grown_out)]
    return blocks


def checkpoint_blocks(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch activation checkpointing of a U-Net's conv blocks on (or off); returns ``model``.

    Blocks added later by :meth:`~mgtoolkit.nn.UNet.grow` are plain: call this again after
    growing. The module's class of each block changes in place (to
    :class:`CheckpointedSequential` and back), so parameters, optimizer state and
    ``state_dict`` keys are untouched.
    """
    if not all(hasattr(model, a) for a in ("encoder", "decoder", "grown_in", "grown_out")):
        raise TypeError(
            f"checkpoint_blocks expects an mgtoolkit.nn.UNet (got {type(model).__name__})"
        )
    for block in _blocks(model):
        block.__class__ = CheckpointedSequential if enabled else nn.Sequential
    return model


class _Float32Conv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.float())


class _Float32Conv3d(nn.Conv3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.float())


@contextlib.contextmanager
def _float32_head(model: nn.Module):
    head = model.head
    plain = type(head)
    head.__class__ = _Float32Conv3d if isinstance(head, nn.Conv3d) else _Float32Conv2d
    try:
        yield
    finally:
        head.__class__ = plain


def autocast(
    precision: str = "fp32", *, device: str | torch.device = "cpu", model: nn.Module | None = None
):
    """Context for the network's forward pass in ``precision`` ("fp32" or "bf16").

    Parameters
    ----------
    precision : {"fp32", "bf16"}
        "fp32" does nothing; "bf16" enters ``torch.autocast(device_type, torch.bfloat16)``.
    device : str or torch.device
        Where the network runs (its type picks the autocast backend).
    model : mgtoolkit.nn.UNet, optional
        If given, its cells→nodes head runs in float32 inside the context, so u is float32.

    The backward pass needs no context (autograd reuses the forward's types).

    Raises
    ------
    ValueError
        Unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if precision == "fp32":
        return contextlib.nullcontext()
    return _bf16(torch.device(device).type, model)


@contextlib.contextmanager
def _bf16(device_type: str, model: nn.Module | None):
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast(device_type=device_type, dtype=torch.bfloat16))
        if model is not None:
            stack.enter_context(_float32_head(model))
        yield
