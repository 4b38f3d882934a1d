"""Megavoxel benchmark: 512³ generate → FEM solve → tiled predict on one machine, and the
training memory options (activation checkpointing, bf16), each against its target and the
planner's estimate.

Every phase runs in its own process tree; its peak memory is the peak of the summed resident
memory of that tree (the phase process and its dask workers), sampled every 50 ms, and for
single-process phases also the kernel's exact peak (getrusage ru_maxrss).

Usage (heavy: ~15 GiB at the FEM phase; run alone)::

    flock /tmp/mgtoolkit-heavy.lock .venv/bin/python benchmarks/megavoxel.py --out runs/megavoxel

``--phases`` picks a subset (generate fem predict summary train); ``--resolution`` a smaller
size for a dry run; ``--checkpoint`` a trained network (run dir or file) instead of an
untrained one (speed and memory do not depend on the weights); ``--predict-at N`` runs it on ν
coarsened to N³ and interpolates u (``UNet.predict_at``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

GiB = 2**30
#: Targets from the issue (peak GiB, seconds); None: no target.
TARGETS = {
    "generate": (2.0, None),
    "fem": (16.0, 180.0),
    "predict": (8.0, 180.0),
}
#: The network predicted: the paper's U-Net (depth 3, 16 filters, one conv per block).
MODEL = dict(dim=3, depth=3, base_filters=16, convs_per_block=1)
#: What the workers' tiles are chosen for: the 8 GiB target less the coordinating process
#: (client, scheduler and nanny, which also receives each tile's u block: ~0.8 GiB at 512³).
PREDICT_MEMORY = 7.0 * GiB


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_phase(argv: list[str]) -> dict:
    """Run ``megavoxel.py --run-phase ...`` as a child; return its JSON result and peak memory."""
    import psutil

    child = subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True)
    proc = psutil.Process(child.pid)
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            try:
                peak = max(peak, _tree_rss(proc))
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = child.communicate()
    stop.set()
    sampler.join()
    if child.returncode:
        raise SystemExit(f"phase {argv} failed with exit code {child.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["tree_peak_gib"] = peak / GiB
    return result


# --------------------------------------------------------------------------- phase bodies


def _self_peak() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB


def _cluster(workers: int, threads: int, *, single_arena: bool = False):
    from distributed import Client

    from mgtoolkit.cluster import local_cluster

    cluster = local_cluster(
        workers,
        threads_per_worker=threads,
        memory_limit=0,  # the benchmark measures memory; dask must not pause or kill workers
        single_arena=single_arena,
    )
    return cluster, Client(cluster)


def _net(checkpoint: str | None, predict_at: int | None):
    from mgtoolkit.nn import UNet, UNetConfig

    if checkpoint:
        from mgtoolkit.rundir import load_model

        return load_model(checkpoint, predict_at=predict_at)
    import torch

    torch.manual_seed(0)
    return UNet(UNetConfig(**MODEL), predict_at=predict_at).eval()


def phase_generate(store: Path, n: int, seed: int) -> dict:
    from mgtoolkit.data import generate

    cluster, client = _cluster(2, 1)
    with cluster, client:
        t0 = time.perf_counter()
        generate(
            store,
            dim=3,
            resolution=n,
            levels=3,
            samples=1,
            seed=seed,
            client=client,
            overwrite=True,
            progress=False,
        )
        seconds = time.perf_counter() - t0
    return {"seconds": seconds}


def phase_fem(store: Path, n: int) -> dict:
    from mgtoolkit.data import FemSolveFn, map_samples

    # One field: one worker process with both cores (torch threads), like `mgtoolkit fem solve
    # --threads 2` on a one-worker cluster.
    cluster, client = _cluster(1, 2)
    with cluster, client:
        t0 = time.perf_counter()
        map_samples(
            store, FemSolveFn(threads=2), level=1, name="u_fem", client=client, progress=False
        )
        seconds = time.perf_counter() - t0
    return {"seconds": seconds}


def phase_predict(
    store: Path, n: int, checkpoint: str | None, workers: int, predict_at: int | None
) -> dict:
    import zarr

    from mgtoolkit.infer import predict_store, receptive_halo
    from mgtoolkit.plan import suggest_tile

    group = zarr.open_group(str(store), mode="r+")["level1"]
    if "u_pred_complete" in group:  # a benchmark recomputes: forget an earlier prediction
        group["u_pred_complete"][:] = False
    net = _net(checkpoint, predict_at)
    tile = suggest_tile(
        net.config,
        resolution=n,
        memory=PREDICT_MEMORY,
        workers=workers,
        growth=net.growth,
        predict_at=predict_at,
    )
    cluster, client = _cluster(workers, max(1, (os.cpu_count() or 1) // workers), single_arena=True)
    with cluster, client:
        t0 = time.perf_counter()
        predict_store(store, net, level=1, tile=tile, client=client, progress=False)
        seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "tile": list(tile),
        "halo": receptive_halo(net.config, net.growth),
        "workers": workers,
    }


def phase_summary(store: Path, n: int) -> dict:
    """Errors of u_pred against u_fem (streamed in slabs) and the energy gap (float64)."""
    import numpy as np
    import torch
    import zarr

    from mgtoolkit.fem import energy

    group = zarr.open_group(str(store), mode="r")["level1"]
    nu, u_fem, u_pred = group["nu"], group["u_fem"], group["u_pred"]
    diff2 = ref2 = 0.0
    max_abs = 0.0
    step = u_fem.chunks[1]
    for z in range(0, n + 1, step):
        a = np.asarray(u_fem[0, z : z + step], dtype=np.float64)
        b = np.asarray(u_pred[0, z : z + step], dtype=np.float64)
        diff2 += float(((b - a) ** 2).sum())
        ref2 += float((a**2).sum())
        max_abs = max(max_abs, float(np.abs(b - a).max()))
    t_nu = torch.from_numpy(np.asarray(nu[0], dtype=np.float64))
    j_fem = float(energy(t_nu, torch.from_numpy(np.asarray(u_fem[0], dtype=np.float64))))
    j_pred = float(energy(t_nu, torch.from_numpy(np.asarray(u_pred[0], dtype=np.float64))))
    return {
        "rel_l2": (diff2 / ref2) ** 0.5,
        "max_abs": max_abs,
        "energy_gap": (j_pred - j_fem) / j_fem,
        "contrast": float(np.asarray(nu[0]).max() / np.asarray(nu[0]).min()),
    }


def phase_train(n: int, batch: int, precision: str, checkpointing: bool) -> dict:
    """One training configuration: mean time of 2 Adam steps after a warm-up, and the loss."""
    import torch

    from mgtoolkit.fem import energy
    from mgtoolkit.nn import UNet, UNetConfig
    from mgtoolkit.nn.memory import autocast, checkpoint_blocks

    torch.manual_seed(0)
    net = checkpoint_blocks(UNet(UNetConfig(dim=3)), enabled=checkpointing).train()
    opt = torch.optim.Adam(net.parameters())
    g = torch.Generator().manual_seed(1)
    nu = torch.exp(1.5 * torch.randn((batch,) + (n,) * 3, generator=g))
    times, losses = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast(precision, model=net):
            u = net(nu)
        loss = energy(nu, u).mean()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    return {"step_seconds": sum(times[1:]) / 2, "losses": losses}


# --------------------------------------------------------------------------- driver


def _line(name: str, r: dict, estimate=None) -> str:
    peak = max(r["tree_peak_gib"], r.get("self_peak_gib", 0.0))
    target_mem, target_s = TARGETS.get(name, (None, None))
    text = f"{name:<9} peak {peak:6.2f} GiB"
    if target_mem is not None:
        text += f" (target ≤ {target_mem:g}: {'ok' if peak <= target_mem else 'MISSED'})"
    if "seconds" in r:
        text += f"   time {r['seconds']:7.1f} s"
        if target_s is not None:
            text += f" (target ≤ {target_s:g}: {'ok' if r['seconds'] <= target_s else 'MISSED'})"
    if estimate is not None:
        text += f"   planner {estimate.gib:.2f} GiB"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/megavoxel", help="working directory")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument(
        "--phases", nargs="+", default=["generate", "fem", "predict", "summary", "train"]
    )
    parser.add_argument("--checkpoint", default=None, help="trained network (run dir or file)")
    parser.add_argument(
        "--predict-workers", type=int, default=1, help="dask workers for predict (cores split)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="field seed (a packaged model's unseen: 10000)"
    )
    parser.add_argument(
        "--predict-at", type=int, default=None, help="run the network at N³, interpolate u"
    )
    parser.add_argument("--train-resolution", type=int, default=64)
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--run-phase", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = Path(args.out)
    store = out / f"megavoxel{args.resolution}.zarr"
    n = args.resolution

    if args.run_phase:  # inside a child process
        phase = args.run_phase
        if phase == "generate":
            result = phase_generate(store, n, args.seed)
        elif phase == "fem":
            result = phase_fem(store, n)
        elif phase == "predict":
            result = phase_predict(store, n, args.checkpoint, args.predict_workers, args.predict_at)
        elif phase == "summary":
            result = phase_summary(store, n)
        else:
            result = phase_train(
                args.train_resolution, args.train_batch, args.precision, args.checkpointing
            )
        result["self_peak_gib"] = _self_peak()
        print(json.dumps(result))
        return 0

    import psutil
    import torch

    from mgtoolkit.nn import UNetConfig
    from mgtoolkit.plan import fem_estimate, inference_estimate, training_estimate

    out.mkdir(parents=True, exist_ok=True)
    print(
        f"megavoxel benchmark: {n}^3, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / GiB:.1f} GiB RAM, torch {torch.__version__}, "
        f"store {store}"
    )
    common = ["--out", str(out), "--resolution", str(n)]
    common += ["--predict-workers", str(args.predict_workers), "--seed", str(args.seed)]
    if args.checkpoint:
        common += ["--checkpoint", args.checkpoint]
    if args.predict_at:
        common += ["--predict-at", str(args.predict_at)]
    for phase in ("generate", "fem", "predict", "summary"):
        if phase not in args.phases:
            continue
        r = run_phase([*common, "--run-phase", phase])
        est = None
        if phase == "fem":
            est = fem_estimate(3, resolution=n)
        elif phase == "predict":
            est = inference_estimate(
                UNetConfig(**MODEL),
                resolution=n,
                predict_at=args.predict_at,
                tile=tuple(r["tile"]),
                workers=r["workers"],
                coordinator=True,
            )
        if phase == "summary":
            print(
                f"summary   u_pred vs u_fem: rel L2 {r['rel_l2']:.3e}, max |Δu| "
                f"{r['max_abs']:.3e}, energy gap {r['energy_gap']:.3e} (contrast "
                f"{r['contrast']:.2e}; an untrained network unless --checkpoint)"
            )
        else:
            print(
                _line(phase, r, est)
                + (
                    f"   tile {tuple(r['tile'])}, halo {r['halo']} cells, {r['workers']} worker(s)"
                    if phase == "predict"
                    else ""
                )
            )
        sys.stdout.flush()
    if "train" in args.phases:
        tn, tb = args.train_resolution, args.train_batch
        print(
            f"training step, 3D U-Net (depth 3, 16 filters, 2 convs per block), {tn}^3 × "
            f"batch {tb}: peak memory (process) / time per Adam step / planner estimate"
        )
        base = None
        for precision, ckpt in (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)):
            flags = ["--precision", precision] + (["--checkpointing"] if ckpt else [])
            r = run_phase(
                [
                    *common,
                    "--run-phase",
                    "train",
                    "--train-resolution",
                    str(tn),
                    "--train-batch",
                    str(tb),
                    *flags,
                ]
            )
            est = training_estimate(
                UNetConfig(dim=3), resolution=tn, batch=tb, precision=precision, checkpointing=ckpt
            )
            base = base or r
            label = f"{precision}{' + checkpointing' if ckpt else ''}"
            dloss = abs(r["losses"][0] - base["losses"][0]) / abs(base["losses"][0])
            mem, sec = r["self_peak_gib"], r["step_seconds"]
            print(
                f"  {label:<22} {mem:5.2f} GiB ({mem / base['self_peak_gib']:.2f}×)"
                f"   {sec:6.2f} s ({sec / base['step_seconds']:.2f}×)"
                f"   planner {est.gib:.2f} GiB   first loss rel. diff vs fp32 {dloss:.1e}"
            )
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
