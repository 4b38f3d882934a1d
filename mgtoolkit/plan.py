"""Memory and time planner: will a training run, a tiled prediction or a FEM solve fit?

How the estimates are made. Every array of a U-Net step or of the FEM solver is a torch
tensor whose size is proportional to the number of cells (or nodes) — except the weights and
small coarse-grid data. So the planner runs the real computation once on two small grids,
counts the bytes of live tensors as they are created and freed (a torch dispatch mode sees
every allocation, forward, backward, recomputation and optimizer step alike), fits
``peak(N) = a + b·N`` in the number of cells N, and evaluates it at the requested size. Nothing
is hand-counted, so the estimates follow the code of :mod:`mgtoolkit.nn` and
:mod:`mgtoolkit.fem` as they change. Each process also carries a fixed runtime — the
interpreter, torch and its kernels, initialized on first use — :data:`RUNTIME_BYTES`, measured
on this project's machines.

Times come from the floating-point operations of the convolutions (counted by
:class:`torch.utils.flop_counter.FlopCounterMode` on the probe) divided by the throughput of
this machine (:func:`machine_gflops`, a short convolution benchmark), and for the FEM solver
from the probe's own wall time scaled by the node count. They are estimates for planning.

Data parallelism over p ranks splits the global batch into p equal local batches: memory per
rank follows the local batch, plus one gradient-sized communication buffer.
"""

from __future__ import annotations

import functools
import time
import weakref
from dataclasses import dataclass, field, replace

__all__ = [
    "HEAP_SLACK",
    "INFER_RUNTIME_BYTES",
    "RUNTIME_BYTES",
    "Estimate",
    "LiveTensorBytes",
    "Plan",
    "PlanError",
    "fem_estimate",
    "inference_estimate",
    "machine_gflops",
    "plan",
    "suggest_tile",
    "training_estimate",
]

GiB = 2**30
#: Resident memory of one worker process before its tensors: Python, torch, mgtoolkit and the
#: CPU kernels' first-use initialization (measured here: 0.30 GiB after import, +0.15 GiB
#: during the first convolutions).
RUNTIME_BYTES = int(0.45 * GiB)
#: The same for a process that only predicts or solves (fresh: 0.22 GiB after import, 0.25 GiB
#: after the first streamed tile; it needs neither autograd nor the im2col buffers of training).
INFER_RUNTIME_BYTES = int(0.25 * GiB)
#: Resident bytes per live tensor byte while streaming: the heap keeps freed blocks for reuse
#: (see :func:`mgtoolkit.runtime.heap_reuse`), and holes between live blocks count.
#: Measured: about 1.0 for the 512³ dask worker, 1.2–1.4 for 128³–192³ in a fresh process;
#: 1.2 keeps both within 15 % of the measured peak.
HEAP_SLACK = 1.2
#: Resident bytes per activation byte of training inside :func:`mgtoolkit.runtime.heap_reuse`
#: (the trainer's default, ``TrainConfig.heap_reuse``): freed activations stay in the heap, and
#: the next step's tensors of other sizes do not all fit the holes. Measured over 3–12 Adam steps
#: in fresh processes, in units of the activation estimate (it varies between identical runs):
#: 1.1–1.2 (2D 1024², 4 filters, batch 1), 1.0–1.4 (2D 256², batch 8), 1.3–1.8 (3D 64³, batch 4,
#: the paper's block). With 1.3 the estimate is 7–16 %, −6 to +14 % and 0 to −21 % off the
#: measured peaks of these three.
TRAIN_HEAP_SLACK = 1.3
#: Fraction of a machine's memory a plan may fill by default (the OS and page cache need some).
DEFAULT_FILL = 0.85


class PlanError(ValueError):
    """A plan that cannot fit; the message says what would."""


class LiveTensorBytes:
    """Count the bytes of live tensor storages created inside the context, and their peak.

    Storages created before entering (weights, inputs) are not counted. Views share their
    base's storage and count once.
    """

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self._keys: set[int] = set()

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if hasattr(t, "untyped_storage") and t.device.type != "meta":
                        counter._track(t.untyped_storage())
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)

    def _track(self, storage) -> None:
        key, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes and key not in self._keys:
            self._keys.add(key)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, nbytes)

    def _free(self, key: int, nbytes: int) -> None:
        self._keys.discard(key)
        self.live -= nbytes


# ----------------------------------------------------------------------------- probes


def _fit(n1: int, y1: float, n2: int, y2: float, n: int) -> float:
    """Evaluate the line through (n1, y1), (n2, y2) at n (all in cells or nodes)."""
    slope = (y2 - y1) / (n2 - n1)
    return y1 + slope * (n - n1)


def _model(config, growth: int):
    from mgtoolkit.nn import UNet

    net = UNet(config)
    for _ in range(growth):
        net.grow()
    return net


@functools.lru_cache(maxsize=64)
def _train_probe(config, growth: int, side: int, batch: int, precision: str, ckpt: bool):
    """(peak live bytes, forward+backward FLOPs) of one Adam step of ``batch`` fields."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mgtoolkit.fem import energy
    from mgtoolkit.nn.memory import autocast, checkpoint_blocks

    torch.manual_seed(0)
    net = checkpoint_blocks(_model(config, growth), enabled=ckpt).train()
    opt = torch.optim.Adam(net.parameters())
    nu = torch.exp(torch.randn((batch,) + (side,) * config.dim))

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(precision, model=net):
            u = net(nu)
        energy(nu, u.float()).mean().backward()
        opt.step()

    # Adam's moments appear in the first step's opt.step(), after backward has freed the
    # activations: they do not change this peak, and the estimate adds them explicitly.
    with LiveTensorBytes() as live, FlopCounterMode(display=False) as flops:
        step()
    return live.peak, flops.get_total_flops()


@functools.lru_cache(maxsize=64)
def _infer_flops(config, growth: int, side: int) -> float:
    """FLOPs per cell of one eval-mode forward pass (counted on a cube of ``side`` cells)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = _model(config, growth).eval()
    nu = torch.exp(torch.randn((1,) + (side,) * config.dim))
    with torch.inference_mode(), FlopCounterMode(display=False) as flops:
        net(nu)
    return flops.get_total_flops() / side**config.dim


@functools.lru_cache(maxsize=64)
def _stream_probe(config, growth: int, depth: int, side: int, planes: int | None) -> int:
    """Peak live bytes of streaming a box of ``depth`` cells along z and ``side`` across.

    The box is what :meth:`mgtoolkit.infer.TiledPredictor.predict_tile` streams; its input
    channels are made step by step, as from a store, and each step's output is dropped.
    """
    import torch

    from mgtoolkit.infer.stream import DEFAULT_PLANES, StreamedUNet

    net = _model(config, growth).eval()
    shape = (1, 1 + int(config.x_channel), depth) + (side,) * (config.dim - 1)
    x = torch.randn(shape)
    stream = StreamedUNet(net, planes=planes or DEFAULT_PLANES)
    with LiveTensorBytes() as live:
        stream(lambda a, b: x[:, :, a:b].clone(), cells=depth, out=lambda a, b, u: None)
    return live.peak


@functools.lru_cache(maxsize=16)
def _fem_probe(dim: int, n: int, batch: int):
    """(peak live bytes, wall seconds) of one FEM solve of ``batch`` fields of n cells per side."""
    import torch

    from mgtoolkit.fem import solve

    g = torch.Generator().manual_seed(0)
    nu = torch.exp(torch.randn((batch,) + (n,) * dim, generator=g))
    with LiveTensorBytes() as live:
        solve(nu)
    t0 = time.perf_counter()
    solve(nu)  # timed warm and without the counter, which slows every operation
    seconds = time.perf_counter() - t0
    return live.peak, seconds


@functools.cache
def machine_gflops() -> float:
    """Sustained float32 GFLOP/s of a 3D convolution here (torch's current thread count)."""
    import torch

    x = torch.randn(1, 16, 48, 48, 48)
    conv = torch.nn.Conv3d(16, 16, 3, padding=1, bias=False)
    with torch.inference_mode():
        conv(x)
        t0 = time.perf_counter()
        for _ in range(3):
            conv(x)
        seconds = (time.perf_counter() - t0) / 3
    return 2 * 27 * 16 * 16 * 48**3 / seconds / 1e9


# ----------------------------------------------------------------------------- estimates


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
        Data-parallel processes.
    growth : int
        Grown block pairs of the network.
    heap_reuse : bool
        Training keeps freed memory in the heap (``TrainConfig.heap_reuse``, the default):
        the activations count :data:`TRAIN_HEAP_SLACK` times.
    """
    if batch % ranks:
        raise PlanError(
            f"a global batch of {batch} does not split into {ranks} equal local batches; "
            f"use a batch that is a multiple of {ranks}"
        )
    local = batch // ranks
    s1, s2 = _probe_sides(config)
    # The probe batch of 2 keeps batch norm's training statistics defined at the bottom level.
    (p1, _), (p2, f2) = (
        _train_probe(config, growth, s, 2, precision, checkpointing) for s in (s1, s2)
    )
    d = config.dim
    slope = (p2 - p1) / (s2**d - s1**d)
    per_sample = slope * resolution**d / 2 + 4 * resolution**d  # + the float32 ν of the batch
    if heap_reuse:
        per_sample *= TRAIN_HEAP_SLACK
    # Weights and Adam's two moments exist before the probe counts; gradients are counted.
    params = _param_bytes(config, growth)
    fixed = 3 * params + max(0.0, p1 - slope * s1**d)
    comm = params if ranks > 1 else 0
    total = RUNTIME_BYTES + fixed + comm + per_sample * local
    flops = f2 / (2 * s2**d) * resolution**d * local
    seconds = flops / (machine_gflops() * 1e9)
    detail = (
        f"train {d}D {resolution}^{d}, batch {batch} ({local} per rank × {ranks}), {precision}"
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
) -> Estimate:
    """Peak memory of tiled prediction of one field, summed over ``workers`` processes.

    ``tile`` is in owned nodes per side, or per axis (None: untiled); each worker streams one
    tile box at a time along z (:class:`~mgtoolkit.infer.stream.StreamedUNet`, ``planes``
    node planes per step), so its memory grows with the box's z-plane area, not its depth.
    The box is the tile plus the receptive-field halo on both sides, aligned to the pooling
    grid. Time is for the whole field on the machine (workers share its cores), halo
    recomputation included. ``coordinator`` adds the process that runs the dask client,
    scheduler and nannies of :func:`mgtoolkit.infer.predict_store` and receives each tile's
    u block before writing it.
    """
    from mgtoolkit.infer.tiles import tiles

    d, n = config.dim, resolution
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
    per_worker = HEAP_SLACK * live + block + _param_bytes(config, growth)
    total_cells = sum(_prod(size) for size in sizes)
    total = workers * (INFER_RUNTIME_BYTES + per_worker)
    if coordinator:
        total += INFER_RUNTIME_BYTES + block
    seconds = _infer_flops(config, growth, 2 * m) * total_cells / (machine_gflops() * 1e9)
    detail = (
        f"predict {d}D {n}^{d}: {len(sizes)} tile(s) of ≤ {max(map(_prod, sizes)):,} cells "
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
) -> tuple[int, ...]:
    """The tiling (owned nodes per axis) with the least halo recomputation that fits ``memory``.

    Tiles span the whole first axis (streamed, so its length costs no memory) and split each
    other axis into 1..8 near-equal ranges. ``memory`` (bytes, for the ``workers`` processes
    together) defaults to :data:`DEFAULT_FILL` of this machine's memory.

    Raises
    ------
    PlanError
        Not even the smallest tiles fit.
    """
    import itertools

    memory = _default_memory(1) if memory is None else int(memory)
    n, best = resolution, None
    for ks in itertools.combinations_with_replacement(range(1, 9), config.dim - 1):
        tile = (n + 1, *(-(-(n + 1) // k) for k in ks))
        est = inference_estimate(config, resolution=n, tile=tile, workers=workers, growth=growth)
        if est.bytes <= memory and (best is None or est.seconds < best[1].seconds):
            best = (tile, est)
    if best is None:
        side = -(-(n + 1) // 8)
        smallest = inference_estimate(
            config,
            resolution=n,
            tile=(n + 1,) + (side,) * (config.dim - 1),
            workers=workers,
            growth=growth,
        )
        raise PlanError(
            f"no tiling of a {n}^{config.dim} field fits in {memory / GiB:.1f} GiB with "
            f"{workers} worker(s): even 8 tiles per side need {smallest.gib:.1f} GiB; use fewer "
            "workers or free memory"
        )
    return best[0]


# ----------------------------------------------------------------------------- the plan


def _default_memory(ranks: int) -> int:
    import psutil

    return int(psutil.virtual_memory().total * DEFAULT_FILL / ranks)


@dataclass(frozen=True)
class Plan:
    """Estimates for one configuration and the verdict against ``memory`` bytes per rank.

    Attributes
    ----------
    train, infer, fem : Estimate or None
        Per-rank training (per global mini-batch), tiled prediction of one field, FEM solve.
    memory : int
        Bytes available per rank (per process for ``infer``'s workers together).
    suggestions : dict
        For each phase that does not fit, settings that would (phase → list of strings).
    """

    settings: dict
    memory: int
    train: Estimate | None = None
    infer: Estimate | None = None
    fem: Estimate | None = None
    suggestions: dict = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        return not self.suggestions

    def __str__(self) -> str:
        s = self.settings
        lines = [
            f"plan: {s['dim']}D U-Net depth {s['depth']}, {s['base_filters']} filters, "
            f"resolution {s['resolution']}, memory {self.memory / GiB:.1f} GiB per rank"
        ]
        for name in ("train", "infer", "fem"):
            est = getattr(self, name)
            if est is not None:
                verdict = "fits" if name not in self.suggestions else "DOES NOT FIT"
                lines.append(
                    f"  {name:<5} {est.gib:6.2f} GiB  {_duration(est.seconds):>9}  {verdict}"
                    f"  — {est.detail}"
                )
        for name, tips in self.suggestions.items():
            lines.append(f"  {name} would fit with: " + "; or ".join(tips))
        return "\n".join(lines)

    def check(self) -> Plan:
        """Return self if everything fits, else raise :class:`PlanError` with the suggestions."""
        if self.suggestions:
            raise PlanError(
                f"this configuration does not fit in {self.memory / GiB:.1f} GiB per rank:\n{self}"
            )
        return self


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def plan(
    config,
    *,
    resolution: int,
    batch: int = 1,
    precision: str = "fp32",
    checkpointing: bool = False,
    ranks: int = 1,
    heap_reuse: bool = True,
    tile: int | None = None,
    workers: int = 1,
    growth: int = 0,
    memory: int | None = None,
    phases: tuple[str, ...] = ("train", "infer", "fem"),
) -> Plan:
    """Estimate memory and time of training, tiled prediction and the FEM solve, and judge them.

    Parameters
    ----------
    config : mgtoolkit.nn.UNetConfig
        The network.
    resolution : int
        Cells per side (a power of two).
    batch, precision, checkpointing, ranks, growth, heap_reuse
        Training settings (see :func:`training_estimate`).
    tile, workers
        Tiled prediction (owned nodes per tile side, dask worker processes).
    memory : int, optional
        Bytes available per rank (and to the prediction's workers together). Default
        :data:`DEFAULT_FILL` of this machine's memory divided by ``ranks``.
    phases : tuple of str
        Which of "train", "infer", "fem" to estimate.

    Returns
    -------
    Plan
        ``plan.fits`` and ``str(plan)``; ``plan.check()`` raises :class:`PlanError` (a
        ValueError) naming settings that would fit — checkpointing, bf16, more ranks, a
        smaller batch, a smaller tile or fewer workers.
    """
    from mgtoolkit.grids import check_resolution
    from mgtoolkit.nn.memory import PRECISIONS

    check_resolution(resolution)
    unknown = set(phases) - {"train", "infer", "fem"}
    if unknown:
        raise ValueError(f"phases must be among train, infer, fem (got {sorted(unknown)})")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    for name, value in (("batch", batch), ("ranks", ranks), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer (got {value!r})")
    memory = _default_memory(ranks) if memory is None else int(memory)
    settings = {
        **config.to_dict(),
        "resolution": resolution,
        "batch": batch,
        "precision": precision,
        "checkpointing": checkpointing,
        "ranks": ranks,
        "heap_reuse": heap_reuse,
        "tile": tile,
        "workers": workers,
        "growth": growth,
    }
    train_kw = dict(
        resolution=resolution,
        batch=batch,
        precision=precision,
        checkpointing=checkpointing,
        ranks=ranks,
        growth=growth,
        heap_reuse=heap_reuse,
    )
    result = Plan(settings, memory)
    suggestions: dict[str, list[str]] = {}
    if "train" in phases:
        result = replace(result, train=training_estimate(config, **train_kw))
        if result.train.bytes > memory:
            suggestions["train"] = _train_alternatives(config, train_kw, memory)
    if "infer" in phases:
        infer_kw = dict(resolution=resolution, tile=tile, workers=workers, growth=growth)
        result = replace(result, infer=inference_estimate(config, **infer_kw))
        if result.infer.bytes > memory:
            suggestions["infer"] = _infer_alternatives(config, infer_kw, memory)
    if "fem" in phases:
        result = replace(result, fem=fem_estimate(config.dim, resolution=resolution))
        if result.fem.bytes > memory:
            suggestions["fem"] = [
                f"a machine with ≥ {result.fem.gib / DEFAULT_FILL:.0f} GiB (the solver holds "
                "the whole field), or a coarser level"
            ]
    return replace(result, suggestions=suggestions)


def _train_alternatives(config, kw: dict, memory: int) -> list[str]:
    """Settings (changed from ``kw``) whose training estimate fits, cheapest change first."""
    tips = []
    options = []
    if kw["heap_reuse"]:
        options.append(("heap_reuse=False (slower steps)", {"heap_reuse": False}))
    if not kw["checkpointing"]:
        options.append(("checkpointing=True", {"checkpointing": True}))
    if kw["precision"] == "fp32":
        options.append(("precision='bf16'", {"precision": "bf16"}))
        if not kw["checkpointing"]:
            options.append(
                (
                    "checkpointing=True, precision='bf16'",
                    {"checkpointing": True, "precision": "bf16"},
                )
            )
    for ranks in (2, 4, 8, 16, 32, 64, 128, 256):
        if ranks > kw["ranks"] and kw["batch"] % ranks == 0:
            options.append(
                (f"ranks={ranks} ({kw['batch'] // ranks} samples per rank)", {"ranks": ranks})
            )
    for batch in range(kw["batch"] - kw["ranks"], 0, -kw["ranks"]):
        options.append((f"batch={batch}", {"batch": batch}))
    found_ranks = found_batch = False
    for label, change in options:
        is_ranks, is_batch = "ranks" in change, "batch" in change
        if (is_ranks and found_ranks) or (is_batch and found_batch):
            continue
        est = training_estimate(config, **{**kw, **change})
        if est.bytes <= memory:
            tips.append(f"{label}: {est.gib:.1f} GiB per rank")
            found_ranks |= is_ranks
            found_batch |= is_batch
    return tips or [
        "nothing with this network at this resolution: train on coarser levels, or use a "
        "smaller network (base_filters, depth)"
    ]


def _infer_alternatives(config, kw: dict, memory: int) -> list[str]:
    """The largest tile (for the given workers, then for one worker) that fits."""
    tips = []
    n = kw["resolution"]
    for workers in sorted({kw["workers"], 1}, reverse=True):
        try:
            tile = suggest_tile(
                config, resolution=n, memory=memory, workers=workers, growth=kw["growth"]
            )
        except PlanError:
            continue
        est = inference_estimate(config, **{**kw, "tile": tile, "workers": workers})
        tips.append(
            f"tile={','.join(map(str, tile))}, workers={workers}: {est.gib:.1f} GiB, "
            f"~{_duration(est.seconds)}"
        )
    return tips or ["no tile size fits: free memory or use a machine with more"]
