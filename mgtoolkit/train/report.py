"""What a run reports: its result, the metrics table and the final report files."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from mgtoolkit.cycles import Schedule
from mgtoolkit.rundir import RunDir, atomic_write_text
from mgtoolkit.train.config import TrainConfig

__all__ = ["RunResult", "write_metrics", "write_report"]


@dataclass
class RunResult:
    """What a finished (or target-stopped) run did.

    Attributes
    ----------
    run_dir : Path
    reason : str
        "schedule complete", "target reached" or "stopped" (by
        :func:`mgtoolkit.rundir.request_stop`; the checkpoint then resumes the run).
    wall_s : float
        Training seconds (forward/backward/update and data), excluding validation and
        checkpoint writing.
    elapsed_s : float
        Wall seconds of the whole run, across resumes.
    time_to_target_s : float or None
        Training seconds when the target was first reached (None: no target or not reached).
    final_loss : float
        Mean loss of the last epoch.
    validation : dict
        Last finest-level validation metrics (``val_energy_gap``, ``val_rel_l2``, ...).
    level_wall_s : dict
        Training seconds per level.
    steps : list of dict
        One row per finished step (the metrics table).
    validations : list of dict
        Every validation event of the run.
    """

    run_dir: Path
    reason: str
    wall_s: float
    elapsed_s: float
    time_to_target_s: float | None
    final_loss: float
    validation: dict
    level_wall_s: dict[int, float]
    steps: list[dict] = field(default_factory=list)
    validations: list[dict] = field(default_factory=list)


def write_metrics(run: RunDir, rows: list[dict]) -> None:
    """``metrics.csv``: one row per finished step (nothing before the first)."""
    if not rows:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run.metrics, buf.getvalue())


def write_report(run: RunDir, r: RunResult, *, schedule: Schedule, config: TrainConfig) -> None:
    """``metrics.csv``, ``report.json`` and ``report.md`` of a finished (or stopped) run."""
    write_metrics(run, r.steps)
    summary = {
        "reason": r.reason,
        "wall_s": r.wall_s,
        "elapsed_s": r.elapsed_s,
        "time_to_target_s": r.time_to_target_s,
        "final_loss": r.final_loss,
        "validation": r.validation,
        "level_wall_s": {str(k): v for k, v in r.level_wall_s.items()},
        "steps": r.steps,
    }
    atomic_write_text(run.report_json, json.dumps(summary, indent=2) + "\n")
    total = sum(r.level_wall_s.values()) or 1.0
    lines = [
        f"# Training run {run.name}",
        "",
        "```",
        str(schedule),
        "```",
        "",
        f"- finished: {r.reason}",
        f"- training time: {r.wall_s:.2f} s (run elapsed {r.elapsed_s:.2f} s)",
        f"- final epoch loss: {r.final_loss:.6g}",
    ]
    if r.time_to_target_s is not None:
        lines.append(
            f"- target {config.target_metric} ≤ {config.target:g} reached after "
            f"{r.time_to_target_s:.2f} s of training"
        )
    for key, label in (
        ("val_energy_gap", "validation energy gap vs FEM"),
        ("val_rel_l2", "validation relative L2 error vs FEM"),
        ("val_max_abs", "validation max abs error vs FEM"),
    ):
        if key in r.validation:
            lines.append(f"- {label}: {r.validation[key]:.4g}")
    if "val_energy_gap" not in r.validation:
        lines.append("- no u_fem in the store: add it with `mgtoolkit fem solve` for errors vs FEM")
    lines += ["", "| level | training s | share |", "|---|---|---|"]
    for lv, w in r.level_wall_s.items():
        lines.append(f"| {lv} | {w:.2f} | {100 * w / total:.1f} % |")
    lines += ["", "| step | level | epochs | loss | s | rel L2 |", "|---|---|---|---|---|---|"]
    for row in r.steps:
        lines.append(
            f"| {row['step'] + 1} | {row['level']} | {row['epochs']} | {row['loss']:.5g} "
            f"| {row['wall_s']:.2f} | {row['val_rel_l2']:.4g} |"
        )
    atomic_write_text(run.report_md, "\n".join(lines) + "\n")
