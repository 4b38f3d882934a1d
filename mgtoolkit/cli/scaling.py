"""``mgtoolkit scaling``: strong and weak scaling of data-parallel training steps."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(subparsers) -> None:
    sc = subparsers.add_parser(
        "scaling",
        help="strong and weak scaling of training steps on p local ranks (table and plot)",
        description="Run the same training step (U-Net, FEM energy loss, gradient all-reduce, "
        "Adam) on p = 1, 2, ... local gloo ranks; write speed-up S = T1/Tp and efficiency "
        "E = T1/(p Tp) as scaling.csv, scaling.md and scaling.png (with E = 0.8 marked).",
    )
    sc.add_argument("--config", default=None, help="training config whose [model] to use")
    sc.add_argument("--dim", type=int, default=None, help="2 or 3 (default: config's, else 2)")
    sc.add_argument("--n", type=int, default=64, help="cells per side (default 64)")
    sc.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="world sizes (1 2)")
    sc.add_argument(
        "--batch",
        type=int,
        default=None,
        help="strong: global batch; weak: batch per rank (default: the config's "
        "optim.batch_size, else 8)",
    )
    sc.add_argument("--steps", type=int, default=10, help="timed steps per run (10)")
    sc.add_argument("--warmup", type=int, default=2, help="untimed steps per run (2)")
    sc.add_argument(
        "--mode", choices=("strong", "weak", "both"), default="both", help="(default both)"
    )
    sc.add_argument("--threads", type=int, default=1, help="torch threads per rank (1)")
    sc.add_argument("--repeat", type=int, default=1, help="runs per point, fastest kept (1)")
    sc.add_argument("--out", default="runs/scaling", help="output directory (runs/scaling)")
    sc.set_defaults(run=_scaling)


def _scaling(args: argparse.Namespace) -> int:
    import csv

    from mgtoolkit.launch.scaling import format_table, measure, plot

    model: dict = {}
    batch = 8 if args.batch is None else args.batch
    if args.config:
        from mgtoolkit.train import load_config

        config = load_config(args.config)
        model = config.model.to_dict()
        if args.batch is None:
            batch = config.optim.batch_size
    if args.dim is not None:
        model["dim"] = args.dim
    for option, lo in (("steps", 1), ("warmup", 0), ("threads", 1), ("repeat", 1), ("n", 4)):
        if getattr(args, option) < lo:
            raise ValueError(f"--{option} must be an integer ≥ {lo} (got {getattr(args, option)})")
    if args.n & (args.n - 1):
        raise ValueError(f"--n must be a power of two, e.g. 64 (got {args.n})")
    if model.get("dim", 2) not in (2, 3):
        raise ValueError(f"--dim must be 2 or 3 (got {model['dim']})")
    if batch < 1:
        raise ValueError(f"--batch must be a positive integer (got {batch})")
    if any(p < 1 for p in args.ranks):
        raise ValueError(f"--ranks must be positive integers (got {args.ranks})")
    modes = ("strong", "weak") if args.mode == "both" else (args.mode,)
    rows = measure(
        model=model,
        n=args.n,
        ranks=tuple(args.ranks),
        batch=batch,
        steps=args.steps,
        warmup=args.warmup,
        modes=modes,
        threads_per_rank=args.threads,
        repeat=args.repeat,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(rows)
    (out / "scaling.md").write_text(table + "\n")
    with open(out / "scaling.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].to_dict()))
        writer.writeheader()
        writer.writerows(r.to_dict() for r in rows)
    plot(rows, out / "scaling.png")
    print(table)
    print(f"wrote {out / 'scaling.csv'}, {out / 'scaling.md'}, {out / 'scaling.png'}")
    return 0
