"""Spatial parallelism: per-rank peak memory and the halo exchange's share of a training step.

One 3D field (default 128³, batch 1) trains the paper's U-Net (depth 3, 16 filters, one conv
per block, batch norm, float32) for ``--steps`` steps after one warm-up step, on 1 rank (the
unsplit network) and split in slabs over p ranks (``--ranks``, default 2 and 4), each rank a
fresh local process with ``--threads`` threads (:func:`mgtoolkit.launch.spawn`, gloo). Per
run it prints:

- the largest peak resident memory of any rank (``ru_maxrss``: what the process ever held,
  interpreter and torch included) and its ratio to one rank;
- the median step time (forward, energy, backward, gradient all-reduce, Adam);
- the strong-scaling efficiency E = t₁ / (p · t_p) against one rank with as many threads per rank
  (only where the ranks have a core each);
- the halo exchange's share of a step: the time inside the exchanges (the profiler range
  :data:`mgtoolkit.spatial.halo.EXCHANGE_RANGE`, forward and backward, waiting included) over
  the step's, in one profiled step, the largest over the ranks.

Targets (issue 18): peak ≤ 0.6× / ≤ 0.35× of one rank at p = 2 / 4; halo share ≤ 10 % at p = 2;
at 256³, p = 4, each rank ≤ 4.5 GiB (``--n 256 --ranks 4 --steps 1 --no-single``).
Run it alone on the machine (at 128³ it takes minutes and several GiB)::

    .venv/bin/python benchmarks/spatial.py
    .venv/bin/python benchmarks/spatial.py --n 16 --depth 2 --filters 4 --steps 1   # smoke
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def _rank_run(n: int, depth: int, filters: int, spatial: int, steps: int) -> dict:
    """Train ``steps`` steps on this rank's slab; peak memory, step times, halo share."""
    import resource

    import torch

    from mgtoolkit import comm
    from mgtoolkit.nn import UNet
    from mgtoolkit.spatial import SlabLayout, slab_loss, to_slabs
    from mgtoolkit.spatial.halo import EXCHANGE_RANGE

    torch.manual_seed(0)
    net = comm.convert_sync_batchnorm(
        UNet(dim=3, depth=depth, base_filters=filters, convs_per_block=1)
    )
    layout = SlabLayout.from_world(spatial)
    slab = to_slabs(net, layout)
    nu = layout.split(torch.exp(torch.randn(1, n, n, n)), grid="cells", dim=3).clone()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        slab_loss("energy", nu, slab(nu), layout).backward()
        comm.average_gradients(net.parameters())
        opt.step()

    step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        step()
        profiled = time.perf_counter() - t0
    halo_us = sum(e.cpu_time_total for e in prof.key_averages() if e.key == EXCHANGE_RANGE)
    return {
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "step_s": statistics.median(times),
        "halo_share": halo_us * 1e-6 / profiled,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=128, help="cells per side (default 128)")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--steps", type=int, default=2, help="timed steps (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per rank (default 1)")
    parser.add_argument(
        "--no-single",
        dest="single",
        action="store_false",
        help="skip the one-rank run (at 256³ it needs ~13 GiB and most of the time): no ratios",
    )
    args = parser.parse_args()

    from mgtoolkit.launch import spawn

    rows = []
    for p in [1, *args.ranks] if args.single else args.ranks:
        ranks = spawn(
            _rank_run,
            p,
            args.n,
            args.depth,
            args.filters,
            p,
            args.steps,
            threads_per_rank=args.threads,
            timeout_s=3600,
        )
        rows.append((p, ranks))
    single = dict(rows).get(1)
    base = max(r["peak_gib"] for r in single) if single else None
    base_step = max(r["step_s"] for r in single) if single else None
    cores = os.cpu_count() or 1
    print(
        f"3D {args.n}³, batch 1, U-Net depth {args.depth}, {args.filters} filters, float32, "
        f"{args.threads} thread(s) per rank, gloo, {cores} cores"
    )
    print(
        "| ranks per field | peak per rank (GiB) | vs 1 rank (target) | step (s) "
        "| strong-scaling E (target) | halo share (target) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for p, ranks in rows:
        peak = max(r["peak_gib"] for r in ranks)
        step = max(r["step_s"] for r in ranks)
        share = max(r["halo_share"] for r in ranks)
        target = {2: " (≤ 0.6×)", 4: " (≤ 0.35×)"}.get(p, "")
        ratio = f"{peak / base:.2f}×{target}" if base else f"n/a (no one-rank run){target}"
        if p == 1:
            e = "1"
        elif base_step is None:
            e = "n/a (no one-rank run)"
        elif p * args.threads > cores:  # ranks share cores: time says nothing of scaling
            e = f"n/a ({p} × {args.threads} threads on {cores} cores)"
        else:
            e = f"{base_step / (p * step):.2f}" + (" (≥ 0.8)" if p == 2 else "")
        halo = f"{100 * share:.1f} %" + (" (≤ 10 %)" if p == 2 else "")
        limit = " (≤ 4.5)" if (args.n, p) == (256, 4) else ""
        print(f"| {p} | {peak:.2f}{limit} | {ratio} | {step:.3f} | {e} | {halo} |")


if __name__ == "__main__":
    main()
