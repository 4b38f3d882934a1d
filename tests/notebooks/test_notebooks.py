"""Execute the notebooks at CI size (MGTOOLKIT_SMALL=1) in a real kernel, in a tmp directory.

Notebook 01 runs in tests/browser (JupyterLab in Chromium), which executes every cell too;
notebook 03 runs against this machine's batch system (Slurm in CI) in its own test below.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"

#: Text each notebook must print (evidence that its main step ran, not only that nothing failed).
EXPECTED = {
    "02_cycles.ipynb": [
        "(the value base ends with) on held-out samples",
        "faster than base to the same accuracy",
        "speed-up",
        "finest-level epochs (finished)",
    ],
    "03_hpc.ipynb": ["#SBATCH", "#PBS", "module load", "finished (schedule complete)", "released:"],
    "04_fields_3d.ipynb": [
        "mean relative L2 error",
        "cells shown of",
        "out of range",
        "mgtoolkit fem solve",
    ],
}


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(parts)


def test_every_notebook_is_covered():
    names = {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    assert names == set(EXPECTED) | {"01_quickstart.ipynb"}


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"03_hpc.ipynb"}))
def test_notebook_runs_small(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MGTOOLKIT_SMALL", "1")  # the kernel inherits it
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "each notebook has one papermill-style parameters cell"
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()  # raises CellExecutionError, with the cell and traceback, on any error
    text = outputs_text(nb)
    for expected in EXPECTED[name]:
        assert expected in text, f"{name}: {expected!r} not in the outputs"


def test_hpc_notebook_on_this_machines_batch_system(tmp_path, monkeypatch):
    """Notebook 03 uses the batch system it finds: on a machine with Slurm (CI) its worker jobs
    and its sbatch job run there, and none is left in the queue afterwards."""
    monkeypatch.setenv("MGTOOLKIT_SMALL", "1")
    monkeypatch.delenv("MGTOOLKIT_SCHEDULER", raising=False)
    nb = nbformat.read(NOTEBOOKS / "03_hpc.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = outputs_text(nb)
    for expected in EXPECTED["03_hpc.ipynb"]:
        assert expected in text, f"03_hpc.ipynb: {expected!r} not in the outputs"
    if shutil.which("sinfo") is None and shutil.which("qstat") is None:
        assert "using: local (no Slurm or PBS here)" in text
        return
    assert shutil.which("sinfo"), "this test runs where Slurm is (CI): PBS is checked as text"
    assert "using: slurm (detected)" in text
    # job ids and queue state were shown while waiting for the workers
    assert re.search(r"\d/2 workers · slurm: job \d+ (PENDING|RUNNING|CONFIGURING)", text), text
    assert re.search(r"submitted batch job \d+", text)
    line = re.search(r"jobs of this notebook: ([\d, ]+) ->", text)
    assert line, text
    ids = [i.strip() for i in line.group(1).split(",")]
    assert len(ids) == 3, ids  # two worker jobs, one batch job
    # the batch job trained (its run directory has the events the monitor followed)
    events = (tmp_path / "hpc-output" / "runs" / "batch" / "events.jsonl").read_text()
    assert '"run_end"' in events
    queued = subprocess.run(
        ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not set(ids) & set(queued), f"jobs still queued after the notebook: {queued}"
    assert "released: [(" in text and "'finished')]" in text
