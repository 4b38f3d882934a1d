"""``mgtoolkit demo``: the main job end to end on the embedded defaults.

One dask LocalCluster and local zarr stores: generate a small 2D and 3D dataset, solve every
level with the FEM reference, and print what was made. Small enough for a laptop (minutes).
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["register", "run_demo"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="generate, FEM-solve (and train on) small datasets on a local dask cluster",
        description="The main job on the embedded defaults: a dask LocalCluster and local zarr "
        "stores. Rerunning resumes: finished samples are not recomputed.",
    )
    parser.add_argument("--out", default="runs/demo", help="output directory (runs/demo)")
    parser.add_argument("--workers", type=int, default=2, help="dask worker processes (2)")
    parser.set_defaults(run=lambda args: run_demo(Path(args.out), workers=args.workers))


def run_demo(out: Path, *, workers: int = 2) -> int:
    """Run the demo into directory ``out``; returns a process exit code."""
    from distributed import Client, LocalCluster

    from mgtoolkit.cli.fem import FemSolveFn
    from mgtoolkit.data import generate, map_samples, store_summary

    out.mkdir(parents=True, exist_ok=True)
    datasets = {
        "data2d.zarr": dict(dim=2, resolution=64, levels=3, samples=32, seed=0),
        "data3d.zarr": dict(dim=3, resolution=16, levels=2, samples=8, seed=0),
    }
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        print(f"dask LocalCluster: {workers} single-threaded workers")
        for name, spec in datasets.items():
            path = out / name
            t0 = time.perf_counter()
            generate(path, client=client, **spec)
            t1 = time.perf_counter()
            for level in range(1, spec["levels"] + 1):
                map_samples(path, FemSolveFn(), level=level, name="u_fem", client=client)
            t2 = time.perf_counter()
            print(f"\n{name}: generated in {t1 - t0:.1f} s, FEM-solved in {t2 - t1:.1f} s")
            print(store_summary(path))
    return 0
