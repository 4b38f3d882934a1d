"""A small self-contained data-parallel training used by the distributed tests.

It follows the recipe of ``mgtoolkit.comm`` with a conv + batch-norm network, Adam
or L-BFGS, checkpoints and events, so launchers can be tested with real processes and
compared across world sizes. Run as a script under mpirun/srun/torchrun:
``python tests/launch/toy.py OUT.pt [--optimizer lbfgs] [--launcher auto]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from torch import nn

from mgtoolkit import comm as par

POOL = 14  # not a multiple of 4 or of the global batch: exercises the padding


def make_model(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),  # BN cancels a bias: its gradient is noise
        nn.BatchNorm2d(4),
        nn.LeakyReLU(0.1),
        nn.Conv2d(4, 1, 3, padding=1),
    ).to(dtype)


def make_data(dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(POOL, 1, 8, 8, generator=g, dtype=dtype)
    y = torch.cumsum(x, dim=-1) / 8  # a smooth, learnable target
    return x, y


def train(
    *,
    steps: int = 20,
    global_batch: int = 8,
    optimizer: str = "adam",
    dtype: torch.dtype = torch.float64,
    run_dir: str | None = None,
    checkpoint_every: int = 0,
    emit=None,
    step_sleep: float = 0.0,
    buffers: bool = False,
) -> list[torch.Tensor]:
    """Train for ``steps`` optimizer steps; return the final parameters (on every rank).

    With ``run_dir`` and ``checkpoint_every``, rank 0 writes ``checkpoints/step-K.pt`` and a
    later call resumes from the newest one. ``buffers=True`` appends the batch-norm running
    mean and variance.
    """
    rank, _ = par.world()
    model = par.convert_sync_batchnorm(make_model(dtype))
    par.broadcast_module(model)
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    else:
        opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=1, history_size=5)
    x, y = make_data(dtype)
    start = 0
    ckpt_dir = os.path.join(run_dir, "checkpoints") if run_dir else None
    if ckpt_dir and os.path.isdir(ckpt_dir):
        done = sorted(int(f[5:-3]) for f in os.listdir(ckpt_dir) if f.startswith("step-"))
        if done:
            state = torch.load(os.path.join(ckpt_dir, f"step-{done[-1]}.pt"))
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start = state["step"]
    per_epoch = -(-POOL // global_batch)
    for step in range(start, steps):
        epoch, b = divmod(step, per_epoch)
        order = np.random.default_rng(epoch).permutation(POOL)
        batch = par.padded_order(order, global_batch)[b * global_batch : (b + 1) * global_batch]
        mine = batch[par.local_slice(global_batch)]
        xb, yb = x[mine], y[mine]

        def closure(xb=xb, yb=yb):
            opt.zero_grad()
            loss = (model(xb) - yb).square().mean()
            loss.backward()
            par.average_gradients(model.parameters())
            return par.all_reduce_mean(loss.detach())

        loss = opt.step(closure)
        if emit is not None:
            emit(
                {
                    "type": "batch_end",
                    "time": time.time(),
                    "run": "toy",
                    "step": step + 1,
                    "loss": float(loss),
                }
            )
        if ckpt_dir and checkpoint_every and (step + 1) % checkpoint_every == 0 and rank == 0:
            os.makedirs(ckpt_dir, exist_ok=True)
            path = os.path.join(ckpt_dir, f"step-{step + 1}.pt")
            torch.save(
                {"step": step + 1, "model": model.state_dict(), "optimizer": opt.state_dict()},
                path + ".tmp",
            )
            os.replace(path + ".tmp", path)  # a checkpoint is complete or absent
            if emit is not None:
                emit(
                    {
                        "type": "checkpoint",
                        "time": time.time(),
                        "run": "toy",
                        "step": step + 1,
                        "path": path,
                    }
                )
        time.sleep(step_sleep)
    return snapshot(model, buffers=buffers)


def snapshot(model: nn.Module, *, buffers: bool = False) -> list[torch.Tensor]:
    """Copies of the parameters, then (``buffers``) the floating-point buffers."""
    extra = [b for b in model.buffers() if b.is_floating_point()] if buffers else []
    return [t.detach().clone() for t in (*model.parameters(), *extra)]


def store_addresses() -> list[str]:
    """The IP addresses this process's rendezvous store listens on (none: not its host)."""
    import psutil
    import torch.distributed as dist

    if not dist.is_initialized():
        return []
    store = dist.distributed_c10d._get_default_store()
    while hasattr(store, "underlying_store"):  # PrefixStore around the TCPStore
        store = store.underlying_store
    port = getattr(store, "port", None)
    return sorted(
        {
            c.laddr.ip
            for c in psutil.Process().net_connections("inet")
            if c.status == "LISTEN" and c.laddr.port == port
        }
    )


def main() -> None:
    from mgtoolkit.comm.ranks import init_from_environment

    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--launcher", default="auto")
    args = parser.parse_args()
    info = init_from_environment(launcher=args.launcher)
    listening = store_addresses()  # rank 0 hosts the store (except under torchrun)
    params = train(optimizer=args.optimizer)
    if info.rank == 0:
        torch.save({"params": params, "world": info, "listening": listening}, args.out)


if __name__ == "__main__":
    main()
