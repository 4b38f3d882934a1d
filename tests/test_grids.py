"""Grid conventions: resolutions, level hierarchy, coordinates and diffusivity validation."""

import numpy as np
import pytest
import torch

from mgtoolkit.grids import (
    Grid,
    check_diffusivity,
    check_resolution,
    hierarchy,
    level_resolution,
    max_levels,
)


def test_hierarchy_halves_cells_and_nodes_nest():
    grids = hierarchy(3, 64, 4)
    assert [g.n for g in grids] == [64, 32, 16, 8]
    fine, coarse = grids[0], grids[1]
    # every second fine node is a coarse node, at the same coordinate
    np.testing.assert_array_equal(fine.node_coords()[::2], coarse.node_coords())
    assert fine.cell_shape == (64, 64, 64) and fine.node_shape == (65, 65, 65)
    assert fine.axes == ("z", "y", "x")


def test_cell_centres_are_midpoints_of_nodes():
    g = Grid(2, 8)
    nodes = g.node_coords()
    np.testing.assert_allclose(g.cell_centres(), 0.5 * (nodes[1:] + nodes[:-1]))
    assert g.h == 1 / 8


@pytest.mark.parametrize("n", [0, 3, 12, 100, 1])
def test_non_power_of_two_resolution_is_refused_with_a_suggestion(n):
    with pytest.raises(ValueError, match="power of two"):
        check_resolution(n)


def test_too_many_levels_names_the_most_allowed():
    assert max_levels(16) == 4  # 16, 8, 4, 2 cells per side
    with pytest.raises(ValueError, match="at most 4 levels"):
        check_resolution(16, 5)
    assert level_resolution(16, 4) == 2


def test_dim_must_be_two_or_three():
    with pytest.raises(ValueError, match="dim must be 2 or 3"):
        Grid(4, 8)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.ones((8, 8, 4)), "equal sides"),
        (np.ones((6, 6)), "power of two"),
        (np.full((8, 8), np.nan), "NaN or inf"),
        (np.zeros((8, 8)), "strictly positive"),
        (-np.ones((4, 4, 4)), "strictly positive"),
    ],
)
def test_bad_diffusivity_is_refused(array, match):
    with pytest.raises(ValueError, match=match):
        check_diffusivity(array)


def test_diffusivity_shapes_batched_and_torch():
    assert check_diffusivity(np.ones((8, 8))) == (2, 8)
    assert check_diffusivity(np.ones((5, 8, 8, 8))) == (3, 8)
    assert check_diffusivity(torch.ones(3, 16, 16), dim=2) == (2, 16)
    with pytest.raises(ValueError, match="shape"):
        check_diffusivity(np.ones((8, 8)), dim=3)
