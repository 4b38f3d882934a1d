"""Options shared by several sub-commands."""

from __future__ import annotations

import argparse
import re

__all__ = ["add_predict_at_option", "add_scheduler_option", "scheduler_address"]

_ADDRESS = re.compile(
    r"^(?:(?P<proto>[a-z]+)://)?(?P<host>[^/\s:]+|\[[0-9a-fA-F:]+\]):(?P<port>\d+)$"
)


def scheduler_address(text: str) -> str:
    """An address such as ``tcp://10.0.0.5:8786`` (or ``host:8786``), checked before use."""
    m = _ADDRESS.match(text.strip())
    if not m or not 0 < int(m["port"]) < 65536 or (m["proto"] or "tcp") not in ("tcp", "tls"):
        shown = text if len(text) <= 60 else text[:59] + "…"
        raise argparse.ArgumentTypeError(
            f"not a dask scheduler address: {shown!r}; write tcp://HOST:PORT (or tls://), e.g. "
            "tcp://10.0.0.5:8786 as printed by `dask scheduler`"
        )
    return text.strip()


def add_scheduler_option(parser) -> None:
    """``--scheduler ADDRESS``: run on an existing dask cluster instead of an embedded one."""
    parser.add_argument(
        "--scheduler",
        default=None,
        type=scheduler_address,
        help="address of a running dask scheduler (default: an embedded LocalCluster)",
    )


def _cells_per_side(text: str) -> int:
    from mgtoolkit.nn.unet import check_predict_at

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--predict-at takes cells per side, a power of two such as 64 (got {text!r})"
        ) from None
    try:
        return check_predict_at(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("predict_at", "--predict-at")) from None


def add_predict_at_option(parser) -> None:
    """``--predict-at N``: run the network on ν coarsened to N cells per side, interpolate u."""
    parser.add_argument(
        "--predict-at",
        type=_cells_per_side,
        default=None,
        metavar="N",
        help="run the network on ν coarsened to N cells per side (e.g. the resolution it was "
        "trained at) and interpolate u back to the field's nodes; far more accurate on smooth "
        "fields much finer than the training fields (default: the field's own resolution)",
    )
