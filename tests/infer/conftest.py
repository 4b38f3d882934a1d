"""Fixtures of the inference tests (``make_net`` lives in ``nets.py``: test modules import it,
and a module named ``conftest`` is ambiguous when several test folders are collected)."""

from __future__ import annotations

import pytest
from nets import make_net

from mgtoolkit.nn import UNet


@pytest.fixture
def net3d() -> UNet:
    return make_net()
