"""FEM tests use one torch thread: their grids are small, and on a shared, loaded machine
two-thread barriers in thousands of small operations cost more than they gain."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
