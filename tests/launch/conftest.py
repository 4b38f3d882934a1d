"""Make the helper module ``toy`` importable here (spawned ranks and LocalCluster workers
inherit sys.path; Slurm job workers get it through PYTHONPATH in their prologue)."""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
