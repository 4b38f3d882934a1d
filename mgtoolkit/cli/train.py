"""``mgtoolkit train``, ``mgtoolkit compare-cycles``, ``mgtoolkit predict`` and
``mgtoolkit export-tensorboard``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mgtoolkit.cli._options import add_predict_at_option, add_scheduler_option
from mgtoolkit.cluster import client_context

__all__ = ["register"]


def register(subparsers) -> None:
    tr = subparsers.add_parser(
        "train",
        help="train a neural solver over a multigrid cycle (config file)",
        description="Train as the config file (TOML or YAML) says, into a run directory holding "
        "the config, events.jsonl, checkpoints, metrics.csv and a report. Rerunning the same "
        "command resumes from the latest checkpoint.",
    )
    tr.add_argument("config", help="training config, .toml or .yaml")
    tr.add_argument("--run-dir", default=None, help="run directory (default runs/<config name>)")
    tr.add_argument("--fresh", action="store_true", help="refuse to resume an existing run")
    tr.add_argument("--no-progress", action="store_true", help="no progress bars")
    tr.add_argument(
        "--spatial",
        type=int,
        default=None,
        metavar="N",
        help="ranks per field: split every field in N slabs across ranks (overrides the "
        "config's [parallel] spatial; must divide the number of ranks)",
    )
    tr.set_defaults(run=_train)

    cc = subparsers.add_parser(
        "compare-cycles",
        help="time to the same accuracy: base (finest level only) vs multigrid cycles",
        description="Train base and each cycle from the same initial weights and data until the "
        "finest-level validation metric reaches the target; print a table (time to target, "
        "speed-up, final loss, error vs FEM, time share per level) and write a plot.",
    )
    cc.add_argument("config", help="training config (its cycle section gives levels and rules)")
    cc.add_argument("--cycles", nargs="+", default=["half-V"], help="cycles (default half-V)")
    cc.add_argument(
        "--target",
        type=_target,
        default=None,
        help="target value, or 'base': the value base's own run ends with (default: config's)",
    )
    cc.add_argument(
        "--metric", choices=("energy_gap", "rel_l2"), default=None, help="target metric"
    )
    cc.add_argument("--out", default=None, help="output directory (default runs/compare-<name>)")
    cc.add_argument("--no-progress", action="store_true", help="no progress bars")
    cc.set_defaults(run=_compare)

    pr = subparsers.add_parser(
        "predict",
        help="write the network's prediction u_pred into a store, with errors vs FEM",
        description="Run a trained network on every sample of one level (in parallel on dask) "
        "and store it as a node field beside u_fem; print per-sample errors.",
    )
    pr.add_argument("store", help="dataset store, e.g. data.zarr")
    pr.add_argument(
        "source",
        metavar="MODEL",
        help="run directory (latest checkpoint), checkpoint file or pretrained model name "
        "(`mgtoolkit models`)",
    )
    pr.add_argument("--level", type=int, default=1, help="level (default 1, the finest)")
    pr.add_argument("--name", default="u_pred", help="node field name (default u_pred)")
    pr.add_argument("--metrics", default=None, help="CSV file for the per-sample metrics")
    pr.add_argument(
        "--mirror-average",
        action="store_true",
        help="average the network over each field's images under the problem's symmetries "
        "(4 in 2D, 16 in 3D: exactly symmetric, more accurate, that many times the cost)",
    )
    add_predict_at_option(pr)
    add_scheduler_option(pr)
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    pr.set_defaults(run=_predict)

    tb = subparsers.add_parser(
        "export-tensorboard",
        help="write runs' events (losses per level, validation, learning rate) for TensorBoard",
        description="Convert each run directory's events.jsonl into a TensorBoard event file: "
        "loss per batch and per epoch for every level, the finest-level validation metrics, the "
        "learning rate and the cost in finest-level epochs, against the global batch and the "
        "wall time. Exporting again replaces the file (a running run can be exported often).",
    )
    tb.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    tb.add_argument(
        "--out",
        default=None,
        help="write RUN_DIR's file into OUT/<run name> (one --logdir for all runs; default: "
        "RUN_DIR/tensorboard)",
    )
    tb.set_defaults(run=_export_tensorboard)


def _target(text: str) -> float | str:
    if text == "base":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--target takes a number (e.g. 0.05) or 'base' (got {text!r})"
        ) from None


def _load_config_warning(path: str):
    """``load_config``, its warnings printed as one ``mgtoolkit: warning:`` line each."""
    import sys
    import warnings

    from mgtoolkit.train import load_config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(path)
    for w in caught:
        print(f"mgtoolkit: warning: {path}: {w.message}", file=sys.stderr)
    return config


def _check_data(config) -> None:
    """Refuse a config whose store is missing or damaged, and warn of a U-Net too deep for it."""
    import sys

    from mgtoolkit.data import check_store
    from mgtoolkit.data.verify import quick_check

    attrs = check_store(config.data.store)
    levels = attrs["levels"]
    finest = attrs["resolution"]
    if 2**config.model.depth > finest:
        print(
            f"mgtoolkit: warning: model.depth = {config.model.depth} pads the {finest}² fields "
            f"of the store to {2**config.model.depth} cells per side: slow and no more accurate; "
            f"depth ≤ {finest.bit_length() - 1} fits",
            file=sys.stderr,
        )
    for level in range(1, levels + 1):
        for variable in ("nu", "u_fem"):
            damaged = quick_check(config.data.store, level, variable)
            if damaged:
                first = next(iter(damaged.values()))
                raise ValueError(
                    f"the training store {config.data.store} is damaged: {len(damaged)} samples "
                    f"of {variable} at level {level} (first: sample {first.sample}, "
                    f"{first.reason}: {first.file}); see `mgtoolkit data verify` and repair "
                    "with --repair"
                )


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    from mgtoolkit.comm.ranks import init_from_environment
    from mgtoolkit.rundir import RunDir
    from mgtoolkit.train import ParallelConfig, Trainer

    # Under mpirun / srun / torchrun every rank runs this command: join the world first
    # (a no-op for a plain single process).
    info = init_from_environment()
    config = _load_config_warning(args.config)
    if args.spatial is not None:
        config = dataclasses.replace(config, parallel=ParallelConfig(spatial=args.spatial))
    _check_data(config)
    run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)
    trainer = Trainer(config, run_dir, progress=not args.no_progress, resume=not args.fresh)
    finished = trainer.resumed and trainer.state.reason is not None
    if info.rank == 0:
        print(trainer.schedule)
        if trainer.resumed:
            print(f"resuming {run_dir} from its last checkpoint")
    result = trainer.run()
    if info.rank == 0 and finished:
        print(
            f"nothing left to train: {run_dir} already finished ({result.reason}); to train "
            "again, pass --run-dir with a new directory"
        )
    if info.rank == 0:
        print(RunDir(run_dir).report_md.read_text())
        if result.reason == "stopped":
            print(f"stopped on request; rerun the same command to resume from {run_dir}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from mgtoolkit.cycles import canonical_name
    from mgtoolkit.train.compare import compare_cycles

    for name in args.cycles:
        canonical_name(name)  # an unknown cycle is named before anything else is checked
    config = _load_config_warning(args.config)
    _check_data(config)
    out = Path(args.out or Path("runs") / f"compare-{Path(args.config).stem}")
    comp = compare_cycles(
        config,
        args.cycles,
        out_dir=out,
        target=args.target,
        target_metric=args.metric,
        progress=not args.no_progress,
    )
    print(comp.table)
    print(
        f"\nwritten: {out / 'comparison.csv'}, {out / 'comparison.md'}"
        + (f", {comp.plot}" if comp.plot else " (no plot: install matplotlib)")
    )
    return 0


def _is_store(path: str) -> bool:
    return Path(path, "zarr.json").is_file()


def _predict(args: argparse.Namespace) -> int:
    import sys

    from mgtoolkit.infer import predict

    if _is_store(args.source) and not _is_store(args.store):
        print(
            "mgtoolkit: warning: `predict RUN STORE` is deprecated and will stop working in the "
            "next release; write `mgtoolkit predict STORE MODEL`",
            file=sys.stderr,
        )
        args.store, args.source = args.source, args.store
    if args.metrics is not None and not Path(args.metrics).resolve().parent.is_dir():
        raise ValueError(
            f"--metrics {args.metrics}: its folder does not exist; create it or choose another "
            "path (nothing was predicted)"
        )
    from mgtoolkit.cli.infer import check_model_fits
    from mgtoolkit.data import check_store
    from mgtoolkit.rundir import load_model

    attrs = check_store(args.store)
    if not 1 <= args.level <= attrs["levels"]:
        raise ValueError(f"--level must be 1 .. {attrs['levels']} for {args.store}")
    model_dim = load_model(args.source).config.dim
    check_model_fits(model_dim, attrs["dim"], args.source, args.store)
    with client_context(args.scheduler) as client:
        rows = predict(
            args.store,
            args.source,
            level=args.level,
            name=args.name,
            client=client,
            progress=not args.no_progress,
            metrics_csv=args.metrics,
            mirror_average=args.mirror_average,
            predict_at=args.predict_at,
        )
    if rows and "rel_l2" in rows[0]:
        print(f"{'sample':>7} {'rel L2':>9} {'max abs':>9} {'energy gap':>11}")
        for r in rows:
            print(
                f"{r['sample']:>7} {r['rel_l2']:>9.4f} {r['max_abs']:>9.4f} "
                f"{r['energy_gap']:>11.2e}"
            )
        n = len(rows)
        print(
            f"{'mean':>7} {sum(r['rel_l2'] for r in rows) / n:>9.4f} "
            f"{max(r['max_abs'] for r in rows):>9.4f} (max) "
            f"{sum(r['energy_gap'] for r in rows) / n:>11.2e}"
        )
    else:
        print(
            f"wrote {args.name} for {len(rows)} samples; the store has no complete u_fem at "
            f"level {args.level} to compare with (add it with `mgtoolkit fem solve`)"
        )
    return 0


def _export_tensorboard(args: argparse.Namespace) -> int:
    from mgtoolkit.train import export_tensorboard

    runs = [Path(p) for p in args.run_dirs]
    names = [p.resolve().name for p in runs]
    if args.out is not None and len(set(names)) < len(names):
        raise ValueError(
            f"run directories with the same name ({', '.join(sorted(names))}) would share a "
            "folder under --out; export them to different --out folders"
        )
    for run, name in zip(runs, names, strict=True):
        out = None if args.out is None else Path(args.out) / name
        path = export_tensorboard(run, out=out)
        print(f"{run}: {path}")
    logdir = args.out if args.out is not None else " ".join(str(p / "tensorboard") for p in runs)
    print(f"view with: tensorboard --logdir {logdir}")
    return 0
