"""The problem's symmetry group: the maps on the FEM solution, the group laws, subgroups, the
symmetry-averaged network, augmentation draws."""

import pickle

import numpy as np
import pytest
import torch

from mgtoolkit.nn import UNet, mirror_back, mirror_mean, mirrors, symmetry
from mgtoolkit.nn.symmetry import SymmetryMap

SIDE = {2: 16, 3: 8}


def _nu(batch, n, dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.exp(2 * torch.randn((batch,) + (n,) * dim, generator=g, dtype=torch.float64))


@pytest.mark.parametrize(("dim", "size"), [(2, 4), (3, 16)])
def test_group_sizes_and_names(dim, size):
    maps = symmetry.group(dim)
    assert len(maps) == size == len(set(maps))
    assert maps[0] == SymmetryMap(dim) and maps[0].name == "identity"
    assert len({m.name for m in maps}) == size
    assert all(symmetry.get(dim, m.name) == m for m in maps)
    assert [m.flips for m in maps[: 2**dim]] == mirrors(dim)  # the mirrors come first
    assert ("swap_yz" in {m.name for m in maps}) == (dim == 3)


@pytest.mark.parametrize("dim", [2, 3])
def test_every_map_of_a_field_has_the_mapped_fem_solution(dim):
    """The symmetry that group averaging relies on, checked on the FEM reference itself."""
    from mgtoolkit.fem import solve

    nu = _nu(1, SIDE[dim], dim, seed=3)
    u = solve(nu, rtol=1e-12, precision="double")
    for m in symmetry.group(dim)[1:]:
        image = symmetry.apply(m, nu)
        assert image.shape == nu.shape and not torch.equal(image, nu)
        u_image = solve(image.contiguous(), rtol=1e-12, precision="double")
        torch.testing.assert_close(symmetry.map_back(m, u_image), u, rtol=0, atol=1e-9)
        torch.testing.assert_close(symmetry.map_solution(m, u), u_image, rtol=0, atol=1e-9)
        assert not torch.allclose(u_image, u, atol=1e-3), m  # the images do differ


@pytest.mark.parametrize("dim", [2, 3])
def test_group_is_closed_with_inverses_and_composition_matches_applying_in_turn(dim):
    maps = symmetry.group(dim)
    e = maps[0]
    # distinct entries on both cells and nodes, with a leading batch axis passing through
    a = torch.arange(2 * 3**dim, dtype=torch.float64).reshape((2,) + (3,) * dim)
    for m in maps:
        assert m @ e == m == e @ m
        assert m.inverse() @ m == e == m @ m.inverse()
        assert torch.equal(symmetry.apply(m.inverse(), symmetry.apply(m, a)), a)
        assert torch.equal(symmetry.map_back(m, symmetry.map_solution(m, a)), a)
        for first in maps:
            assert m @ first in maps
            both = symmetry.apply(m, symmetry.apply(first, a))
            assert torch.equal(symmetry.apply(m @ first, a), both), (m, first)
    # numpy arrays map as torch tensors do
    for m in maps:
        np.testing.assert_array_equal(symmetry.apply(m, a.numpy()), symmetry.apply(m, a).numpy())
        np.testing.assert_array_equal(
            symmetry.map_back(m, a.numpy()), symmetry.map_back(m, a).numpy()
        )


def test_names_compose_in_the_order_applied():
    assert symmetry.get(3, "flip_z+swap_yz") == symmetry.get(3, "swap_yz+flip_y")
    assert symmetry.get(3, "swap_yz+swap_yz") == SymmetryMap(3)
    assert symmetry.get(2, "flip_x+flip_y").name == "flip_y+flip_x"
    # swap then reverse z is a quarter turn of the y-z square: order 4
    r = symmetry.get(3, "swap_yz+flip_z")
    assert r @ r == symmetry.get(3, "flip_z+flip_y") and r @ r @ r @ r == SymmetryMap(3)
    assert r.inverse() == symmetry.get(3, "swap_yz+flip_y")


@pytest.mark.parametrize(
    ("dim", "names"),
    [
        (2, ["identity", "flip_x"]),
        (2, ["identity", "flip_y", "flip_x", "flip_y+flip_x"]),
        (3, ["identity", "swap_yz"]),
        (3, ["identity", "swap_yz+flip_z", "flip_z+flip_y", "swap_yz+flip_y"]),  # rotations
        (3, [m.name for m in symmetry.group(3) if not m.flips_x]),  # the y-z square's 8
    ],
)
def test_subgroups_accepted_in_group_order(dim, names):
    picked = symmetry.subgroup(dim, reversed(names))
    assert [m.name for m in picked] == [m.name for m in symmetry.group(dim) if m.name in names]


@pytest.mark.parametrize(
    ("dim", "names", "match"),
    [
        (2, ["identity", "flip_w"], r"unknown symmetry map 'flip_w' in 2D .*flip_y\+flip_x"),
        (2, ["identity", "swap_yz"], r"unknown symmetry map 'swap_yz' in 2D"),
        (3, ["identity", "flip_x+rotate"], r"unknown symmetry map 'rotate' in 3D"),
        (3, ["flip_x"], r"\['flip_x'\] are not a subgroup: 'identity' is missing"),
        (3, [], r"'identity' is missing"),
        (
            3,
            ["identity", "swap_yz+flip_z"],
            r"not a subgroup: 'swap_yz\+flip_z' then 'swap_yz\+flip_z' is 'flip_z\+flip_y', "
            r"which is missing \(the smallest subgroup holding them: \['identity', "
            r"'flip_z\+flip_y', 'swap_yz\+flip_z', 'swap_yz\+flip_y'\]\)",
        ),
        (2, ["identity", "flip_y", "flip_x"], r"'flip_y\+flip_x', which is missing"),
    ],
)
def test_bad_subgroups_rejected_with_the_reason(dim, names, match):
    with pytest.raises(ValueError, match=match):
        symmetry.subgroup(dim, names)
    with pytest.raises(ValueError, match=match):
        UNet(dim=dim, depth=1, base_filters=2, mirror_average=names)


def test_a_string_is_not_a_list_of_names():
    with pytest.raises(TypeError, match="not the string"):
        symmetry.subgroup(2, "identity")
    with pytest.raises(TypeError, match="mirror_average must be True"):
        UNet(dim=2, depth=1, base_filters=2, mirror_average=2)


def test_mirror_average_reads_back_normalized_and_pickles():
    net = UNet(dim=3, depth=1, base_filters=2)
    assert net.mirror_average is False and net.symmetry_maps == (SymmetryMap(3),)
    net.mirror_average = True
    assert net.mirror_average is True and net.symmetry_maps == symmetry.group(3)
    net.mirror_average = "swap_yz, identity"  # comma-separated, as a command line gives it
    assert net.mirror_average == ("identity", "swap_yz") and len(net.symmetry_maps) == 2
    net.mirror_average = [m.name for m in symmetry.group(3)]
    assert net.mirror_average is True
    net.mirror_average = ["identity"]
    assert net.mirror_average is False
    net.mirror_average = ("identity", "flip_x")
    again = pickle.loads(pickle.dumps(net))
    assert again.mirror_average == ("identity", "flip_x") and again.symmetry_maps[1].flips_x


@pytest.mark.parametrize("dim", [2, 3])
def test_symmetry_averaged_network_is_exactly_invariant_and_the_plain_one_is_not(dim):
    torch.manual_seed(0)
    net = UNet(dim=dim, depth=2, base_filters=4, norm="none").double().eval()
    nu = _nu(2, 8, dim, seed=4)

    def mapped(g):  # the prediction for g's image, mapped back
        return symmetry.map_back(g, net(symmetry.apply(g, nu)))

    with torch.no_grad():
        plain = net(nu)
        for g in symmetry.group(dim)[1:]:
            assert (mapped(g) - plain).abs().max() > 1e-6, g  # not invariant by accident
        net.mirror_average = True
        u = net(nu)
        for g in symmetry.group(dim):
            torch.testing.assert_close(mapped(g), u, rtol=0, atol=1e-12, msg=g.name)
    assert torch.equal(u[..., 0], torch.ones_like(u[..., 0]))
    assert torch.equal(u[..., -1], torch.zeros_like(u[..., -1]))
    assert not torch.allclose(u, plain)


def test_subgroup_averaged_network_is_invariant_under_its_maps_only():
    torch.manual_seed(1)
    net = UNet(dim=3, depth=1, base_filters=4, norm="none").double().eval()
    net.mirror_average = ("identity", "swap_yz", "flip_x", "swap_yz+flip_x")
    nu = _nu(1, 8, 3, seed=5)
    with torch.no_grad():
        u = net(nu)
        for g in symmetry.group(3):
            back = symmetry.map_back(g, net(symmetry.apply(g, nu)))
            if g.name in net.mirror_average:
                torch.testing.assert_close(back, u, rtol=0, atol=1e-12, msg=g.name)
            else:
                assert (back - u).abs().max() > 1e-6, g


@pytest.mark.parametrize("dim", [2, 3])
def test_mirror_helpers_are_the_groups_reversals(dim):
    torch.manual_seed(2)
    net = UNet(dim=dim, depth=1, base_filters=4, norm="none").double().eval()
    nu = _nu(2, 4, dim, seed=6)
    reversals = [m for m in symmetry.group(dim) if not m.swap]
    with torch.no_grad():
        torch.testing.assert_close(
            mirror_mean(net, nu, dim=dim), symmetry.group_mean(net, nu, reversals), rtol=0, atol=0
        )
        if dim == 2:  # in 2D the mirrors are the whole group
            net.mirror_average = True
            torch.testing.assert_close(mirror_mean(net._forward, nu, dim=2), net(nu))
    u = torch.rand((2,) + (5,) * dim, dtype=torch.float64)
    for m in reversals:
        assert torch.equal(mirror_back(u, m.flips, dim=dim), symmetry.map_back(m, u))


def test_random_maps_are_reproducible_cover_the_group_and_respect_a_subgroup():
    draws = symmetry.random_map(3, np.random.default_rng(7), size=400)
    assert draws == symmetry.random_map(3, np.random.default_rng(7), size=400)
    assert set(draws) == set(symmetry.group(3))
    one = symmetry.random_map(3, np.random.default_rng(7))
    assert isinstance(one, SymmetryMap) and one == draws[0]
    sub = ("identity", "flip_y", "flip_x", "flip_y+flip_x")
    assert {m.name for m in symmetry.random_map(2, np.random.default_rng(0), sub, 50)} == set(sub)
    with pytest.raises(ValueError, match="not a subgroup"):
        symmetry.random_map(2, np.random.default_rng(0), ["identity", "flip_y", "flip_x"])
    nu = _nu(3, 4, 3)
    picked = symmetry.random_map(3, np.random.default_rng(1), size=3)
    images = symmetry.apply_each(picked, nu)
    for m, image, sample in zip(picked, images, nu, strict=True):
        assert torch.equal(image, symmetry.apply(m, sample))
    with pytest.raises(ValueError, match="2 maps for 3 samples"):
        symmetry.apply_each(picked[:2], nu)


@pytest.mark.parametrize("dim", [2, 3])
def test_an_image_box_reads_only_its_source_box(dim):
    """What a tiled predictor needs: a box of an image from one box of the source."""
    rng = np.random.default_rng(0)
    for m in symmetry.group(dim):
        # unequal sides, but for the z and y that swap_yz exchanges
        a = rng.random((5, 7) if dim == 2 else (6, 6, 7) if m.swap else (5, 6, 7))
        image = symmetry.apply(m, a)
        for _ in range(5):
            key = []
            for size in image.shape:
                lo, hi = sorted(rng.choice(size + 1, 2, replace=False))
                key.append(slice(int(lo), int(hi)))
            box = m.source_box(key, a.shape)
            np.testing.assert_array_equal(symmetry.apply(m, a[box]), image[tuple(key)])


def test_bad_maps_rejected():
    with pytest.raises(ValueError, match="swap_yz needs dim 3"):
        SymmetryMap(2, swap=True)
    with pytest.raises(ValueError, match="flips must be axes"):
        SymmetryMap(2, flips=(2,))
    with pytest.raises(ValueError, match="dim 2 or 3"):
        symmetry.group(4)
    with pytest.raises(ValueError, match="cannot compose"):
        SymmetryMap(2) @ SymmetryMap(3)
    with pytest.raises(ValueError, match="at least one map"):
        symmetry.group_mean(lambda x: x, torch.ones(1, 2, 2), [])
