"""Tiled inference equals untiled inference; the receptive field is exact; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nets import make_net

from mgtoolkit.infer import needed_cells, predict_tiled, receptive_halo, tiles


def _field(shape, seed=0):
    rng = np.random.default_rng(seed)
    return np.exp(2.0 * rng.standard_normal(shape)).astype(np.float32)


def _untiled(net, nu):
    with torch.no_grad():
        return net(torch.as_tensor(nu, dtype=net.log_nu_scale.dtype)[None])[0].float().numpy()


@pytest.mark.parametrize("tile", [33, (24, 40, 65)])  # 65 = 32 + 33; 24 does not divide 65
def test_tiled_equals_untiled_3d_64(tile):
    net = make_net(dim=3, depth=2, convs_per_block=1, dtype=torch.float32)
    nu = _field((64,) * 3)
    layout = tiles(net.config, n=64, dim=3, tile=tile)
    assert len(layout) > 1 and max(t.box_cells for t in layout) < 64**3
    u = predict_tiled(net, nu, tile=tile)
    ref = _untiled(net, nu)
    assert u.shape == (65,) * 3 and np.isfinite(u).all()
    # float32 convolutions on boxes of different shapes round differently: ~1e-7 in u ∈ [0, 1].
    np.testing.assert_allclose(u, ref, rtol=0, atol=2e-6)
    assert np.abs(u - ref).max() < 1e-3 * np.abs(ref - ref.mean()).max()


def test_tiled_equals_untiled_float64_depth3_growth_2d():
    """Grown blocks, two convs per block: agreement to float64 rounding."""
    net = make_net(dim=2, depth=2, convs_per_block=2, growth=1)
    nu = _field((128, 128), seed=1)
    u = TiledFloat64(net)(nu, tile=37)
    ref = net(torch.as_tensor(nu, dtype=torch.float64)[None])[0].detach().numpy()
    np.testing.assert_allclose(u, ref, rtol=0, atol=1e-12)


class TiledFloat64:
    """predict_tiled returns float32 (the store's type); compare the float64 tiles directly."""

    def __init__(self, net, planes=None):
        from mgtoolkit.infer import TiledPredictor, log_nu_mean

        self.predictor, self.mean = TiledPredictor(net, planes=planes), log_nu_mean

    def __call__(self, nu, *, tile, mean=None):
        p = self.predictor
        p.tile = tile
        n, dim = nu.shape[-1], nu.ndim
        out = np.empty((n + 1,) * dim)
        mean = self.mean(nu) if mean is None else mean
        for t in p.tile_list(n, dim):
            out[t.node_slices] = p.predict_tile(nu, t, n=n, mean=mean)
        return out


def test_receptive_field_is_tight_2d():
    """A node changes when a cell at the edge of its computed range changes, not beyond.

    The mean of log ν is held fixed: it is the one global input, passed to every tile.
    """
    net = make_net(dim=2, depth=3, convs_per_block=2, growth=1)
    run = TiledFloat64(net)
    n, j = 128, 61
    nu = _field((n, n), seed=2)
    base = run(nu, tile=None, mean=0.0)
    lo, hi = needed_cells(net.config, net.growth, j, j)
    assert 0 < lo and hi < n - 1
    changed = {}
    for c in (lo - 1, lo, hi, hi + 1):
        bumped = nu.copy()
        bumped[:, c] *= 1e4  # a strong change survives max-pooling
        u = run(bumped, tile=None, mean=0.0)
        changed[c] = np.abs(u[:, j] - base[:, j]).max()
    assert changed[lo - 1] == 0 and changed[hi + 1] == 0
    assert changed[lo] > 0 and changed[hi] > 0
    assert receptive_halo(net.config, net.growth) >= max(j - 1 - lo, hi - j)


def test_tiles_partition_nodes_and_align_boxes():
    net = make_net(dim=3, depth=3)
    layout = tiles(net.config, n=64, dim=2, tile=20)
    cover = np.zeros((65, 65), dtype=int)
    for t in layout:
        cover[t.node_slices] += 1
        for (a, b), (c0, c1) in zip(t.nodes, t.cells, strict=True):
            assert c0 % 8 == 0 and (c1 % 8 == 0 or c1 == 64) and c0 <= max(a - 1, 0) and b - 1 <= c1
    assert (cover == 1).all()


def test_refuses_instance_norm_and_training_mode():
    from mgtoolkit.nn import UNet

    with pytest.raises(ValueError, match="whole field"):
        predict_tiled(UNet(dim=2, depth=2, norm="instance").eval(), _field((16, 16)), tile=8)
    with pytest.raises(ValueError, match="eval"):
        predict_tiled(UNet(dim=2, depth=2).train(), _field((16, 16)), tile=8)
    with pytest.raises(ValueError, match="positive number of nodes"):
        tiles(UNet(dim=2, depth=2).config, n=16, dim=2, tile=0)
    with pytest.raises(ValueError, match=r"shape \(n,\)\*2"):
        predict_tiled(UNet(dim=2, depth=2).eval(), _field((16, 8)), tile=8)


def test_coarse_grid_below_downsampling_runs_untiled():
    net = make_net(dim=2, depth=3, dtype=torch.float32)
    nu = _field((4, 4))
    np.testing.assert_allclose(predict_tiled(net, nu, tile=3), _untiled(net, nu), atol=1e-7)


@pytest.mark.parametrize(("dim", "n", "tile"), [(2, 64, 23), (3, 16, 9)])
def test_mirror_averaged_tiles_equal_the_mirror_averaged_network(dim, n, tile):
    net = make_net(dim=dim, depth=2, convs_per_block=1)
    net.mirror_average = True
    nu = _field((n,) * dim, seed=2).astype(np.float64)
    assert len(tiles(net.config, n=n, dim=dim, tile=tile)) > 1
    u = predict_tiled(net, nu, tile=tile)
    with torch.no_grad():
        ref = net(torch.as_tensor(nu)[None])[0].numpy()
        net.mirror_average = False
        plain = net(torch.as_tensor(nu)[None])[0].numpy()
    np.testing.assert_allclose(u, ref, rtol=0, atol=1e-6)  # u is float32
    assert np.abs(ref - plain).max() > 1e-3
