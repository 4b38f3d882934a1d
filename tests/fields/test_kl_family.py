"""The KL family against its formula (docs/math.md, 'Coefficient family'), evaluated here."""

import math

import numpy as np
import pytest
from scipy.stats import qmc

from mgtoolkit.fields import KLFamily, get_family

A = (1.72, 4.05, 6.85, 9.82)


def nu_at(point, omega):
    """ν at one point, straight from the formula with scalar math (no numpy, no library code)."""
    d = len(point)
    total = 0.0
    for a, w in zip(A, omega, strict=True):
        lam = 1.0 / (1.0 + 0.25 * a * a)
        term = w * lam ** (d / 2)
        for s in point:
            term *= a / 2 * math.cos(a * s) + math.sin(a * s)
        total += term
    return math.exp(total)


@pytest.mark.parametrize(
    ("dim", "n", "cells"),
    [
        (2, 8, [(0, 0), (3, 5), (7, 0), (7, 7)]),
        (3, 8, [(0, 0, 0), (1, 4, 6), (7, 2, 5), (7, 7, 7)]),
        (3, 16, [(15, 0, 9), (8, 8, 8)]),
    ],
)
def test_values_match_formula_at_hand_picked_cells(dim, n, cells):
    omega = np.array([2.5, -1.25, 0.75, -3.0])
    field = KLFamily().field(omega, dim=dim, n=n)
    assert field.shape == (n,) * dim
    for cell in cells:
        # array index (z, y, x) / (y, x) ↔ cell centre ((i + ½) / n per axis), x last
        centre = tuple((i + 0.5) / n for i in cell)
        assert field[cell] == pytest.approx(nu_at(centre, omega), rel=1e-12)


def test_axis_roles_differ_for_an_off_diagonal_cell():
    # ξ_i is the same on every axis, so the formula is symmetric in the axes; the exponent
    # λ^(d/2) is what differs between 2D and 3D: a 3D field with z at the centre is not the 2D one.
    omega = np.array([3.0, 3.0, 3.0, 3.0])
    f2 = KLFamily().field(omega, dim=2, n=4)
    f3 = KLFamily().field(omega, dim=3, n=4)
    assert f2[1, 2] == pytest.approx(nu_at((1.5 / 4, 2.5 / 4), omega), rel=1e-12)
    assert f3[0, 1, 2] == pytest.approx(nu_at((0.5 / 4, 1.5 / 4, 2.5 / 4), omega), rel=1e-12)


def test_zero_omega_gives_unit_field():
    assert np.all(KLFamily().field(np.zeros(4), dim=3, n=4) == 1.0)


def test_any_block_equals_the_slice_of_the_whole_field():
    fam, omega = KLFamily(), np.array([-2.0, 1.0, 2.9, -0.3])
    whole = fam.field(omega, dim=3, n=16)
    region = (slice(4, 12), slice(0, 3), slice(9, 16))
    np.testing.assert_allclose(
        fam.block(0, omega, dim=3, n=16, region=region), whole[region], rtol=1e-14
    )


@pytest.mark.parametrize("dim", [2, 3])
def test_contrast_over_the_box_corners_is_about_1e6(dim):
    # docs/math.md: with λ^(d/2) the largest max/min contrast over the corners is ~1e6 in 2D and
    # 3D (λ alone would give ~1e21 in 3D).
    corners = np.array(np.meshgrid(*[[-3.0, 3.0]] * 4)).reshape(4, -1).T
    fam = KLFamily()
    worst = max(np.ptp(np.log10(fam.field(w, dim=dim, n=32))) for w in corners)
    assert 5.0 < worst < 7.0


def test_sobol_draws_are_reproducible_and_in_the_box():
    fam = KLFamily()
    a, b = fam.draw(16, seed=7), fam.draw(16, seed=7)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16, 4)
    assert np.all(np.abs(a) <= 3.0)
    assert not np.array_equal(a, fam.draw(16, seed=8))
    # A prefix of the sequence does not depend on how many samples are drawn.
    np.testing.assert_array_equal(fam.draw(5, seed=7), a[:5])
    # It is the scrambled Sobol sequence of scipy, scaled from [0, 1) to [-3, 3).
    ref = qmc.Sobol(d=4, scramble=True, seed=7).random(16) * 6.0 - 3.0
    np.testing.assert_allclose(a, ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    ("omega", "match"),
    [
        (np.zeros(3), "4 entries per sample"),
        (np.zeros((2, 5)), "4 entries per sample"),
        (np.array([0.0, 3.5, 0.0, 0.0]), r"\[-3, 3\]\^4 \(sample 0, mode 2"),
        (np.array([[0.0] * 4, [0.0, 0.0, 0.0, -3.01]]), r"sample 1, mode 4"),
        (np.array([0.0, np.nan, 0.0, 0.0]), r"\[-3, 3\]"),
    ],
)
def test_bad_omega_is_refused(omega, match):
    with pytest.raises(ValueError, match=match):
        KLFamily().field(omega, dim=2, n=4)


def test_registry_resolves_names_and_refuses_unknown_ones():
    assert isinstance(get_family("kl"), KLFamily)
    with pytest.raises(ValueError, match="unknown coefficient family 'foo'; choose one of"):
        get_family("foo")
    with pytest.raises(TypeError, match="Family"):
        get_family(42)
