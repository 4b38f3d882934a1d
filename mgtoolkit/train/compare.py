"""Base vs multigrid cycles: time to the same accuracy (the paper's Table 1 and Fig. 7).

Every cycle is trained from the same initial weights (same seed) on the same samples, with the
same optimizer, until the finest-level validation metric reaches the target (or the cycle's
schedule ends). Time is *training* time (forward, backward, update, data), measured by the
trainer; validation and checkpoints are excluded. Speed-up = base time / cycle time.

A speed-up means something only at an accuracy base itself reaches: ``target="base"`` trains
base under its own rule first (give it the patience to plateau) and times every cycle to the
value base ends with.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from dataclasses import dataclass
from pathlib import Path

from mgtoolkit.cycles import canonical_name
from mgtoolkit.train.config import TrainConfig
from mgtoolkit.train.events import Listener
from mgtoolkit.train.report import RunResult
from mgtoolkit.train.trainer import train

__all__ = ["Comparison", "compare_cycles"]


@dataclass
class Comparison:
    """Results of :func:`compare_cycles`.

    Attributes
    ----------
    target_metric, target : str, float
    target_from_base : bool
        Whether ``target`` is the value base's own run ended with (``target="base"``).
    results : dict
        Cycle name → :class:`~mgtoolkit.train.RunResult` ("base" first).
    rows : list of dict
        The table: cycle, reached, time_to_target_s, speedup, final_loss, val_energy_gap,
        val_rel_l2, train_s, and ``share_level<l>`` (fraction of training time per level).
    table : str
        The table as aligned text.
    plot : Path or None
        The PNG written (None when matplotlib is missing).
    """

    target_metric: str
    target: float
    results: dict[str, RunResult]
    rows: list[dict]
    table: str
    plot: Path | None
    target_from_base: bool = False


def compare_cycles(
    config: TrainConfig,
    cycles: tuple[str, ...] | list[str] = ("half-V",),
    *,
    out_dir: str | Path,
    target: float | str | None = None,
    target_metric: str | None = None,
    listeners: tuple[Listener, ...] | list[Listener] = (),
    progress: bool = True,
    plot: bool = True,
) -> Comparison:
    """Train "base" and each of ``cycles`` to the same target and compare them.

    Parameters
    ----------
    config : TrainConfig
        The shared settings; its ``cycle`` section gives the levels and rules, ``cycle.name``
        is replaced per run (per-step ``overrides`` are dropped: step indices differ between
        cycles). The store must hold u_fem at level 1 (validation vs FEM).
    cycles : sequence of str
        Named cycles to compare with base ("V", "W", "F", "half-V").
    out_dir : path-like
        One run directory per cycle (``out_dir/<cycle>``), ``comparison.csv``,
        ``comparison.md`` and ``comparison.png``. Existing runs there are resumed.
    target : float or "base", optional
        Default: the config's; required here or there. "base": base trains with no target,
        until its early-stopping rule (``config.cycle.patience`` / ``max_epochs``) ends it, and
        the target is the metric its last validation reports; base's time to target is the
        training time of its first validation at or below that value.
    target_metric : str, optional
        Default: the config's.
    listeners, progress
        Passed to every run.
    plot : bool
        Write ``comparison.png`` (needs matplotlib).
    """
    target = config.target if target is None else target
    target_metric = target_metric or config.target_metric
    if target is None:
        raise ValueError(
            "compare-cycles needs a target: e.g. --target 0.01 --metric energy_gap "
            "(or target = 0.01 in the config)"
        )
    from_base = isinstance(target, str)
    if from_base and target != "base":
        raise ValueError(
            f'target must be a number or "base" (the value base ends with), got {target!r}'
        )
    key = f"val_{target_metric}"
    names = ["base"] + [canonical_name(c) for c in cycles if canonical_name(c) != "base"]
    out_dir = Path(out_dir)
    results: dict[str, RunResult] = {}
    for name in names:
        cfg = dataclasses.replace(
            config,
            cycle=dataclasses.replace(config.cycle, name=name, sequence=None, overrides={}),
            target=None if from_base and name == "base" else target,
            target_metric=target_metric,
        )
        result = train(cfg, out_dir / name, listeners=listeners, progress=progress)
        if "val_energy_gap" not in result.validation:
            raise ValueError(
                f"store {config.data.store} has no u_fem at level 1, so no run can reach a "
                f"target {target_metric}; add it with `mgtoolkit fem solve "
                f"{config.data.store} --level 1`"
            )
        if from_base and name == "base":
            target = result.validation[key]
            first = min(v["wall_s"] for v in result.validations if v.get(key, math.inf) <= target)
            result = dataclasses.replace(result, time_to_target_s=first)
        results[name] = result
    rows = _rows(results)
    table = _table(rows, target_metric, target, from_base=from_base)
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    (out_dir / "comparison.csv").write_text(buf.getvalue())
    (out_dir / "comparison.md").write_text(table + "\n")
    png = _plot(results, target_metric, target, out_dir / "comparison.png") if plot else None
    return Comparison(target_metric, target, results, rows, table, png, from_base)


def _rows(results: dict[str, RunResult]) -> list[dict]:
    base = results["base"]
    levels = sorted({lv for r in results.values() for lv in r.level_wall_s})
    rows = []
    for name, r in results.items():
        reached = r.time_to_target_s is not None
        base_t = base.time_to_target_s
        t = r.time_to_target_s
        # A target met by the untrained network (t = 0) gives no speed-up to speak of.
        speedup = base_t / t if reached and base_t is not None and t > 0 else math.nan
        total = sum(r.level_wall_s.values()) or 1.0
        row = {
            "cycle": name,
            "reached": reached,
            "time_to_target_s": r.time_to_target_s if reached else math.nan,
            "speedup": speedup,
            "final_loss": r.final_loss,
            "val_energy_gap": r.validation.get("val_energy_gap", math.nan),
            "val_rel_l2": r.validation.get("val_rel_l2", math.nan),
            "train_s": r.wall_s,
        }
        row.update({f"share_level{lv}": r.level_wall_s.get(lv, 0.0) / total for lv in levels})
        rows.append(row)
    return rows


def _table(rows: list[dict], metric: str, target: float, *, from_base: bool) -> str:
    shares = [k for k in rows[0] if k.startswith("share_level")]
    head = ["cycle", "time to target s", "speed-up", "final loss", "energy gap", "rel L2"]
    head += [f"L{k.removeprefix('share_level')} share" for k in shares]
    source = " (the value base ends with)" if from_base else ""
    lines = [f"time to {metric} ≤ {target:.4g}{source} on held-out samples (finest level)", ""]
    body = []
    for r in rows:
        t = f"{r['time_to_target_s']:.2f}" if r["reached"] else "not reached"
        body.append(
            [
                r["cycle"],
                t,
                f"{r['speedup']:.2f}×" if math.isfinite(r["speedup"]) else "—",
                f"{r['final_loss']:.5g}",
                f"{r['val_energy_gap']:.3g}",
                f"{r['val_rel_l2']:.3g}",
                *[f"{100 * r[k]:.0f} %" for k in shares],
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    for cells in [head, *body]:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


def _plot(results: dict[str, RunResult], metric: str, target: float, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    key = f"val_{metric}"
    for name, r in results.items():
        pts = [(v["wall_s"], v[key]) for v in r.validations if key in v and v[key] > 0]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=".", label=name)
    ax.axhline(target, color="k", ls="--", lw=1, label="target")
    ax.set_yscale("log")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(f"validation {metric.replace('_', ' ')} (finest level)")
    ax.legend()
    levels = sorted({lv for r in results.values() for lv in r.level_wall_s})
    bottom = [0.0] * len(results)
    for lv in levels:
        vals = [r.level_wall_s.get(lv, 0.0) for r in results.values()]
        bx.bar(list(results), vals, bottom=bottom, label=f"level {lv}")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    bx.set_ylabel("training time (s)")
    bx.set_title("time per level")
    bx.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
