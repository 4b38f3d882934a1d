"""The slab cases of ``test_slab_unet`` under an MPI launcher (halos and sums over MPI).

``mpirun -n 2 python tests/spatial/slab_mpi.py OUT.pt``: every rank joins the world from the
launcher's environment, runs the cases and rank 0 saves every rank's errors (gathered with
``all_gather_object``) and the halo transport.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from test_slab_unet import MPI_CASES, _cases

from mgtoolkit import comm
from mgtoolkit.comm.ranks import init_from_environment


def main() -> None:
    torch.set_num_threads(1)
    info = init_from_environment()
    mine = {
        "errors": _cases(MPI_CASES),
        "transport": comm.transport(torch.zeros(1, dtype=torch.float64)),  # sums and halos
    }
    everyone = [None] * info.size
    dist.all_gather_object(everyone, mine)
    if info.rank == 0:
        torch.save(everyone, sys.argv[1])


if __name__ == "__main__":
    main()
