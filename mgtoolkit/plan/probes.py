"""Probes: run the real computation on small grids and count its live tensor bytes and flops."""

from __future__ import annotations

import functools
import time
import weakref

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
#: measured peaks of these three (in 3D, before :data:`CONV3D_SLACK` applied as well).
TRAIN_HEAP_SLACK = 1.3
#: Resident bytes per activation byte of 3D training beyond the tensors the probe counts: the
#: CPU kernels of 3D convolutions allocate work buffers that are not tensors. Measured in fresh
#: processes, the paper's block (depth 3, 16 filters, one conv per block), one thread, freed
#: memory returned: 1.30 at 64³ (0.66 GiB peak), 1.33 at 128³ (2.06 GiB).
CONV3D_SLACK = 1.3
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
def _train_probe(
    config, growth: int, side: int, batch: int, precision: str, ckpt: bool, slabs: bool = False
):
    """(peak live bytes, forward+backward FLOPs) of one Adam step of ``batch`` fields.

    ``slabs``: the network and loss as a slab of a spatial group runs them
    (:func:`mgtoolkit.spatial.to_slabs`, :func:`~mgtoolkit.spatial.slab_loss`), here on a group
    of one rank: every convolution copies its input with a halo plane on each side, as on an
    inner slab, so the probe counts those copies.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mgtoolkit.fem import energy
    from mgtoolkit.nn.memory import autocast, checkpoint_blocks

    torch.manual_seed(0)
    net = checkpoint_blocks(_model(config, growth), enabled=ckpt).train()
    opt = torch.optim.Adam(net.parameters())
    nu = torch.exp(torch.randn((batch,) + (side,) * config.dim))
    if slabs:
        from mgtoolkit.spatial import SlabLayout, slab_loss, to_slabs

        layout = SlabLayout(1, 0, 1)
        model = to_slabs(net, layout)

        def loss(u):
            return slab_loss("energy", nu, u.float(), layout)

    else:
        model = net

        def loss(u):
            return energy(nu, u.float()).mean()

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(precision, model=net):
            u = model(nu)
        loss(u).backward()
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
