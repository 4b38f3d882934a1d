"""Options shared by several sub-commands."""

from __future__ import annotations

__all__ = ["add_scheduler_option"]


def add_scheduler_option(parser) -> None:
    """``--scheduler ADDRESS``: run on an existing dask cluster instead of an embedded one."""
    parser.add_argument(
        "--scheduler",
        default=None,
        help="address of a running dask scheduler (default: an embedded LocalCluster)",
    )
