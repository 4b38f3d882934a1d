"""U-Net training throughput at 3D 64³, batch 4, as a percentage of this machine's fp32 peak.

The peak is measured in the same run: the best of several fp32 matmuls (4096²) with the same
thread count. A training step is forward + FEM energy + backward + Adam update on a batch of
KL fields; its useful work is counted as 3 × the forward convolution FLOPs (backward = 2 ×
forward for convolutions, the usual convention), counted exactly from the layer shapes.
Variants, side by side:

- ``1 conv/block``: the paper's block (conv + BN + LeakyReLU once per depth), NCDHW.
- ``2 conv/block``: the classic U-Net block (two convs), NCDHW — more work per memory pass.
- ``2 conv/block, channels-last``: the same in torch.channels_last_3d (oneDNN's native layout).

Run under the shared lock (it saturates the cores for about a minute)::

    flock /tmp/mgtoolkit-heavy.lock .venv/bin/python benchmarks/throughput.py
"""

from __future__ import annotations

import argparse
import os
import time


def matmul_peak(threads: int, size: int = 4096, repeats: int = 5) -> float:
    """Best fp32 matmul rate in GFLOP/s."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    a @ b  # warm-up
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - t0) / 1e9)
    return best


def forward_flops(model, nu) -> float:
    """FLOPs (2 × multiply-adds) of every convolution in one forward pass of ``nu``."""
    import torch

    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.modules.conv._ConvNd):
            k = 1
            for s in module.kernel_size:
                k *= s
            cin = module.in_channels // module.groups
            if isinstance(module, torch.nn.modules.conv._ConvTransposeNd):
                total += 2.0 * inputs[0].numel() * module.out_channels * k
            else:
                total += 2.0 * output.numel() * cin * k

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(nu)
    for h in handles:
        h.remove()
    return total


def step_time(model, nu, steps: int) -> float:
    """Median seconds of one training step (after two warm-up steps)."""
    import torch

    from mgtoolkit.fem import energy

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = energy(nu, model(nu)).mean()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="cells per side (64)")
    parser.add_argument("--batch", type=int, default=4, help="batch size (4)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    args = parser.parse_args()

    import numpy as np
    import torch

    from mgtoolkit.fields import KLFamily
    from mgtoolkit.nn import UNet, UNetConfig

    peak = matmul_peak(args.threads)
    rng = np.random.default_rng(0)
    fam = KLFamily()
    nu = torch.tensor(
        np.stack([fam.field(rng.uniform(-3, 3, 4), dim=3, n=args.n) for _ in range(args.batch)]),
        dtype=torch.float32,
    )
    print(
        f"3D {args.n}³ batch {args.batch}, {args.threads} threads, torch {torch.__version__}; "
        f"fp32 matmul peak {peak:.1f} GFLOP/s; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'variant':<34} {'s/step':>7} {'GFLOP/step':>10} {'GFLOP/s':>8} {'% peak':>7}")
    variants = [
        ("1 conv/block (paper), NCDHW", 1, False),
        ("2 conv/block, NCDHW", 2, False),
        ("2 conv/block, channels-last", 2, True),
    ]
    for label, convs, cl in variants:
        torch.manual_seed(0)
        model = UNet(UNetConfig(dim=3, convs_per_block=convs))
        x = nu
        if cl:
            model = model.to(memory_format=torch.channels_last_3d)
        work = 3 * forward_flops(model, x)
        t = step_time(model, x, args.steps)
        rate = work / t / 1e9
        print(f"{label:<34} {t:>7.3f} {work / 1e9:>10.1f} {rate:>8.1f} {100 * rate / peak:>6.1f} %")
    print(f"peak re-measured after the runs: {matmul_peak(args.threads):.1f} GFLOP/s")
    print("target: ≥ 60 % of peak (a plain one-conv torch U-Net reaches ≈ 44 % here)")


if __name__ == "__main__":
    main()
