"""``mgtoolkit demo``: the main job end to end on the embedded defaults.

One dask LocalCluster and local zarr stores: 3D fields at 64³ and 128³ predicted by the
packaged 3D network (``kl3d-64``) and compared with the FEM reference — the 128³ fields both by
the network at 128³ and at 64³ with u interpolated (``predict_at``); then a small 2D dataset,
FEM-solved at every level, on which a U-Net trains with a Half-V cycle data-parallel on the
cluster's workers (one rank per worker, events streamed to this process), its held-out samples
compared with FEM. Small enough for a laptop (minutes); ``--small`` is the CI-sized version.
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
    parser.add_argument(
        "--small", action="store_true", help="smaller fields and dataset (for a quick check)"
    )
    parser.set_defaults(
        run=lambda args: run_demo(Path(args.out), workers=args.workers, small=args.small)
    )


#: The packaged network the demo predicts 3D fields with (`mgtoolkit models`).
DEMO_MODEL = "kl3d-64"


def run_demo(out: Path, *, workers: int = 2, small: bool = False) -> int:
    """Run the demo into directory ``out``; returns a process exit code.

    ``small`` shrinks every field and dataset (3D at 32³ and 64³, 2D at 32²) for a quick check.
    """
    from mgtoolkit.cluster import client_context
    from mgtoolkit.data import generate, solve_store, store_summary
    from mgtoolkit.infer import predict
    from mgtoolkit.launch.run import train_on_cluster

    out.mkdir(parents=True, exist_ok=True)
    sides3d = (32, 64) if small else (64, 128)
    n2d = 32 if small else 64
    with client_context(workers=workers) as client:
        print(f"dask LocalCluster: {workers} single-threaded workers")
        print(f"\n1. the packaged 3D network {DEMO_MODEL!r} on fresh 3D fields, against FEM")
        rows3d = []
        for n in sides3d:
            path = out / f"data3d-{n}.zarr"
            t0 = time.perf_counter()
            generate(path, dim=3, resolution=n, levels=1, samples=2, seed=1, client=client)
            solve_store(path, client=client)
            t1 = time.perf_counter()
            rows = predict(path, DEMO_MODEL, level=1, client=client)
            t2 = time.perf_counter()
            print(f"{path.name}: 2 fields generated and FEM-solved in {t1 - t0:.1f} s, "
                  f"predicted in {t2 - t1:.1f} s")  # fmt: skip
            rows3d += [(f"{n}³", r) for r in rows]
        # the finer fields again, with the network run at the coarser size and u interpolated
        at, n = sides3d
        path = out / f"data3d-{n}.zarr"
        rows = predict(
            path, DEMO_MODEL, level=1, name=f"u_pred_at{at}", predict_at=at, client=client
        )
        rows3d += [(f"{n}³ at {at}³", r) for r in rows]
        print(f"\n{'field':>12} {'sample':>7} {'rel L2':>9} {'max abs':>9}")
        for label, r in rows3d:
            print(f"{label:>12} {r['sample']:>7} {r['rel_l2']:>9.4f} {r['max_abs']:>9.4f}")
        print(f"('{n}³ at {at}³': the network run on ν coarsened to {at}³, u interpolated to "
              f"{n}³ — `mgtoolkit predict --predict-at {at}`)")  # fmt: skip

        print("\n2. train your own: a U-Net on a small 2D dataset, Half-V cycle")
        store, run_dir = out / "data2d.zarr", out / "run-half-v"
        spec = dict(dim=2, resolution=n2d, levels=3, samples=32, seed=0)
        t0 = time.perf_counter()
        generate(store, client=client, **spec)
        t1 = time.perf_counter()
        solve_store(store, client=client)
        t2 = time.perf_counter()
        print(f"\n{store.name}: generated in {t1 - t0:.1f} s, FEM-solved in {t2 - t1:.1f} s")
        print(store_summary(store))
        config = demo_config(store)
        print(f"\ntraining on {workers} ranks (gloo), run directory {run_dir}:")
        print(config.cycle.build())
        run = train_on_cluster(config, str(run_dir), cluster=client, ranks=workers)
        result = run.result()
        print(
            f"trained in {result['wall_s']:.1f} s ({result['reason']}); "
            f"{len(run.events)} events streamed from rank 0"
        )
        rows = predict(store, run_dir, level=1, client=client)
    held_out = rows[-config.data.val_samples :]
    print(f"\nheld-out samples at {n2d}² vs FEM (u_fem), prediction u_pred written to {store}:")
    print(f"{'sample':>7} {'rel L2':>9} {'max abs':>9} {'energy gap':>11}")
    for r in held_out:
        print(f"{r['sample']:>7} {r['rel_l2']:>9.4f} {r['max_abs']:>9.4f} {r['energy_gap']:>11.2e}")
    mean = {k: sum(r[k] for r in held_out) / len(held_out) for k in ("rel_l2", "max_abs")}
    print(f"{'mean':>7} {mean['rel_l2']:>9.4f} {mean['max_abs']:>9.4f}")
    return 0


def demo_config(store: Path):
    """The demo's training configuration: Half-V over 3 levels of a small 2D store."""
    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.train.config import CycleConfig, DataConfig, OptimConfig, TrainConfig

    return TrainConfig(
        data=DataConfig(store=str(store.resolve()), val_samples=8),
        model=UNetConfig(dim=2),
        cycle=CycleConfig(
            name="half-V", levels=3, epochs=3, patience=4, min_rel_improvement=5e-3, max_epochs=30
        ),
        optim=OptimConfig(batch_size=8, lr=2e-3, loss="scaled_energy"),
        seed=0,
    )
