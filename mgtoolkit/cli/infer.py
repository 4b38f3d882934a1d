"""``mgtoolkit predict-tiled`` and ``mgtoolkit plan``: predict at any size; will it fit?"""

from __future__ import annotations

from mgtoolkit.cli._options import add_predict_at_option, add_scheduler_option

__all__ = ["register"]

GiB = 2**30


def _tile(text: str) -> int | tuple[int, ...]:
    parts = [int(p) for p in text.split(",")]
    return parts[0] if len(parts) == 1 else tuple(parts)


def register(subparsers) -> None:
    pred = subparsers.add_parser(
        "predict-tiled",
        help="predict u_pred for fields of any size, tile by tile on dask (exact)",
        description="Run a trained network over every sample of a level in overlapping tiles "
        "(halo = the network's receptive field), streaming ν from and u_pred back to the "
        "store; equal to untiled inference up to rounding. The plan (memory, time) is shown "
        "first, and a tiling that cannot fit is refused. Resumable.",
    )
    pred.add_argument("store", help="dataset store, e.g. data.zarr")
    pred.add_argument(
        "model",
        help="run directory (latest checkpoint), checkpoint file or pretrained model name "
        "(`mgtoolkit models`)",
    )
    pred.add_argument("--level", type=int, default=1, help="level to predict (default 1)")
    pred.add_argument("--name", default="u_pred", help="node field to write (default u_pred)")
    pred.add_argument(
        "--tile",
        type=_tile,
        default=None,
        help="owned nodes per tile side, or z,y,x (default: the fastest tiling that fits)",
    )
    pred.add_argument("--workers", type=int, default=1, help="dask worker processes (default 1)")
    pred.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per worker (default: cores/workers)",
    )
    pred.add_argument(
        "--memory", type=float, default=None, help="GiB the workers may use (default: 85%% of RAM)"
    )
    add_predict_at_option(pred)
    add_scheduler_option(pred)
    pred.add_argument("--no-progress", action="store_true", help="no progress bar")
    pred.set_defaults(run=_predict)

    plan = subparsers.add_parser(
        "plan",
        help="estimate memory and time of training, tiled prediction and the FEM solve",
        description="Estimate peak memory per rank and time for a configuration; exits 1 and "
        "names settings that would fit (checkpointing, bf16, ranks, batch, tile) when it does "
        "not fit.",
    )
    plan.add_argument(
        "--model", default=None, help="run directory, checkpoint or pretrained model name"
    )
    plan.add_argument("--dim", type=int, default=3, help="2 or 3 (default 3)")
    plan.add_argument("--depth", type=int, default=3, help="U-Net depth (default 3)")
    plan.add_argument("--base-filters", type=int, default=16, help="filters (default 16)")
    plan.add_argument("--convs-per-block", type=int, default=2, help="convs per block (2)")
    plan.add_argument("--resolution", type=int, required=True, help="cells per side")
    plan.add_argument("--batch", type=int, default=1, help="global mini-batch (default 1)")
    plan.add_argument("--precision", default="fp32", help="fp32 or bf16 (default fp32)")
    plan.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    plan.add_argument(
        "--no-heap-reuse",
        dest="heap_reuse",
        action="store_false",
        help="training returns freed memory to the OS (TrainConfig.heap_reuse = false)",
    )
    plan.add_argument("--ranks", type=int, default=1, help="ranks, processes (default 1)")
    plan.add_argument(
        "--levels",
        type=int,
        default=None,
        help="choose ranks per field (spatial parallelism) for levels 1..LEVELS of a cycle "
        "over --ranks ranks, and print the [parallel] section that sets them",
    )
    plan.add_argument("--tile", type=_tile, default=None, help="prediction tile (nodes)")
    plan.add_argument("--workers", type=int, default=1, help="prediction workers (default 1)")
    plan.add_argument("--memory", type=float, default=None, help="GiB per rank (default: RAM)")
    plan.add_argument(
        "--phases", nargs="+", default=["train", "infer", "fem"], help="train infer fem"
    )
    plan.set_defaults(run=_plan)


def _predict(args) -> int:
    import contextlib
    import os

    from mgtoolkit.data import check_store
    from mgtoolkit.infer import predict_store
    from mgtoolkit.plan import inference_estimate, suggest_tile
    from mgtoolkit.rundir import load_model

    attrs = check_store(args.store)
    if args.workers < 1 or (args.threads is not None and args.threads < 1):
        raise ValueError("--workers and --threads must be positive integers")
    _check_memory(args.memory)
    if not 1 <= args.level <= attrs["levels"]:
        raise ValueError(f"--level must be 1 .. {attrs['levels']} for {args.store}")
    model = load_model(args.model, predict_at=args.predict_at)
    check_model_fits(model.config.dim, attrs["dim"], args.model, args.store)
    if model.cascades:
        raise ValueError(
            f"{args.model} is a cascaded network (trained with adaptation = 'cascade'): its "
            "coarse stages need whole fields, so it cannot run in tiles; use `mgtoolkit "
            "predict`, which predicts each sample whole"
        )
    from mgtoolkit.grids import level_resolution

    n = level_resolution(attrs["resolution"], args.level)
    memory = None if args.memory is None else int(args.memory * GiB)
    kw = dict(resolution=n, workers=args.workers, growth=model.growth, predict_at=model.predict_at)
    tile = args.tile
    if tile is None:
        tile = suggest_tile(model.config, memory=memory, **kw)
    est = inference_estimate(model.config, tile=tile, **kw)
    print(f"plan: {est.detail}; ~{est.gib:.1f} GiB, ~{est.seconds:.0f} s per sample")
    if memory is not None and est.bytes > memory:
        better = suggest_tile(model.config, memory=memory, **kw)
        raise ValueError(
            f"tile {tile} needs ~{est.gib:.1f} GiB but --memory is {args.memory:g} GiB; "
            f"use --tile {','.join(map(str, better))} (or omit --tile)"
        )
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    with contextlib.ExitStack() as stack:
        from mgtoolkit.cluster import client_context

        client = stack.enter_context(
            client_context(
                args.scheduler, workers=args.workers, threads_per_worker=threads, single_arena=True
            )
        )
        predict_store(
            args.store,
            model,
            level=args.level,
            name=args.name,
            tile=tile,
            client=client,
            progress=not args.no_progress,
        )
    print(f"wrote {args.name} at level {args.level} of {args.store}")
    return 0


def _check_memory(memory: float | None) -> None:
    import math

    if memory is not None and not (math.isfinite(memory) and memory > 0):
        raise ValueError(f"--memory must be a positive number of GiB (got {memory:g})")


def check_model_fits(model_dim: int, store_dim: int, model: str, store: str) -> None:
    """Refuse a model trained in one dimension on a store of the other (before any work)."""
    if model_dim != store_dim:
        raise ValueError(
            f"the network in {model} is {model_dim}D but {store} holds {store_dim}D fields; "
            f"pass a {store_dim}D model (nothing was started or written)"
        )


def _plan(args) -> int:
    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.plan import plan, plan_layouts

    _check_memory(args.memory)

    growth = 0
    if args.model is not None:
        from mgtoolkit.rundir import load_model

        model = load_model(args.model)
        config, growth = model.config, model.growth
    else:
        config = UNetConfig(
            dim=args.dim,
            depth=args.depth,
            base_filters=args.base_filters,
            convs_per_block=args.convs_per_block,
        )
    memory = None if args.memory is None else int(args.memory * GiB)
    train = dict(
        resolution=args.resolution,
        batch=args.batch,
        precision=args.precision,
        checkpointing=args.checkpointing,
        heap_reuse=args.heap_reuse,
        ranks=args.ranks,
        growth=growth,
        memory=memory,
    )
    # With --levels, training is planned per level (layouts) instead of data-parallel only.
    per_level = args.levels is not None
    phases = tuple(p for p in args.phases if not (per_level and p == "train"))
    # The layouts first: bad --levels is refused before the other phases' probes run.
    layouts = None
    if per_level and "train" in args.phases:
        layouts = plan_layouts(config, levels=args.levels, **train)
    fits = True
    if phases:
        result = plan(config, **train, tile=args.tile, workers=args.workers, phases=phases)
        print(result)
        fits = result.fits
    if layouts is not None:
        print(layouts)
        fits = fits and layouts.fits
    return 0 if fits else 1
