"""Data-parallel scaling on this machine: efficiency at p = 2 with single-threaded ranks.

Prints (1) strong and weak scaling of a full training step (paper U-Net, FEM energy loss,
synchronized batch norm, gradient all-reduce, Adam) with the time split into compute and
gradient all-reduce, against the target E ≥ 0.9 at p = 2. T1 is one process without a process
group (the serial trainer); "E bound" is the efficiency of p independent copies of that serial
step started together (no communication at all): what the machine's cores allow.
(2) The all-reduce transports on the same float32 buffers under ``mpirun -n 2``: gloo
(torch.distributed), mpi4py's Allreduce, and our shared-memory path
(``mgtoolkit.comm``, used between ranks of one machine). (3) A whole 2-rank training step
under ``mpirun -n 2`` with each transport of ``mgtoolkit.comm`` (``MGTOOLKIT_TRANSPORT``:
mpi, shm, gloo), and the ratio gloo / mpi.

Run on a quiet machine (it saturates the cores):

    .venv/bin/python benchmarks/scaling.py          # 2D 64², global batch 64 (the paper's)
    .venv/bin/python benchmarks/scaling.py --batch 8 --no-mpi
    .venv/bin/python benchmarks/scaling.py --n 128 --batch 16 --no-mpi
    .venv/bin/python benchmarks/scaling.py --dim 3 --n 32 --batch 8 --steps 6 --no-mpi
    .venv/bin/python benchmarks/scaling.py --norm none --batch 8 --no-mpi

The load average is printed before and after: figures are only meaningful when both are low.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

TARGET = 0.9


def allreduce_worker(sizes: list[int], repeats: int) -> None:
    """Under mpirun: time gloo, mpi4py and our shared-memory all-reduce on the same buffers."""
    import numpy as np
    import torch
    import torch.distributed as dist
    from mpi4py import MPI

    from mgtoolkit import comm
    from mgtoolkit.comm.ranks import init_from_environment

    torch.set_num_threads(1)
    info = init_from_environment()
    mpi = MPI.COMM_WORLD
    rows = []
    for numel in sizes:
        t = torch.ones(numel)
        a = np.ones(numel, dtype=np.float32)
        for name, op in (
            ("gloo", lambda t=t: dist.all_reduce(t)),
            ("mpi4py", lambda a=a: mpi.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)),
            ("shm", lambda t=t: comm.all_reduce_sum(t)),
        ):
            op()  # warm-up (connections, buffers)
            mpi.Barrier()
            t0 = time.perf_counter()
            for _ in range(repeats):
                op()
            rows.append((numel, name, (time.perf_counter() - t0) / repeats))
    if info.rank == 0:
        print(f"\nall-reduce of float32 buffers, {info.size} ranks (mpirun, Open MPI wheel)")
        print("| elements | MiB | gloo ms | mpi4py ms | ours (shared memory) ms |")
        print("|---|---|---|---|---|")
        for numel in sizes:
            g, m, o = (
                next(s for n, k, s in rows if n == numel and k == name)
                for name in ("gloo", "mpi4py", "shm")
            )
            print(
                f"| {numel} | {numel * 4 / 2**20:.2f} | {g * 1e3:.3f} | {m * 1e3:.3f} "
                f"| {o * 1e3:.3f} |"
            )


def step_worker(model: dict, n: int, batch: int, steps: int) -> None:
    """Under mpirun: median training step with the transport MGTOOLKIT_TRANSPORT selects."""
    import torch

    from mgtoolkit import comm
    from mgtoolkit.comm.ranks import init_from_environment
    from mgtoolkit.launch.scaling import _steps

    torch.set_num_threads(1)
    info = init_from_environment()
    times = _steps(model, n, batch // info.size, steps, warmup=2)
    if info.rank == 0:
        how = comm.transport(torch.zeros(1))
        print(f"TRANSPORT {how} {times['step']:.6f} {times['allreduce']:.6f}", flush=True)


def transport_steps(args, model: dict) -> None:
    """Time the same 2-rank training step under mpirun with each transport."""
    from _mpirun import run_worker

    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeat):
        for choice in ("mpi", "shm", "gloo"):
            worker = ["--step-worker", str(args.dim), str(args.n), str(args.batch), args.norm,
                      str(args.steps)]  # fmt: skip
            step, allreduce = map(float, run_worker(__file__, worker, ranks=2, transport=choice))
            if choice not in best or step < best[choice][0]:
                best[choice] = (step, allreduce)
    print(
        f"\n2-rank training step under mpirun ({args.dim}D n = {args.n}, global batch "
        f"{args.batch}, norm {args.norm}), fastest of {args.repeat} runs, median of "
        f"{args.steps} steps"
    )
    print("| transport | step ms | gradient all-reduce ms |")
    print("|---|---|---|")
    for choice, (step, allreduce) in best.items():
        print(f"| {choice} | {step * 1e3:.1f} | {allreduce * 1e3:.2f} |")
    ratio = best["gloo"][0] / best["mpi"][0]
    print(f"gloo / mpi step time: {ratio:.2f}× ({'MPI faster' if ratio > 1 else 'MPI not faster'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--n", type=int, default=64, help="cells per side (64)")
    parser.add_argument(
        "--batch", type=int, default=64, help="strong: global batch (64, the paper's and trainer's)"
    )
    parser.add_argument(
        "--norm", default="batch", help="U-Net normalization (batch: synchronized over ranks)"
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="runs per point, fastest kept")
    parser.add_argument("--no-mpi", action="store_true", help="skip the gloo/mpi4py comparison")
    parser.add_argument(
        "--transports-only", action="store_true", help="only (3): the transports under mpirun"
    )
    parser.add_argument("--allreduce-worker", type=int, nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--step-worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allreduce_worker is not None:
        allreduce_worker(args.allreduce_worker, repeats=20)
        return
    if args.step_worker is not None:
        dim, n, batch, norm, steps = args.step_worker
        step_worker({"dim": int(dim), "norm": norm}, int(n), int(batch), int(steps))
        return
    if args.transports_only:
        transport_steps(args, {"dim": args.dim, "norm": args.norm})
        return

    from mgtoolkit.launch.scaling import format_table, measure
    from mgtoolkit.nn import UNet, UNetConfig

    model = {"dim": args.dim, "norm": args.norm}
    numel = sum(p.numel() for p in UNet(UNetConfig(**model)).parameters())
    print(
        f"U-Net (paper defaults, {args.dim}D, norm {args.norm}, {numel} parameters), "
        f"n = {args.n}, "
        f"global batch {args.batch} (strong) / local batch {args.batch} (weak), "
        f"{args.steps} timed steps (median), best of {args.repeat} runs, 1 torch thread per rank, "
        f"{os.cpu_count()} cores, load average before: {os.getloadavg()[0]:.1f}"
    )
    rows = measure(
        model=model,
        n=args.n,
        ranks=(1, 2),
        batch=args.batch,
        steps=args.steps,
        repeat=args.repeat,
        bound=True,
    )
    print(format_table(rows))
    for r in rows:
        if r.ranks == 2:
            verdict = "meets" if r.efficiency >= TARGET else "misses"
            print(
                f"{r.mode} scaling at p = 2: E = {r.efficiency:.2f} ({verdict} the target "
                f"E ≥ {TARGET}; independent serial copies reach {r.efficiency_bound:.2f}); "
                f"gradient all-reduce {r.allreduce_s * 1e3:.1f} ms vs compute "
                f"{r.compute_s * 1e3:.1f} ms per step"
            )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if not args.no_mpi:
        env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
        mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
        sizes = [1_000, 100_000, numel, 4_000_000]
        cmd = [mpirun, "-n", "2", "--oversubscribe", sys.executable, __file__,
               "--allreduce-worker", *map(str, sizes)]  # fmt: skip
        subprocess.run(cmd, env=env, check=True, timeout=600)
        transport_steps(args, model)


if __name__ == "__main__":
    main()
