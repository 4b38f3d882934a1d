"""A short multigrid training run on a small 2D store, compared with the FEM reference."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from mgtoolkit.nn import UNetConfig
from mgtoolkit.train.config import CycleConfig, DataConfig, OptimConfig, TrainConfig
from mgtoolkit.train.trainer import RunResult, train

__all__ = ["quick_demo"]


def quick_demo(
    store: str | Path,
    out_dir: str | Path,
    *,
    cycle: str = "half-V",
    levels: int = 3,
    max_epochs: int = 40,
    val_samples: int = 8,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    echo=print,
) -> RunResult:
    """Train ``cycle`` on a small 2D store and print the held-out comparison with FEM.

    Parameters
    ----------
    store : path-like
        A 2D store with ≥ ``levels`` levels and u_fem at level 1 (``mgtoolkit fem solve``).
    out_dir : path-like
        The run directory (resumed if it exists).
    cycle, levels : str, int
        The training cycle; restriction steps train 3 epochs, the others stop early
        (patience 4, 0.5 %) or after ``max_epochs``.
    val_samples : int
        Held-out samples (the last ones of the store) for the comparison.
    echo : callable
        Where lines go (default ``print``).

    Returns
    -------
    RunResult
    """
    from mgtoolkit.data import LevelDataset, check_store
    from mgtoolkit.fem import solve
    from mgtoolkit.train.predict import sample_metrics

    attrs = check_store(store)
    config = TrainConfig(
        data=DataConfig(store=str(store), val_samples=val_samples),
        model=UNetConfig(dim=int(attrs["dim"])),
        cycle=CycleConfig(
            name=cycle,
            levels=levels,
            epochs=3,
            patience=4,
            min_rel_improvement=5e-3,
            max_epochs=max_epochs,
        ),
        optim=OptimConfig(batch_size=batch_size, lr=2e-3, loss="scaled_energy"),
        seed=seed,
    )
    echo(str(config.cycle.build()))
    result = train(config, out_dir, progress=progress)
    echo(f"\ntrained in {result.wall_s:.1f} s ({result.reason}); run directory {out_dir}")
    for lv, s in result.level_wall_s.items():
        echo(f"  level {lv}: {s:.1f} s")
    from mgtoolkit.train.predict import load_model

    model = load_model(out_dir)
    samples = list(range(int(attrs["samples"]) - val_samples, int(attrs["samples"])))
    ds = LevelDataset(store, 1, variables=("nu", "u_fem"), indices=samples)
    nu = torch.stack([ds[i]["nu"] for i in range(len(ds))])
    ref = torch.stack([ds[i]["u_fem"] for i in range(len(ds))])
    with torch.no_grad():
        t0 = time.perf_counter()
        u = model(nu)
        t_net = time.perf_counter() - t0
    t0 = time.perf_counter()
    solve(nu.double(), rtol=1e-8)
    t_fem = time.perf_counter() - t0
    echo(f"\nheld-out samples at {attrs['resolution']}^{attrs['dim']} vs FEM (u_fem):")
    echo(f"{'sample':>7} {'rel L2':>9} {'max abs':>9} {'energy gap':>11}")
    rows = [sample_metrics(nu[i], u[i], ref[i]) for i in range(len(samples))]
    for s, r in zip(samples, rows, strict=True):
        echo(f"{s:>7} {r['rel_l2']:>9.4f} {r['max_abs']:>9.4f} {r['energy_gap']:>11.2e}")
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    echo(f"{'mean':>7} {mean['rel_l2']:>9.4f} {mean['max_abs']:>9.4f} {mean['energy_gap']:>11.2e}")
    echo(
        f"time for {len(samples)} fields: network {t_net:.3f} s, FEM solve (rtol 1e-8) "
        f"{t_fem:.3f} s (CPU, batched)"
    )
    return result
