"""Any mgtoolkit command as one rank of a batch launch.

    mpirun -n 4 python -m mgtoolkit.dist train cfg.toml
    srun -n 4 python -m mgtoolkit.dist train cfg.toml
    torchrun --nproc-per-node 4 -m mgtoolkit.dist train cfg.toml

starts ``torch.distributed`` from the launcher's environment (:func:`init_from_environment`:
MPI, Slurm or torchrun variables; gloo on CPU, NCCL on GPU), then runs the command on every
rank. Only rank 0 writes to stdout. A plain ``python -m mgtoolkit.dist ...`` is one rank.
"""

from __future__ import annotations

import contextlib
import os
import sys


def main(argv: list[str] | None = None) -> int:
    import torch.distributed as dist

    from mgtoolkit.cli import main as cli_main
    from mgtoolkit.dist.env import init_from_environment

    info = init_from_environment()
    try:
        if info.rank == 0:
            return cli_main(argv)
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            return cli_main(argv)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
