"""Execute the notebooks at CI size (MGTOOLKIT_SMALL=1) in a real kernel, in a tmp directory.

Here notebook 02 runs with every cycle (the browser test runs it with half-V only). Notebooks 01,
03 and 04 run in tests/browser (JupyterLab in Chromium), which executes every cell too: 01 while
its run trains, 03 against this machine's batch system (Slurm in CI).
"""

from __future__ import annotations

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
    assert names == set(EXPECTED) | {"01_quickstart.ipynb", "03_hpc.ipynb", "04_fields_3d.ipynb"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
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
