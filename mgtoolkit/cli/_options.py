"""Options shared by several sub-commands."""

from __future__ import annotations

import contextlib

__all__ = ["add_scheduler_option", "scheduler_client"]


def add_scheduler_option(parser) -> None:
    """``--scheduler ADDRESS``: run on an existing dask cluster instead of an embedded one."""
    parser.add_argument(
        "--scheduler",
        default=None,
        help="address of a running dask scheduler (default: an embedded LocalCluster)",
    )


@contextlib.contextmanager
def scheduler_client(address: str | None):
    """A Client connected to ``address``, or None (callees then embed a LocalCluster)."""
    if address is None:
        yield None
        return
    from distributed import Client

    with Client(address) as client:
        yield client
