"""Held-out accuracy of a trained network against the FEM reference, in 2D or 3D.

Generates a KL store (``--samples`` fields, the last ``--val`` held out for the trainer's own
validation) with ``--levels`` levels, FEM-solves level 1, trains one cycle with the library's
trainer and prints, on the held-out fields at the finest level, the mean relative L2 error
‖u_net − u_fem‖ / ‖u_fem‖ over nodes, the max absolute error and the energy gap, for the
network and for the network averaged over each field's images under the problem's symmetry
group (``UNet.mirror_average``: 4 maps in 2D, 16 in 3D). With ``--test-fields N`` two more
groups are scored: N fields drawn with a seed the training store does not use, and the fields
at the 2^4 corners of the ω box (the hardest, contrast ≈ 10⁶), each with the mean relative L2
and the mean and worst per-field max abs error. Stores are reused between runs (same
parameters).

CPU-heavy; run alone on the machine, e.g.::

    .venv/bin/python benchmarks/accuracy.py --resolution 128 --levels 3
    .venv/bin/python benchmarks/accuracy.py --dim 3 --resolution 32 --levels 3 --test-fields 32
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

REL_L2_TARGET = 0.01
MAX_ABS_TARGET = 0.02


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=2, choices=(2, 3))
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument(
        "--test-fields", type=int, default=0, help="fields of an unseen seed (+ the ω corners)"
    )
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--samples", type=int, default=288, help="store samples (incl. held out)")
    parser.add_argument("--val", type=int, default=32, help="held-out samples (the last ones)")
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument(
        "--augment", action="store_true", help="map training samples by the symmetry group"
    )
    parser.add_argument("--cycle", default="half-V")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of restriction steps")
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument(
        "--coarse-max-epochs", type=int, default=None, help="epoch cap = patience on levels ≥ 2"
    )
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--base-filters", type=int, default=None)
    parser.add_argument("--max-filters", type=int, default=None)
    parser.add_argument("--norm", default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--lr-schedule", default=None, help="constant, plateau or cosine")
    parser.add_argument("--min-lr", type=float, default=None)
    parser.add_argument("--warmup-epochs", type=float, default=None, help="rate warm-up per step")
    parser.add_argument("--loss", default=None)
    parser.add_argument("--loss-power", type=float, default=None, help="p of the multigrid loss")
    parser.add_argument("--precision", default="fp32", help="fp32 or bf16 (training forward)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-accuracy")
    parser.add_argument("--tag", default="run", help="run directory name under --out")
    args = parser.parse_args()

    import dataclasses

    import torch

    from mgtoolkit.data import FemSolveFn, completed, generate, map_samples
    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.train import CycleConfig, DataConfig, OptimConfig, TrainConfig, train

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    n = args.resolution
    dim = args.dim
    store = out / f"kl{dim}d-{n}-L{args.levels}-s{args.samples}.zarr"
    t0 = time.perf_counter()
    generate(
        store, dim=dim, resolution=n, levels=args.levels, samples=args.samples, seed=0,
        progress=False,
    )  # fmt: skip
    if not completed(store, 1, "u_fem").all():
        map_samples(store, FemSolveFn(), level=1, name="u_fem", progress=False)
    t_data = time.perf_counter() - t0

    def given(**kw):
        return {k: v for k, v in kw.items() if v is not None}

    config = TrainConfig(
        data=DataConfig(
            store=str(store),
            val_samples=args.val,
            train_samples=args.train_samples,
            augment=args.augment,
        ),
        model=UNetConfig(
            dim=dim,
            **given(
                depth=args.depth,
                base_filters=args.base_filters,
                max_filters=args.max_filters,
                norm=args.norm,
            ),
        ),
        cycle=CycleConfig(
            name=args.cycle,
            levels=args.levels,
            **given(epochs=args.epochs, patience=args.patience, max_epochs=args.max_epochs),
            coarse=None
            if args.coarse_max_epochs is None
            else {"max_epochs": args.coarse_max_epochs, "patience": args.coarse_max_epochs},
        ),
        optim=OptimConfig(
            **given(
                batch_size=args.batch,
                lr=args.lr,
                lr_schedule=args.lr_schedule,
                min_lr=args.min_lr,
                warmup_epochs=args.warmup_epochs,
                loss=args.loss,
                loss_power=args.loss_power,
            )
        ),
        seed=args.seed,
        validate_every=0,
        channels_last=True,
        precision=args.precision,
    )
    n_train = config.data.train_samples or args.samples - args.val
    print(
        f"{dim}D n = {n}, {args.levels} levels, {n_train} "
        f"training / {args.val} held-out samples (store + FEM {t_data:.0f} s); torch threads "
        f"{args.threads}; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"model {dataclasses.asdict(config.model)}; augmented samples {config.data.augment}")
    print(f"optim {dataclasses.asdict(config.optim)}; precision {config.precision}")
    print(config.cycle.build())
    result = train(config, out / args.tag, progress=False, resume=False)
    for row in result.steps:
        print(
            f"  step {row['step'] + 1}: level {row['level']} (n = {row['n']}) {row['epochs']:>3} "
            f"epochs {row['wall_s']:7.1f} s  loss {row['loss']:.6g}  held-out rel L2 "
            f"{row['val_rel_l2']:.4f}  gap {row['val_energy_gap']:.3g}"
        )
    v = result.validation
    m = group_averaged(out / args.tag, store, range(args.samples - args.val, args.samples))
    maps = 4 if dim == 2 else 16
    print(f"training {result.wall_s:.0f} s (run {result.elapsed_s:.0f} s)")
    print(f"held-out ({args.val} fields, n = {n})   network   symmetry-averaged   target")
    print(
        f"  mean relative L2         {v['val_rel_l2']:.4f}    {m['val_rel_l2']:.4f}"
        f"              ≤ {REL_L2_TARGET}"
    )
    print(
        f"  max abs error            {v['val_max_abs']:.4f}    {m['val_max_abs']:.4f}"
        f"              ≤ {MAX_ABS_TARGET}"
    )
    print(f"  energy gap               {v['val_energy_gap']:.2e}  {m['val_energy_gap']:.2e}")
    for name, r in (("network", v), (f"symmetry-averaged ({maps} network evaluations)", m)):
        ok = r["val_rel_l2"] <= REL_L2_TARGET and r["val_max_abs"] <= MAX_ABS_TARGET
        print(f"targets, {name}: {'met' if ok else 'NOT met'}")
    if args.test_fields:
        test_groups(out / args.tag, dim=dim, n=n, count=args.test_fields, seed=args.seed)


def test_groups(run: Path, *, dim: int, n: int, count: int, seed: int) -> None:
    """Score the run's network on unseen fields and on the ω-box corners, plain and averaged."""
    from mgtoolkit.fem import solve
    from mgtoolkit.infer import corner_fields, score, unseen_fields
    from mgtoolkit.rundir import load_model

    nets = {"network": load_model(run), "symmetry-averaged": load_model(run, mirror_average=True)}
    groups = {
        f"unseen seed ({count})": unseen_fields(dim=dim, n=n, count=count, seed=seed),
        "ω-box corners (16)": corner_fields(dim=dim, n=n),
    }
    print(f"\n{'group':<22} {'model':<18} {'mean rel L2':>11} {'mean max abs':>12} {'worst':>8}")
    for group, fields in groups.items():
        refs = [solve(nu) for nu in fields]
        for name, net in nets.items():
            r = score(net, fields, references=refs)
            print(
                f"{group:<22} {name:<18} {r['rel_l2']:>11.4f} {r['max_abs']:>12.4f} "
                f"{r['worst_max_abs']:>8.4f}"
            )


def group_averaged(run: Path, store: Path, indices) -> dict[str, float]:
    """Held-out metrics of the run's network averaged over the problem's symmetry group."""
    import torch

    from mgtoolkit.data import LevelDataset
    from mgtoolkit.infer import sample_metrics
    from mgtoolkit.rundir import load_model

    model = load_model(run, mirror_average=True)
    rows = []
    with torch.no_grad():
        for item in LevelDataset(store, 1, variables=("nu", "u_fem"), indices=list(indices)):
            u = model(item["nu"][None])[0]
            rows.append(sample_metrics(item["nu"], u, item["u_fem"]))
    return {
        "val_rel_l2": sum(r["rel_l2"] for r in rows) / len(rows),
        "val_max_abs": max(r["max_abs"] for r in rows),
        "val_energy_gap": sum(r["energy_gap"] for r in rows) / len(rows),
    }


if __name__ == "__main__":
    main()
