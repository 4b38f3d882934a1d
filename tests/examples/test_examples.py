"""The batch examples: configs load, scripts are valid bash, every mgtoolkit line parses."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from mgtoolkit.cli import build_parser
from mgtoolkit.train import load_config

EXAMPLES = Path(__file__).parents[2] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".sh", ".sbatch", ".pbs"))
CONFIGS = sorted(EXAMPLES.glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_configs_load(path):
    config = load_config(path)
    schedule = config.cycle.build()
    assert schedule.coarsest <= config.cycle.levels
    assert Path(config.data.store).is_absolute()  # resolved relative to the file


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_valid_bash(path):
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def mgtoolkit_commands(path: Path) -> list[list[str]]:
    """The arguments of every ``python -m mgtoolkit ...`` command (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
        m = re.search(r"python -m mgtoolkit (.*)", line)
        if m:
            args = re.sub(r"\$\{?(\w+)[^}\s\"]*\}?", r"\1", m.group(1))  # "$CONFIG" → CONFIG
            out.append(shlex.split(args))
    return out


@pytest.mark.parametrize(
    "path", [p for p in SCRIPTS if "python -m mgtoolkit" in p.read_text()], ids=lambda p: p.name
)
def test_mgtoolkit_command_lines_parse(path):
    commands = mgtoolkit_commands(path)
    parser = build_parser()
    for args in commands:
        parsed = parser.parse_args(args)  # SystemExit (a failure) on unknown options
        assert hasattr(parsed, "run"), args


def test_sbatch_uses_srun_and_pbs_uses_mpirun():
    sbatch = (EXAMPLES / "slurm_train.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node" in sbatch and "\nsrun " in sbatch
    assert "\nmpirun -n" in (EXAMPLES / "pbs_train.pbs").read_text()
