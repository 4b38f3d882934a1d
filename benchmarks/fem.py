"""FEM reference solver vs pyamg smoothed-aggregation PCG, side by side, same rtol.

Every case runs in its own subprocess, so its peak resident memory (ru_maxrss) is its own.
Run heavy sizes under the shared lock, e.g.::

    flock /tmp/mgtoolkit-heavy.lock .venv/bin/python benchmarks/fem.py \\
        --sizes 128 256 512 --pyamg-sizes 128 256 --corners 32 64 128

Columns: n = cells per side (the grid has (n+1)³ nodes); setup/solve/total in seconds of
wall time, cpu = CPU seconds (all threads) of setup + solve;
its = PCG iterations to ‖r‖ ≤ rtol ‖b‖; peak = peak RSS of the case's process in GiB.
pyamg's matrix assembly (scipy, our :func:`mgtoolkit.fem.assemble`) is reported apart and not
counted in its total. The 1-minute load average after each row tells whether other work
shared the cores. ν is the KL field at the ω-box corner ω = (3, 3, -3, 3).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

OMEGA = (3.0, 3.0, -3.0, 3.0)


def _field(dim: int, n: int, omega) -> np.ndarray:
    from mgtoolkit.fields import KLFamily

    return KLFamily().field(np.asarray(omega, dtype=float), dim=dim, n=n)


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def case_ours(dim: int, n: int, threads: int, device: str, omega=OMEGA) -> dict:
    import torch

    from mgtoolkit.fem import solve

    torch.set_num_threads(threads)
    nu = torch.tensor(_field(dim, n, omega), dtype=torch.float32, device=device)
    solve(nu[(slice(0, 16),) * dim].contiguous())  # warm-up (two levels): library init
    t0, c0 = time.perf_counter(), time.process_time()
    _, info = solve(nu, rtol=1e-8, return_info=True)
    total = time.perf_counter() - t0
    return {
        "cpu": time.process_time() - c0,
        "setup": info.setup_seconds,
        "solve": info.solve_seconds,
        "total": total,
        "its": info.iterations,
        "levels": info.levels,
        "final_rel_residual": float(info.residuals[-1]),
        "peak_gib": _peak_gib(),
    }


def case_pyamg(dim: int, n: int, omega=OMEGA) -> dict:
    import pyamg

    from mgtoolkit.fem import assemble, impose_dirichlet

    nu = _field(dim, n, omega)
    t0 = time.perf_counter()
    k = assemble(nu)
    shape = (n + 1,) * dim
    free = np.ones(shape, dtype=bool)
    free[..., 0] = free[..., -1] = False
    f = free.ravel()
    u_d = impose_dirichlet(np.zeros(shape)).ravel()
    # One copy of the matrix at a time (257³ nodes: ~4.3 GiB each) so that pyamg gets the memory.
    k = k[f]
    b = -(k @ u_d)
    a = k[:, f].tocsr()
    del k
    t1, c1 = time.perf_counter(), time.process_time()
    ml = pyamg.smoothed_aggregation_solver(a)
    t2 = time.perf_counter()
    res: list[float] = []
    ml.solve(b, tol=1e-8, accel="cg", maxiter=500, residuals=res)
    t3 = time.perf_counter()
    return {
        "cpu": time.process_time() - c1,
        "assemble": t1 - t0,
        "setup": t2 - t1,
        "solve": t3 - t2,
        "total": t3 - t1,
        "its": len(res) - 1,
        "final_rel_residual": res[-1] / np.linalg.norm(b),
        "peak_gib": _peak_gib(),
    }


def _run_child(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="*", default=[128, 256], help="cells per side")
    p.add_argument("--pyamg-sizes", type=int, nargs="*", default=[128])
    p.add_argument("--corners", type=int, nargs="*", default=[32, 64], help="n for the ω sweep")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        kind, dim, n = args.child[0], int(args.child[1]), int(args.child[2])
        if kind == "ours":
            print(json.dumps(case_ours(dim, n, args.threads, args.device)))
        else:
            print(json.dumps(case_pyamg(dim, n)))
        return

    import torch

    print(
        f"# mgtoolkit FEM benchmark: dim {args.dim}, rtol 1e-8, device {args.device}, "
        f"torch threads {args.threads}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    )
    print(
        f"{'n':>5} {'nodes':>11} | {'ours setup':>10} {'solve':>7} {'total':>7} {'cpu':>7} "
        f"{'its':>3} {'peak GiB':>8} | {'pyamg asm':>9} {'setup':>7} {'solve':>7} {'total':>7} "
        f"{'cpu':>7} {'its':>3} {'peak GiB':>8} | {'speed-up':>8}"
    )
    for n in args.sizes:
        ours = _run_child(["ours", str(args.dim), str(n)])
        amg = (
            _run_child(["pyamg", str(args.dim), str(n)])
            if n in args.pyamg_sizes
            else {"error": "not run"}
        )
        load = os.getloadavg()[0]
        row = f"{n:>5} {(n + 1) ** args.dim:>11,} | "
        if "error" in ours:
            row += f"{'failed: ' + ours['error'][:40]:>40} | "
        else:
            row += (
                f"{ours['setup']:>10.2f} {ours['solve']:>7.2f} {ours['total']:>7.2f} "
                f"{ours['cpu']:>7.2f} {ours['its']:>3d} {ours['peak_gib']:>8.2f} | "
            )
        if "error" in amg:
            row += f"{amg['error'][:52]:>52} | {'-':>8}"
        else:
            speed = amg["total"] / ours["total"] if "error" not in ours else float("nan")
            row += (
                f"{amg['assemble']:>9.2f} {amg['setup']:>7.2f} {amg['solve']:>7.2f} "
                f"{amg['total']:>7.2f} {amg['cpu']:>7.2f} {amg['its']:>3d} "
                f"{amg['peak_gib']:>8.2f} | {speed:>7.1f}x"
            )
        print(f"{row}   (load avg {load:.1f})", flush=True)

    corners = list(itertools.product((-3.0, 3.0), repeat=4))
    for n in args.corners:
        runs = [case_ours(args.dim, n, args.threads, args.device, omega) for omega in corners]
        its = [r["its"] for r in runs]
        mean_s = sum(r["total"] for r in runs) / len(runs)
        print(
            f"omega-box corners, n = {n}: PCG iterations {its} (max {max(its)}), "
            f"{mean_s:.2f} s per solve",
            flush=True,
        )


if __name__ == "__main__":
    main()
