"""Strong and weak scaling of data-parallel training steps (speed-up and efficiency).

The same training step — the U-Net on ν, the FEM energy loss, backward, gradient all-reduce,
Adam — runs on p = 1, 2, … local ranks (real processes over gloo, ``threads_per_rank`` torch
threads each). Per step we time *compute* (forward, backward — including the synchronized
batch norm's small all-reduces — and the optimizer) and *all-reduce* (:func:`average_gradients`,
which includes waiting for the slowest rank).

T1 is one process without any process group — the serial trainer, plain batch norm, no
communication — so that E charges the parallel run with everything it adds.

- strong scaling: fixed global batch B, local batch B/p; S = T1/Tp, E = T1/(p·Tp);
- weak scaling: fixed local batch B, global batch p·B; E = T1/Tp (S = p·E).

With ``bound=True`` each p > 1 also runs p *independent* copies of the serial step at the same
local batch (they start together, then never communicate: plain batch norm, no gradient
all-reduce): ``efficiency_bound`` is the efficiency those reach — what the cores and memory of
the machine allow before any communication.

E ≥ 0.8 is the admissible efficiency (docs/math.md, 'Scaling metrics').
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

__all__ = ["ADMISSIBLE_EFFICIENCY", "ScalingRow", "format_table", "measure", "plot"]

#: The minimum admissible parallel efficiency.
ADMISSIBLE_EFFICIENCY = 0.8


@dataclass(frozen=True)
class ScalingRow:
    """One (mode, p) measurement; times are medians over the timed steps, in seconds."""

    mode: str
    ranks: int
    global_batch: int
    local_batch: int
    step_s: float
    compute_s: float
    allreduce_s: float
    speedup: float
    efficiency: float
    efficiency_bound: float | None = None

    @property
    def samples_per_s(self) -> float:
        return self.global_batch / self.step_s

    def to_dict(self) -> dict:
        return {**asdict(self), "samples_per_s": self.samples_per_s}


def _steps(
    model: dict, n: int, local_batch: int, steps: int, warmup: int, communicate: bool = True
) -> dict:
    """One rank: time ``warmup + steps`` training steps; return medians (rank 0's view).

    Without a process group (p = 1) every :mod:`mgtoolkit.comm` call is the serial no-op, as in
    the single-process trainer. ``communicate=False``: the ranks only start together, then
    each runs the serial step on its own (the bound). The loop keeps freed memory in the heap,
    as the trainer does by default (``TrainConfig.heap_reuse``): otherwise every step's large
    activations are freshly mapped and zeroed by the kernel, a cost the ranks share.
    """
    import statistics

    import torch

    from mgtoolkit import comm
    from mgtoolkit.fem import energy
    from mgtoolkit.nn import UNet, UNetConfig
    from mgtoolkit.runtime import heap_reuse
    from mgtoolkit.train.optim import adam

    rank, _ = comm.world()
    cfg = UNetConfig(**model)
    torch.manual_seed(0)
    net = UNet(cfg)
    if communicate:
        net = comm.convert_sync_batchnorm(net)
        comm.broadcast_module(net)
    opt = adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1 + rank)
    # Timing does not depend on the values: a log-normal field with ν > 0 suffices.
    nu = torch.exp(torch.randn((local_batch,) + (n,) * cfg.dim, generator=gen))
    comm.all_reduce_sum(torch.zeros(1))  # start together
    times: dict[str, list[float]] = {"step": [], "compute": [], "allreduce": []}
    params = list(net.parameters())
    with heap_reuse():
        for k in range(warmup + steps):
            if communicate:
                comm.all_reduce_sum(torch.zeros(1))  # start each step together
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            energy(nu, net(nu)).mean().backward()
            t1 = time.perf_counter()
            if communicate:
                comm.average_gradients(params)
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
            if k >= warmup:
                times["step"].append(t3 - t0)
                times["compute"].append((t1 - t0) + (t3 - t2))
                times["allreduce"].append(t2 - t1)
    return {k: statistics.median(v) for k, v in times.items()}


def measure(
    *,
    model: dict | None = None,
    n: int = 64,
    ranks: tuple[int, ...] = (1, 2),
    batch: int = 8,
    steps: int = 10,
    warmup: int = 2,
    modes: tuple[str, ...] = ("strong", "weak"),
    threads_per_rank: int = 1,
    repeat: int = 1,
    bound: bool = False,
) -> list[ScalingRow]:
    """Run the scaling study on local processes.

    Parameters
    ----------
    model : dict, optional
        ``UNetConfig`` fields (default: the paper's U-Net, 2D).
    n : int
        Cells per side of the training fields.
    ranks : tuple of int
        World sizes to measure; the first is the reference (normally 1).
    batch : int
        Strong scaling: the global batch (each p must divide it). Weak: the local batch.
    steps, warmup : int
        Timed steps and untimed warm-up steps per run.
    modes : tuple of {"strong", "weak"}
    threads_per_rank : int
        torch threads per rank (1: one core per rank).
    repeat : int
        Runs per (mode, p); the fastest is kept (other load on the machine only slows down).
    bound : bool
        Also time p independent serial copies for every p > 1 (``efficiency_bound``).

    Returns
    -------
    list of ScalingRow
    """
    from mgtoolkit.grids import check_resolution
    from mgtoolkit.launch.spawn import spawn

    check_resolution(n)
    model = dict(model or {})
    for p in ranks:
        if "strong" in modes and batch % p:
            raise ValueError(
                f"strong scaling splits the global batch {batch} over {p} ranks: use a batch "
                f"that every rank count in {list(ranks)} divides"
            )
    rows: list[ScalingRow] = []
    timings: dict[tuple[int, int, bool], dict] = {}

    def timed(p: int, local: int, communicate: bool) -> dict:
        # Strong and weak share the p = 1 run, which has no process group (the serial code).
        key = (p, local, communicate)
        if key not in timings:
            runs = [
                spawn(_steps, p, model, n, local, steps, warmup, communicate,
                      threads_per_rank=threads_per_rank, process_group=p > 1)[0]
                for _ in range(repeat)
            ]  # fmt: skip
            timings[key] = min(runs, key=lambda t: t["step"])
        return timings[key]

    for mode in modes:
        if mode not in ("strong", "weak"):
            raise ValueError(f"mode must be 'strong' or 'weak' (got {mode!r})")
        base = None
        for p in ranks:
            local = batch // p if mode == "strong" else batch
            t = timed(p, local, True)
            base = base or (t["step"], p)
            # Normalised to the reference world size p1 (1 in the usual study).
            scale = base[0] * (base[1] / p if mode == "strong" else 1.0)
            eff = scale / t["step"]
            e_bound = scale / timed(p, local, False)["step"] if bound and p > base[1] else None
            rows.append(
                ScalingRow(
                    mode,
                    p,
                    local * p,
                    local,
                    t["step"],
                    t["compute"],
                    t["allreduce"],
                    eff * p / base[1],
                    eff,
                    e_bound,
                )
            )
    return rows


def format_table(rows: list[ScalingRow]) -> str:
    """A Markdown table of the rows (with the bound column when it was measured)."""
    with_bound = any(r.efficiency_bound is not None for r in rows)
    head = "| mode | p | global batch | step s | compute s | all-reduce s | all-reduce % | S | E |"
    lines = [
        head + (" E bound |" if with_bound else ""),
        "|---" * (10 if with_bound else 9) + "|",
    ]
    for r in rows:
        line = (
            f"| {r.mode} | {r.ranks} | {r.global_batch} | {r.step_s:.3f} | {r.compute_s:.3f} "
            f"| {r.allreduce_s:.4f} | {100 * r.allreduce_s / r.step_s:.1f} | {r.speedup:.2f} "
            f"| {r.efficiency:.2f} |"
        )
        if with_bound:
            line += f" {r.efficiency_bound:.2f} |" if r.efficiency_bound is not None else " — |"
        lines.append(line)
    return "\n".join(lines)


def plot(rows: list[ScalingRow], path) -> None:
    """Efficiency against p for each mode, with the admissible line E = 0.8 (PNG/SVG/PDF)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_e, ax_s) = plt.subplots(1, 2, figsize=(9, 3.5))
    for mode in dict.fromkeys(r.mode for r in rows):
        sel = [r for r in rows if r.mode == mode]
        ps = [r.ranks for r in sel]
        ax_e.plot(ps, [r.efficiency for r in sel], "o-", label=f"{mode} scaling")
        ax_s.plot(ps, [r.speedup for r in sel], "o-", label=f"{mode} scaling")
    all_p = sorted({r.ranks for r in rows})
    ax_e.axhline(ADMISSIBLE_EFFICIENCY, color="red", ls="--", label="E = 0.8 (admissible)")
    ax_e.set(xlabel="ranks p", ylabel="efficiency E", ylim=(0, 1.2), xticks=all_p)
    ax_s.plot(all_p, all_p, "k:", label="ideal")
    ax_s.set(xlabel="ranks p", ylabel="speed-up S", xticks=all_p)
    for ax in (ax_e, ax_s):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
