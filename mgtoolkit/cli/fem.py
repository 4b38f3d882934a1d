"""``mgtoolkit fem``: reference FEM solutions for a dataset store."""

from __future__ import annotations

from mgtoolkit.cli._options import add_scheduler_option

__all__ = ["register"]


def register(subparsers) -> None:
    parser = subparsers.add_parser("fem", help="finite-element reference solutions")
    sub = parser.add_subparsers(title="fem commands", metavar="COMMAND")
    sol = sub.add_parser(
        "solve",
        help="add the FEM solution u_fem (on nodes) to a dataset store",
        description="Solve every sample of the chosen level(s) with the multigrid-preconditioned "
        "CG reference solver and store u_fem on nodes, in parallel on dask. Rerunning the "
        "command after an interruption solves only the samples still missing.",
    )
    sol.add_argument("store", help="dataset store, e.g. data.zarr")
    sol.add_argument("--level", type=int, default=None, help="one level (default: every level)")
    sol.add_argument("--rtol", type=float, default=1e-8, help="relative residual (default 1e-8)")
    sol.add_argument(
        "--maxiter", type=int, default=None, help="PCG iteration cap (default: the solver's)"
    )
    sol.add_argument(
        "--threads", type=int, default=1, help="torch threads per dask task (default 1)"
    )
    sol.add_argument(
        "--repair",
        action="store_true",
        help="read every stored u_fem first and re-solve the damaged samples (see `data verify`)",
    )
    add_scheduler_option(sol)
    sol.add_argument("--no-progress", action="store_true", help="no progress bar")
    sol.set_defaults(run=_solve)
    parser.set_defaults(run=lambda args: parser.print_help() or 2)


def _solve(args) -> int:
    from mgtoolkit.data import solve_store, store_summary

    if not args.rtol > 0:
        raise ValueError(f"--rtol must be > 0 (got {args.rtol:g}); the default is 1e-8")
    if (args.maxiter is not None and args.maxiter < 1) or args.threads < 1:
        raise ValueError("--maxiter and --threads must be positive integers")
    solve_store(
        args.store,
        levels=args.level,
        rtol=args.rtol,
        maxiter=args.maxiter,
        threads=args.threads,
        client=args.scheduler,
        progress=not args.no_progress,
        repair=args.repair,
    )
    print(store_summary(args.store))
    return 0
