"""Score a network on fresh fields against FEM, and package it as a pretrained model.

Scores a run directory, checkpoint or packaged model on two groups of fresh KL fields — N with
ω drawn from a seed no training store uses, and the 16 corners of the ω box — for the network
and for the network averaged over the problem's symmetry group; ``--transfer`` adds unseen
fields at other resolutions (the networks are fully convolutional), scored also with the
network run at the training resolution on ν coarsened to it, u interpolated back (models
``network@N``, ``averaged@N``: ``UNet.predict_at``), and the floor of that, the FEM solution at
the training resolution interpolated (``fem@N``). With ``--package NAME`` it
writes ``mgtoolkit/pretrained/NAME.pt`` (model only, no optimizer state) and ``NAME.json``, the
card that ``mgtoolkit models`` prints: these figures, the training configuration and time (from
the run's report), the commit the run was trained at and the machine.

CPU-heavy (FEM solves and 16 network passes per averaged field); run alone::

    .venv/bin/python benchmarks/pretrained.py runs/pretrain-kl2d-128 --test-fields 32 \\
        --package kl2d-128 --commit $(cat runs/pretrain-kl2d-128.commit) \\
        --description "2D KL fields, 128², examples/train_2d_accurate.toml"
    .venv/bin/python benchmarks/pretrained.py kl2d-128 --test-fields 8   # re-score a package
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="run directory, checkpoint file or pretrained model name")
    parser.add_argument("--test-fields", type=int, default=32, help="unseen-seed fields")
    parser.add_argument("--seed", type=int, default=0, help="training seed (unseen = +10000)")
    parser.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="n of the unseen and corner groups and of the card (default: the training store's; "
        "a model continued briefly at a finer level is still scored where it was trained)",
    )
    parser.add_argument(
        "--transfer", type=int, nargs="*", default=[], help="also score unseen fields at n"
    )
    parser.add_argument("--transfer-fields", type=int, default=4)
    parser.add_argument(
        "--time-at",
        type=int,
        nargs="*",
        default=[],
        help="time one prediction at n (best of 5 after a warm pass)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--package", metavar="NAME", default=None, help="write the package")
    parser.add_argument("--description", default="")
    parser.add_argument("--commit", default=None, help="commit the run was trained at")
    parser.add_argument("--note", default="", help="circumstances worth knowing (card)")
    args = parser.parse_args()

    import torch

    from mgtoolkit.fem import solve
    from mgtoolkit.infer import corner_fields, score, unseen_fields
    from mgtoolkit.nn import UNet, UNetConfig
    from mgtoolkit.rundir import load_model, read_checkpoint

    torch.set_num_threads(args.threads)
    checkpoint = read_checkpoint(args.source)
    dim = int(checkpoint.config["model"]["dim"])
    store_n = args.resolution or _training_resolution(args.source)
    nets = {
        "network": load_model(args.source),
        "averaged": load_model(args.source, mirror_average=True),
    }
    groups = {
        "unseen": unseen_fields(dim=dim, n=store_n, count=args.test_fields, seed=args.seed),
        "corners": corner_fields(dim=dim, n=store_n),
    }
    for n in args.transfer:
        groups[f"unseen-{n}"] = unseen_fields(
            dim=dim, n=n, count=args.transfer_fields, seed=args.seed
        )
    print(f"{args.source}: {dim}D, scored at n = {store_n}; load average {os.getloadavg()[0]:.1f}")
    header = ("group", "fields", "model", "rel L2", "max abs", "worst", "s")
    print("{:<14} {:>6} {:<12} {:>8} {:>8} {:>8} {:>6}".format(*header))
    metrics: dict = {}
    # finer fields also predicted at the training resolution (ν coarsened, u interpolated)
    coarse = {
        f"{name}@{store_n}": load_model(args.source, mirror_average=avg, predict_at=store_n)
        for name, avg in (("network", False), ("averaged", True))
    }
    # ... and the floor of that: the FEM solution at the training resolution, interpolated
    coarse[f"fem@{store_n}"] = functools.partial(_coarse_fem, n=store_n)
    for group, fields in groups.items():
        refs = [solve(nu) for nu in fields]
        metrics[group] = {}
        finer = fields[0].shape[-1] > store_n
        for name, net in (nets | coarse if finer else nets).items():
            t0 = time.perf_counter()
            r = score(net, fields, references=refs)
            metrics[group][name] = r
            print(
                f"{group:<14} {r['fields']:>6} {name:<12} {r['rel_l2']:>8.4f} {r['max_abs']:>8.4f} "
                f"{r['worst_max_abs']:>8.4f} {time.perf_counter() - t0:>6.1f}"
            )
    timings = {}
    for n in args.time_at:
        timings[str(n)] = _time_prediction(nets["network"], dim=dim, n=n)
        # the reference: the paper's small U-Net (depth 3, 16 filters, one conv per block)
        torch.manual_seed(0)
        small = UNet(UNetConfig(dim=dim, depth=3, base_filters=16, convs_per_block=1)).eval()
        reference = _time_prediction(small, dim=dim, n=n)
        print(
            f"one prediction at {n}^{dim} (one network pass, fp32, {torch.get_num_threads()} "
            f"threads, best of 5): {timings[str(n)]:.2f} s; the paper's small U-Net "
            f"{reference:.2f} s (ratio {timings[str(n)] / reference:.2f})"
        )
    if args.package:
        _package(args, checkpoint, {**metrics, "prediction_s": timings}, dim=dim, n=store_n)


def _coarse_fem(nu, *, n: int):
    """FEM solution of ``nu`` ``(1,) + (N,) * d`` coarsened to n cells, interpolated to N."""
    import torch

    from mgtoolkit.fem import solve
    from mgtoolkit.fields import geometric_coarsen
    from mgtoolkit.nn.unet import interpolate_nodes

    factor, dim = nu.shape[-1] // n, nu.dim() - 1
    u = torch.as_tensor(solve(geometric_coarsen(nu.numpy(), factor, batched=True)[0]))
    return interpolate_nodes(u[None], factor, dim)


def _time_prediction(net, *, dim: int, n: int) -> float:
    import torch

    from mgtoolkit.infer import unseen_fields

    x = torch.as_tensor(unseen_fields(dim=dim, n=n, count=1)[0], dtype=torch.float32)[None]
    best = float("inf")
    with torch.no_grad():
        net(x)  # oneDNN builds its kernels for these shapes on the first pass
        for _ in range(5):
            t0 = time.perf_counter()
            net(x)
            best = min(best, time.perf_counter() - t0)
    return best


def _training_resolution(source: str) -> int:
    """Cells per side of the fields the network was trained on (finest level)."""
    from mgtoolkit import pretrained
    from mgtoolkit.data import check_store
    from mgtoolkit.rundir import RunDir
    from mgtoolkit.train import load_config

    if Path(source).is_dir():
        return int(check_store(load_config(RunDir(source).config).data.store)["resolution"])
    return int(pretrained.get(source).card["resolution"])


def _stages(run_dir: Path) -> list[dict]:
    """The run and the runs it started from (``init``), first run first: name and seconds.

    A run started from a packaged model (``init`` = its name) counts the stages on its card.
    """
    from mgtoolkit import pretrained
    from mgtoolkit.rundir import RunDir
    from mgtoolkit.train import load_config

    run = RunDir(run_dir)
    report = json.loads(run.report_json.read_text())
    stage = {"run": run.path.name, "wall_s": report["wall_s"], "elapsed_s": report["elapsed_s"]}
    init = load_config(run.config).init
    if init and Path(init).is_dir():
        earlier = _stages(Path(init))
    elif init and (model := pretrained.find(init)) is not None:
        earlier = list(model.card["training_stages"])
    else:
        earlier = []
    return [*earlier, stage]


def _full_commit(commit: str | None) -> str | None:
    """The 40-digit form of an abbreviated commit (the card records the full one)."""
    import subprocess

    if commit is None:
        return None
    out = subprocess.run(
        ["git", "rev-parse", "--verify", f"{commit}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        sys.exit(f"--commit {commit}: not a commit of this repository")
    return out.stdout.strip()


def _package(args, checkpoint, metrics: dict, *, dim: int, n: int) -> None:
    from mgtoolkit.rundir import Checkpoint, RunDir, save_checkpoint

    if not Path(args.source).is_dir():
        sys.exit("--package needs a run directory (its report gives the training time)")
    report = json.loads(RunDir(args.source).report_json.read_text())
    stages = _stages(Path(args.source))
    out = ROOT / "mgtoolkit" / "pretrained"
    model_only = Checkpoint(
        config=checkpoint.config,
        growth=checkpoint.growth,
        model={k: v.float().contiguous() for k, v in checkpoint.model.items()},
        state=checkpoint.state,
        cascades=checkpoint.cascades,
    )
    save_checkpoint(out / f"{args.package}.pt", model_only)
    card = {
        "description": args.description,
        "dim": dim,
        "resolution": n,
        "family": "kl",
        # a continued run names the run it started from, not this machine's path to it
        "config": {**checkpoint.config, **({"init": stages[-2]["run"]} if len(stages) > 1 else {})},
        "commit": _full_commit(args.commit),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        # a continued run (init) counts the training of the runs it started from
        "training_s": sum(s["wall_s"] for s in stages),
        "training_elapsed_s": sum(s["elapsed_s"] for s in stages),
        "training_stages": stages,
        "metrics": {
            "heldout_store": {
                k: report["validation"][k]
                for k in ("val_rel_l2", "val_max_abs")
                if k in report.get("validation", {})
            },
            **metrics,
        },
        "command": "benchmarks/pretrained.py " + " ".join(sys.argv[1:]),
        "note": args.note,
    }
    (out / f"{args.package}.json").write_text(json.dumps(card, indent=2) + "\n")
    size = (out / f"{args.package}.pt").stat().st_size / 2**20
    print(f"wrote {out / args.package}.pt ({size:.1f} MiB) and .json")


if __name__ == "__main__":
    main()
