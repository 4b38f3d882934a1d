"""Estimates of memory and time for training, tiled prediction and FEM solves at any size."""

from __future__ import annotations

from dataclasses import dataclass

from mgtoolkit.plan.probes import (
    CONV3D_SLACK,
    DEFAULT_FILL,
    HEAP_SLACK,
    INFER_RUNTIME_BYTES,
    RUNTIME_BYTES,
    TRAIN_HEAP_SLACK,
    GiB,
    LiveTensorBytes,
    PlanError,
    _fem_probe,
    _fit,
    _infer_flops,
    _model,
    _stream_probe,
    _train_probe,
    machine_gflops,
)

#: Bytes per cell of one whole field held while it is coarsened for ``predict_at`` (ν as read,
#: float32, its float64 copy and log) — more than the interpolated u (float32 nodes) after it.
COARSEN_BYTES_PER_CELL = 20


@dataclass(frozen=True)
class Estimate:
    """Peak bytes of one process (runtime included) and seconds, with how they were obtained."""

    bytes: int
    seconds: float
    detail: str

    @property
    def gib(self) -> float:
        return self.bytes / GiB


def _param_bytes(config, growth: int) -> int:
    return sum(p.numel() * p.element_size() for p in _model(config, growth).parameters())


def _probe_sides(config) -> tuple[int, int]:
    """Two small grids, aligned to the pooling, large enough that activations dominate."""
    m = 2**config.depth
    side = max(2 * m, 16 if config.dim == 3 else 128)
    return side, 2 * side


def training_estimate(
    config,
    *,
    resolution: int,
    batch: int = 1,
    precision: str = "fp32",
    checkpointing: bool = False,
    ranks: int = 1,
    spatial: int = 1,
    growth: int = 0,
    heap_reuse: bool = True,
) -> Estimate:
    """Peak memory per rank and time per global mini-batch of training (CPU, Adam).

    Parameters
    ----------
    config : mgtoolkit.nn.UNetConfig
    resolution : int
        Cells per side of the training level.
    batch : int
        Global mini-batch; each of ``ranks`` ranks holds ``batch / ranks`` samples.
    precision : {"fp32", "bf16"}
    checkpointing : bool
        Activation checkpointing of the conv blocks (:func:`mgtoolkit.nn.memory.checkpoint_blocks`).
    ranks : int
        Processes in all (the world size).
    spatial : int
        Ranks per field (``ParallelConfig.spatial``): each field is split in ``spatial`` slabs
        of ``resolution / spatial`` cell planes, one per rank, and ``ranks / spatial``
        data-parallel groups share the batch. A slab's activations are those of a field of
        its cells plus one halo plane on each side of every convolution's input, counted by
        a probe of the network on slabs (:mod:`mgtoolkit.spatial`).
    growth : int
        Grown block pairs of the network.
    heap_reuse : bool
        Training keeps freed memory in the heap (``TrainConfig.heap_reuse``, the default):
        the activations count :data:`TRAIN_HEAP_SLACK` times.
    """
    if spatial < 1 or ranks % spatial:
        raise PlanError(
            f"{spatial} ranks per field do not divide {ranks} ranks; use a divisor of {ranks}"
        )
    if spatial > 1 and resolution % (spatial * 2**config.depth):
        raise PlanError(
            f"{resolution} cells per side do not split into {spatial} slabs of a multiple of "
            f"2^depth = {2**config.depth} planes"
        )
    groups = ranks // spatial
    if batch % groups:
        raise PlanError(
            f"a global batch of {batch} does not split into {groups} equal local batches; "
            f"use a batch that is a multiple of {groups}"
            + (f" (or more ranks per field than {spatial})" if groups > 1 else "")
        )
    local = batch // groups
    s1, s2 = _probe_sides(config)
    # The probe batch of 2 keeps batch norm's training statistics defined at the bottom level.
    (p1, _), (p2, f2) = (
        _train_probe(config, growth, s, 2, precision, checkpointing, spatial > 1) for s in (s1, s2)
    )
    d = config.dim

    def seen(planes: int, side: int) -> int:
        # Cells a convolution's input holds: on slabs, a halo (or padding) plane on each side.
        return (planes + (2 if spatial > 1 else 0)) * side ** (d - 1)

    slope = (p2 - p1) / (seen(s2, s2) - seen(s1, s1))
    cells = resolution**d // spatial
    per_sample = slope * seen(resolution // spatial, resolution) / 2
    if d == 3:
        per_sample *= CONV3D_SLACK
    if heap_reuse:
        per_sample *= TRAIN_HEAP_SLACK
    per_sample += 4 * cells  # the float32 ν of the batch
    # Weights and Adam's two moments exist before the probe counts; gradients are counted.
    params = _param_bytes(config, growth)
    fixed = 3 * params + max(0.0, p1 - slope * seen(s1, s1))
    comm = params if ranks > 1 else 0
    total = RUNTIME_BYTES + fixed + comm + per_sample * local
    flops = f2 / (2 * s2**d) * cells * local
    seconds = flops / (machine_gflops() * 1e9)
    per_rank = f"{local}{f' 1/{spatial} of a field' if spatial > 1 else ''} per rank"
    detail = (
        f"train {d}D {resolution}^{d}, batch {batch} ({per_rank} × {ranks}), {precision}"
        f"{', checkpointing' if checkpointing else ''}{', heap reuse' if heap_reuse else ''}: "
        f"{per_sample * local / GiB:.2f} GiB "
        f"activations + {(fixed + comm) / GiB:.2f} GiB weights/optimizer"
        f"{'/communication' if comm else ''} + {RUNTIME_BYTES / GiB:.2f} GiB runtime"
    )
    return Estimate(int(total), seconds, detail)


def inference_estimate(
    config,
    *,
    resolution: int,
    tile: int | tuple[int, ...] | None = None,
    workers: int = 1,
    growth: int = 0,
    planes: int | None = None,
    coordinator: bool = False,
    predict_at: int | None = None,
) -> Estimate:
    """Peak memory of tiled prediction of one field, summed over ``workers`` processes.

    ``tile`` is in owned nodes per side, or per axis (None: untiled); each worker streams one
    tile box at a time along z (:class:`~mgtoolkit.infer.stream.StreamedUNet`, ``planes``
    node planes per step), so its memory grows with the box's z-plane area, not its depth.
    The box is the tile plus the receptive-field halo on both sides, aligned to the pooling
    grid. Time is for the whole field on the machine (workers share its cores), halo
    recomputation included. ``coordinator`` adds the process that runs the dask client,
    scheduler and nannies of :func:`mgtoolkit.infer.predict_store` and receives each tile's
    u block before writing it. ``predict_at`` (:attr:`mgtoolkit.nn.UNet.predict_at`): the
    tiles cover the ``predict_at`` grid the network runs on, and each worker also holds one
    whole field of ``resolution`` while coarsening it and interpolating u
    (:data:`COARSEN_BYTES_PER_CELL`); a field it cannot be coarsened to is refused (ValueError).
    """
    from mgtoolkit.infer.tiles import tiles
    from mgtoolkit.nn.unet import coarsening

    d, n = config.dim, resolution // coarsening(resolution, predict_at)
    whole = COARSEN_BYTES_PER_CELL * resolution**d if predict_at else 0
    m = 2**config.depth
    if tile is None or n % m:
        layout = [(((0, n + 1),) * d, ((0, n),) * d)]
    else:
        layout = [(t.nodes, t.cells) for t in tiles(config, n=n, dim=d, tile=tile, growth=growth)]
    sizes = [tuple(b - a for a, b in cells) for _, cells in layout]
    block = max(4 * _prod(b - a for a, b in nodes) for nodes, _ in layout)  # u, float32
    if n % m:  # a coarse grid runs through the plain network (small by definition)
        live = _model_bytes_untiled(config, growth, n)
    else:
        live = max(_stream_bytes(config, growth, size, planes) for size in sizes)
    per_worker = max(HEAP_SLACK * live + block, whole) + _param_bytes(config, growth)
    total_cells = sum(_prod(size) for size in sizes)
    total = workers * (INFER_RUNTIME_BYTES + per_worker)
    if coordinator:
        total += INFER_RUNTIME_BYTES + block
    seconds = _infer_flops(config, growth, 2 * m) * total_cells / (machine_gflops() * 1e9)
    detail = (
        (f"coarsen {d}D {resolution}^{d} to " if predict_at else "")
        + f"predict {d}D {n}^{d}: {len(sizes)} tile(s) of ≤ {max(map(_prod, sizes)):,} cells "
        f"(recomputing {total_cells / n**d - 1:.0%} halo), {workers} worker(s) × "
        f"{(INFER_RUNTIME_BYTES + per_worker) / GiB:.2f} GiB"
        + (f" + {(INFER_RUNTIME_BYTES + block) / GiB:.2f} GiB coordinator" if coordinator else "")
    )
    return Estimate(int(total), seconds, detail)


def _prod(size) -> int:
    out = 1
    for s in size:
        out *= s
    return out


def _stream_bytes(config, growth: int, size: tuple[int, ...], planes: int | None) -> float:
    """Live bytes of streaming one box of ``size`` cells (activations and ν steps).

    They are linear in the z-plane area (every tensor of a step spans the plane); two probes
    on narrow boxes of the same depth give the line.
    """
    m = 2**config.depth
    s1, s2 = 2 * m, 4 * m
    area = _prod(size[1:])
    p1, p2 = (_stream_probe(config, growth, size[0], s, planes) for s in (s1, s2))
    d = config.dim - 1
    return _fit(s1**d, p1, s2**d, p2, area)


def _model_bytes_untiled(config, growth: int, n: int) -> float:
    """Live bytes of the plain forward pass on a small grid (run untiled)."""
    import torch

    net = _model(config, growth).eval()
    nu = torch.exp(torch.randn((1,) + (n,) * config.dim))
    with torch.inference_mode(), LiveTensorBytes() as live:
        net(nu)
    return live.peak


def fem_estimate(dim: int, *, resolution: int, batch: int = 1) -> Estimate:
    """Peak memory and time of :func:`mgtoolkit.fem.solve` on ``batch`` fields (one process)."""
    # Large enough that the dense coarsest-level factor (a constant) no longer dominates.
    probe_n = (256, 512) if dim == 2 else (32, 64)
    (p1, _), (p2, t2) = (_fem_probe(dim, n, batch) for n in probe_n)
    nodes = [(n + 1) ** dim for n in probe_n]
    target = (resolution + 1) ** dim
    peak = _fit(nodes[0], p1, nodes[1], p2, target)
    # ν arrives as float32 cells, read from the store before the solve.
    total = INFER_RUNTIME_BYTES + peak + 4 * batch * resolution**dim
    seconds = t2 * target / nodes[1]
    detail = (
        f"FEM solve {dim}D {resolution}^{dim} × {batch}: {peak / GiB:.2f} GiB arrays "
        f"({peak / (batch * target):.0f} B per node) + runtime"
    )
    return Estimate(int(total), seconds, detail)


def suggest_tile(
    config,
    *,
    resolution: int,
    memory: int | None = None,
    workers: int = 1,
    growth: int = 0,
    predict_at: int | None = None,
) -> tuple[int, ...]:
    """The tiling (owned nodes per axis) with the least halo recomputation that fits ``memory``.

    Tiles span the whole first axis (streamed, so its length costs no memory) and split each
    other axis into 1..8 near-equal ranges. ``memory`` (bytes, for the ``workers`` processes
    together) defaults to :data:`DEFAULT_FILL` of this machine's memory. ``predict_at``: tiles
    of that grid, for a field of ``resolution`` (:func:`inference_estimate`).

    Raises
    ------
    PlanError
        Not even the smallest tiles fit.
    """
    import itertools

    from mgtoolkit.nn.unet import coarsening

    memory = default_memory(1) if memory is None else int(memory)
    n, best = resolution // coarsening(resolution, predict_at), None
    kw = dict(resolution=resolution, workers=workers, growth=growth, predict_at=predict_at)
    for ks in itertools.combinations_with_replacement(range(1, 9), config.dim - 1):
        tile = (n + 1, *(-(-(n + 1) // k) for k in ks))
        est = inference_estimate(config, tile=tile, **kw)
        if est.bytes <= memory and (best is None or est.seconds < best[1].seconds):
            best = (tile, est)
    if best is None:
        side = -(-(n + 1) // 8)
        smallest = inference_estimate(config, tile=(n + 1,) + (side,) * (config.dim - 1), **kw)
        raise PlanError(
            f"no tiling of a {n}^{config.dim} field fits in {memory / GiB:.1f} GiB with "
            f"{workers} worker(s): even 8 tiles per side need {smallest.gib:.1f} GiB; use fewer "
            "workers or free memory"
        )
    return best[0]


# ----------------------------------------------------------------------------- the plan


def default_memory(ranks: int) -> int:
    """Memory per rank when none is given: a fixed share of this machine's RAM."""
    import psutil

    return int(psutil.virtual_memory().total * DEFAULT_FILL / ranks)
