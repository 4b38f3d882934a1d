"""Spatial parallelism: per-rank peak memory and the halo exchange's share of a training step.

One 3D field (default 128³, batch 1) trains the paper's U-Net (depth 3, 16 filters, one conv
per block, batch norm, float32; the energy loss, or ``--loss multigrid``) for ``--steps`` steps
after one warm-up step, on 1 rank (the unsplit network) and split in slabs over p ranks
(``--ranks``, default 2 and 4), each rank a fresh local process with ``--threads`` threads
(:func:`mgtoolkit.launch.spawn`: sums and halos through shared memory). Per
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

``--transports`` instead times the two messages of a spatially parallel step on every transport
of :mod:`mgtoolkit.comm` (``MGTOOLKIT_TRANSPORT`` = gloo, shm, mpi), with p ranks started by
``mpirun`` (``--ranks``): the all-reduce of the U-Net's gradient (the flat buffer that
``comm.average_gradients`` sums) and one halo exchange of a slab of ``--filters`` channels of
``--n``² planes, one plane to and from each neighbour (``spatial.halo``, forward); each the
mean of ``--reps`` calls back to back, the slowest rank's, the fastest of ``--repeat`` runs.

Run it alone on the machine (at 128³ it takes minutes and several GiB)::

    .venv/bin/python benchmarks/spatial.py
    .venv/bin/python benchmarks/spatial.py --transports --train-steps --ranks 2
    .venv/bin/python benchmarks/spatial.py --n 16 --depth 2 --filters 4 --steps 1   # smoke
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time


def _rank_run(
    n: int, depth: int, filters: int, spatial: int, steps: int, loss: str = "energy"
) -> dict:
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
    nu = layout.split(torch.exp(torch.randn(1, n, n, n)), grid="cells", dim=3).clone()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    if spatial == 1:  # what the trainer runs on one rank: the whole network and loss
        from mgtoolkit.train.losses import batch_loss

        def value() -> torch.Tensor:
            return batch_loss(loss, nu, net(nu))

    else:
        slab = to_slabs(net, layout)

        def value() -> torch.Tensor:
            return slab_loss(loss, nu, slab(nu), layout)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        value().backward()
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
        "transport": comm.transport(nu),
    }


def transport_worker(n: int, depth: int, filters: int, reps: int, steps: int) -> None:
    """Under mpirun: mean gradient all-reduce and halo exchange on this run's transport, and
    with ``steps`` > 0 the median of that many training steps of one field split over the
    ranks (as :func:`_rank_run`)."""
    import torch
    import torch.distributed as dist

    from mgtoolkit import comm
    from mgtoolkit.comm.ranks import init_from_environment
    from mgtoolkit.nn import UNet
    from mgtoolkit.spatial import SlabLayout, halo

    torch.set_num_threads(1)
    info = init_from_environment()
    net = UNet(dim=3, depth=depth, base_filters=filters, convs_per_block=1)
    # The buffer average_gradients sums: every parameter's gradient and one flag each.
    params = list(net.parameters())
    gradient = torch.ones(sum(p.numel() for p in params) + len(params))
    layout = SlabLayout.from_world(info.size)
    slab = torch.randn(1, filters, 4, n, n)

    def timed(op) -> float:
        op()  # warm-up: connections, buffers, the shared-memory segment
        dist.barrier()
        # Back to back: a barrier before each call would time the ranks' skew leaving it.
        t0 = time.perf_counter()
        for _ in range(reps):
            op()
        return (time.perf_counter() - t0) / reps

    with torch.no_grad():
        grad_s = timed(lambda: comm.all_reduce_sum(gradient))
        halo_s = timed(lambda: halo(slab, layout, axis=2, lo=1, hi=1, outer="zeros"))
    step_s = _rank_run(n, depth, filters, info.size, steps)["step_s"] if steps else 0.0
    mine = torch.tensor([grad_s, halo_s, step_s], dtype=torch.float64)
    table = torch.zeros(info.size, 3, dtype=torch.float64)
    table[info.rank] = mine
    slowest = comm.all_reduce_sum(table).max(dim=0).values
    if info.rank == 0:
        print(
            f"TRANSPORT {comm.transport(slab)} {gradient.numel()} {slowest[0]:.9f} "
            f"{slowest[1]:.9f} {slowest[2]:.9f}",
            flush=True,
        )


def transports(args) -> None:
    """Each transport, each number of ranks: one mpirun per cell, the slowest rank's means."""
    from _mpirun import TRANSPORTS, run_worker

    rows, steps, elements = {}, {}, 0
    for r, p in itertools.product(range(args.repeat), args.ranks):
        train_steps = args.steps if r == 0 and args.train_steps else 0
        for choice in TRANSPORTS:
            worker = ["--transport-worker", str(args.n), str(args.depth), str(args.filters),
                      str(args.reps), str(train_steps)]  # fmt: skip
            # Unbound, like ranks started by spawn or dask: a bound rank's shared-memory wait
            # sees one core and sleeps instead of polling.
            count, grad_s, halo_s, step_s = run_worker(
                __file__, worker, ranks=p, transport=choice, options=("--bind-to", "none")
            )
            best = rows.get((p, choice), (float("inf"),) * 2)
            rows[p, choice] = (min(best[0], float(grad_s)), min(best[1], float(halo_s)))
            elements = int(count)
            if train_steps:
                steps[p, choice] = float(step_s)
    cores = os.cpu_count() or 1
    plane = args.filters * args.n**2 * 4 / 2**20
    print(
        f"messages of a spatially parallel step under mpirun, {cores} cores, 1 thread per rank, "
        f"mean of {args.reps} calls back to back, slowest rank, fastest of {args.repeat} runs "
        "(ms):\n"
        f"gradient all-reduce: {elements:,} float32 (U-Net depth {args.depth}, "
        f"{args.filters} filters); halo exchange: one {args.filters} × {args.n}² plane "
        f"({plane:.2f} MiB) to and from each neighbour"
    )
    print("| ranks | message | gloo | shared memory | MPI | gloo / MPI |")
    print("| --- | --- | --- | --- | --- | --- |")
    for p in args.ranks:
        for i, what in enumerate(("gradient all-reduce", "halo exchange")):
            g, s, m = (rows[p, c][i] * 1e3 for c in TRANSPORTS)
            note = f" ({p} ranks on {cores} cores)" if p > cores else ""
            print(f"| {p}{note} | {what} | {g:.3f} | {s:.3f} | {m:.3f} | {g / m:.1f}× |")
    if steps:
        print(
            f"\ntraining step of one {args.n}³ field split over the ranks (median of {args.steps} "
            "steps, slowest rank, one run, s)"
        )
        print("| ranks | gloo | shared memory | MPI | gloo / MPI |")
        print("| --- | --- | --- | --- | --- |")
        for p in args.ranks:
            g, s, m = (steps[p, c] for c in TRANSPORTS)
            print(f"| {p} | {g:.3f} | {s:.3f} | {m:.3f} | {g / m:.2f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=128, help="cells per side (default 128)")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--steps", type=int, default=2, help="timed steps (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per rank (default 1)")
    parser.add_argument(
        "--loss",
        choices=["energy", "multigrid"],
        default="energy",
        help="the loss of each step (multigrid: its V-cycle runs on the slabs too)",
    )
    parser.add_argument(
        "--transports",
        action="store_true",
        help="time the gradient all-reduce and one halo exchange on gloo, shm and MPI instead",
    )
    parser.add_argument("--reps", type=int, default=50, help="calls per --transports cell")
    parser.add_argument("--repeat", type=int, default=3, help="--transports runs, fastest kept")
    parser.add_argument(
        "--train-steps",
        action="store_true",
        help="--transports also times --steps training steps of one field per transport",
    )
    parser.add_argument("--transport-worker", nargs=5, type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-single",
        dest="single",
        action="store_false",
        help="skip the one-rank run (at 256³ it needs ~13 GiB and most of the time): no ratios",
    )
    args = parser.parse_args()
    if args.transport_worker:
        transport_worker(*args.transport_worker)
        return
    if args.transports:
        transports(args)
        return

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
            args.loss,
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
        f"{args.loss} loss, "
        f"{args.threads} thread(s) per rank, {cores} cores, sums and halos over "
        f"{rows[-1][1][0]['transport']}"
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
