"""The optimizer and its learning rates: Adam's fused kernel, the per-step rate schedules and
the warm-up that starts each later step of a cycle gently."""

from __future__ import annotations

import math

import torch

from mgtoolkit.train.config import OptimConfig

__all__ = ["adam", "epoch_lr", "warmup_factor"]


def adam(params, *, lr: float) -> torch.optim.Adam:
    """The trainer's Adam: torch's fused kernel, one pass over every parameter per step.

    On CPU torch otherwise loops over the parameter tensors with several small operations
    each, a cost every rank repeats every step. ``params``: tensors or parameter groups, as
    for ``torch.optim.Adam``. The update is the same formula; only its rounding differs from
    the loop's.
    """
    return torch.optim.Adam(params, lr=lr, fused=True)


def epoch_lr(
    optim: OptimConfig, losses, *, min_rel_improvement: float, max_epochs: int = 1
) -> float:
    """The learning rate for the next epoch of a step whose epoch losses are ``losses``.

    Parameters
    ----------
    optim : OptimConfig
        The schedule's settings (``lr_schedule``, ``lr``, ``lr_factor``, ``min_lr``, ...).
    losses : sequence of float
        Mean losses of the step's finished epochs, oldest first.
    min_rel_improvement : float
        A loss counts as an improvement when it is below the best so far by more than this
        fraction of the best (the step's early-stopping threshold).
    max_epochs : int
        The step's epoch cap: the length of the cosine schedule.
    """
    lr = optim.lr
    if optim.lr_schedule == "constant":
        return lr
    if optim.lr_schedule == "cosine":
        # Epoch e of E runs at the rate of the middle of its interval, so that the last
        # epoch still trains (at about min_lr) instead of at exactly min_lr.
        t = min((len(losses) + 0.5) / max(max_epochs, 1), 1.0)
        return optim.min_lr + (lr - optim.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
    best, bad = math.inf, 0
    for loss in losses:
        if best == math.inf or best - loss > min_rel_improvement * abs(best):
            best, bad = loss, 0
        else:
            bad += 1
            if bad >= optim.lr_patience:
                lr, bad = max(lr * optim.lr_factor, optim.min_lr), 0
    return lr


def warmup_factor(
    optim: OptimConfig, step: int, batches_done: float, batches_per_epoch: int
) -> float:
    """Factor (0, 1] on the rate of a step's next batch, after ``batches_done`` batches."""
    if step == 0 or optim.warmup_epochs == 0:
        return 1.0
    return min(1.0, (batches_done + 1) / (optim.warmup_epochs * batches_per_epoch))
