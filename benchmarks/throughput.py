"""U-Net training throughput at 3D 64³, batch 4, as a percentage of this machine's fp32 peak.

(``--dim 2 --n 256 --batch 8`` measures the 2D case the same way.)

The peak is measured in the same run: the best of several fp32 matmuls (4096²) with the same
thread count, before and after the variants. A training step is forward + FEM energy +
backward + Adam update on a batch of KL fields; its useful work is counted as 3 × the forward
convolution FLOPs (backward = 2 × forward for convolutions, the usual convention), counted
exactly from the layer shapes. Each variant runs in a fresh process (allocator state and
resident peak are its own); the time is the median of ``--steps`` steps after two warm-up
steps. Variants, side by side:

- ``paper, channels-first``: the paper's block (conv + BN + LeakyReLU once per depth) in the
  former layout (``UNet(channels_last=False)``, activations out of place) — the reference.
- ``paper``: the same network as the trainer runs it by default: channels-last inside,
  in-place activations, inside :func:`mgtoolkit.runtime.heap_reuse` (``TrainConfig.heap_reuse``:
  freed memory stays in the heap, so the large tensors of every step are not faulted in and
  zeroed again by the kernel; higher resident peak).
- ``paper, heap reuse off``: the same with freed memory returned to the OS.
- ``2 conv/block``: the classic U-Net block (the configuration default), with and without
  heap reuse.
- ``paper, bf16 autocast``: convolutions in bfloat16 (float32 head and energy), with its
  deviation from the float32 prediction of the same weights; its GFLOP/s are compared with the
  *fp32* peak, so this row can exceed 100 %.

Run it alone on the machine (it saturates the cores for about two minutes)::

    /tmp/mgt/quiet .venv/bin/python benchmarks/throughput.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

#: label → (convs per block, channels-last, heap reuse, precision)
VARIANTS = {
    "paper, channels-first (former)": (1, False, False, "fp32"),
    "paper": (1, True, True, "fp32"),
    "paper, heap reuse off": (1, True, False, "fp32"),
    "2 conv/block": (2, True, True, "fp32"),
    "2 conv/block, heap reuse off": (2, True, False, "fp32"),
    "paper, bf16 autocast": (1, True, True, "bf16"),
}


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


def step_time(model, nu, steps: int, precision: str) -> float:
    """Median seconds of one training step (after two warm-up steps)."""

    from mgtoolkit.fem import energy
    from mgtoolkit.nn.memory import autocast
    from mgtoolkit.train.optim import adam

    opt = adam(model.parameters(), lr=1e-4)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast(precision, model=model):
            u = model(nu)
        loss = energy(nu, u.float()).mean()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def batch(dim: int, n: int, size: int):
    """``size`` KL fields of n^dim cells (float32 tensor), the same in every process."""
    import numpy as np
    import torch

    from mgtoolkit.fields import KLFamily

    rng = np.random.default_rng(0)
    fam = KLFamily()
    fields = [fam.field(rng.uniform(-3, 3, 4), dim=dim, n=n) for _ in range(size)]
    return torch.tensor(np.stack(fields), dtype=torch.float32)


def child(label: str, args) -> dict:
    """Measure one variant in this process; returns its figures."""
    import contextlib
    import resource

    import torch

    from mgtoolkit.fem import energy
    from mgtoolkit.nn import UNet, UNetConfig
    from mgtoolkit.nn.memory import autocast
    from mgtoolkit.runtime import heap_reuse

    convs, channels_last, heap, precision = VARIANTS[label]
    torch.set_num_threads(args.threads)
    nu = batch(args.dim, args.n, args.batch)
    torch.manual_seed(0)
    model = UNet(UNetConfig(dim=args.dim, convs_per_block=convs), channels_last=channels_last)
    if not channels_last:  # the former code also computed the activations out of place
        for m in model.modules():
            if hasattr(m, "inplace"):
                m.inplace = False
    out = {"work": 3 * forward_flops(model, nu)}
    if precision != "fp32":
        with torch.no_grad():
            ref = model(nu)
            with autocast(precision, model=model):
                u = model(nu)
            j_ref, j = energy(nu, ref), energy(nu, u)
        out["max_abs_du"] = float((u - ref).abs().max())
        out["max_rel_dJ"] = float(((j - j_ref).abs() / j_ref).max())
    with heap_reuse() if heap else contextlib.nullcontext():
        out["seconds"] = step_time(model, nu, args.steps, precision)
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, choices=(2, 3), default=3, help="dimension (3)")
    parser.add_argument("--n", type=int, default=64, help="cells per side (64)")
    parser.add_argument("--batch", type=int, default=4, help="batch size (4)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="V"
    )
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return

    import torch

    peak = matmul_peak(args.threads)
    print(
        f"{args.dim}D {args.n}^{args.dim} batch {args.batch}, {args.threads} threads, "
        f"torch {torch.__version__}; "
        f"fp32 matmul peak {peak:.1f} GFLOP/s; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'variant':<32} {'s/step':>7} {'GFLOP/step':>10} {'GFLOP/s':>8} {'% peak':>7} "
        f"{'vs former':>9} {'peak RSS':>8}"
    )
    common = [
        "--dim",
        str(args.dim),
        "--n",
        str(args.n),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
    ]
    common += ["--threads", str(args.threads)]
    reference = None
    for label in args.variants:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", label, *common],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(proc.stdout.splitlines()[-1])
        t = r["seconds"]
        rate = r["work"] / t / 1e9
        if reference is None:
            reference = t
        line = (
            f"{label:<32} {t:>7.3f} {r['work'] / 1e9:>10.1f} {rate:>8.1f} "
            f"{100 * rate / peak:>6.1f} % {reference / t:>8.2f}× {r['peak_rss_gib']:>6.2f} GiB"
        )
        if "max_abs_du" in r:
            line += (
                f"  (vs fp32, same weights: max |Δu| {r['max_abs_du']:.1e}, "
                f"max |ΔJ|/J {r['max_rel_dJ']:.1e})"
            )
        print(line, flush=True)
    print(f"peak re-measured after the runs: {matmul_peak(args.threads):.1f} GFLOP/s")
    print("target: ≥ 60 % of the fp32 peak (issue 4); 'vs former' = first row's time / this one")


if __name__ == "__main__":
    main()
