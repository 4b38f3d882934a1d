"""The U-Net: shapes on every level, exact Dirichlet values, growth, layout, bad configuration."""

import copy

import pytest
import torch

from mgtoolkit.fem import energy
from mgtoolkit.grids import hierarchy
from mgtoolkit.nn import UNet, UNetConfig


def _nu(batch, n, dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.exp(2 * torch.randn((batch,) + (n,) * dim, generator=g))


@pytest.mark.parametrize("dim", [2, 3])
def test_one_network_runs_on_every_level_with_exact_dirichlet(dim):
    torch.manual_seed(0)
    net = UNet(dim=dim, depth=2, base_filters=4)
    levels = hierarchy(dim, 16 if dim == 2 else 8, 4 if dim == 2 else 3)
    for grid in levels:  # n = 16, 8, 4, 2 (2D) — the same weights at every level
        u = net(_nu(2, grid.n, dim))
        assert u.shape == (2, *grid.node_shape)
        assert torch.equal(u[..., 0], torch.ones_like(u[..., 0]))
        assert torch.equal(u[..., -1], torch.zeros_like(u[..., -1]))
        assert bool(((u >= 0) & (u <= 1)).all())
        assert torch.isfinite(energy(_nu(2, grid.n, dim), u)).all()


def test_dirichlet_values_exact_after_training_steps_and_in_eval():
    torch.manual_seed(1)
    net = UNet(dim=2, depth=2, base_filters=4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    nu = _nu(4, 8, 2)
    for _ in range(5):
        opt.zero_grad()
        energy(nu, net(nu)).mean().backward()
        opt.step()
    net.eval()
    u = net(nu)
    assert (u[..., 0] == 1).all() and (u[..., -1] == 0).all()


def test_input_is_invariant_to_scaling_nu():
    # u solves the same problem for ν and cν: the network input (centred log ν) must not change.
    net = UNet(dim=2, depth=1, base_filters=4)
    nu = _nu(2, 8, 2)
    assert torch.allclose(net.inputs(nu), net.inputs(37.0 * nu), atol=1e-5)
    assert net.inputs(nu).shape == (2, 2, 8, 8)  # log ν and the x coordinate
    x = net.inputs(nu)[0, 1]
    assert torch.allclose(x[0], torch.linspace(-1 + 1 / 8, 1 - 1 / 8, 8))


def test_inputs_of_a_part_with_the_whole_fields_statistics_equal_the_whole_fields_inputs():
    """What tiled prediction relies on: a box of cells with the global mean and x range."""
    net = UNet(dim=2, depth=1, base_filters=4)
    nu = _nu(1, 16, 2)
    whole = net.inputs(nu)
    mean = torch.log(nu).mean().item()
    part = net.inputs(nu[:, 3:11, 5:13], log_nu_mean=mean, x_cells=(5, 13), n=16)
    assert torch.allclose(part, whole[:, :, 3:11, 5:13], atol=1e-6)
    assert not torch.allclose(net.inputs(nu[:, 3:11, 5:13]), part, atol=1e-3)


def test_grow_keeps_the_function_and_adds_parameters():
    torch.manual_seed(2)
    net = UNet(dim=2, depth=2, base_filters=4).eval()
    nu = _nu(2, 16, 2)
    before = net(nu)
    count = sum(p.numel() for p in net.parameters())
    fresh = net.grow()
    assert net.growth == 1 and fresh
    assert sum(p.numel() for p in net.parameters()) == count + sum(p.numel() for p in fresh)
    assert torch.equal(net(nu), before)
    # fresh layers do learn: their gradients are nonzero
    net.train()
    energy(nu, net(nu)).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in fresh)


@pytest.mark.parametrize("dim", [2, 3])
def test_cascade_keeps_the_function_as_the_coarse_network_run_coarse_and_interpolated(dim):
    """At the call, a cascaded network on n cells = the network before, on ν coarsened to n / 2
    (independent reference: numpy block means of log ν, scipy linear interpolation)."""
    import numpy as np
    from scipy.interpolate import RegularGridInterpolator

    torch.manual_seed(1)
    net = UNet(dim=dim, depth=2, base_filters=4).eval()
    n = 16 if dim == 2 else 8
    nu = _nu(2, n, dim, seed=4)
    log = np.log(nu.double().numpy())
    for axis in range(1, dim + 1):
        log = log.reshape((*log.shape[:axis], n // 2, 2, *log.shape[axis + 1 :])).mean(axis + 1)
    with torch.no_grad():
        coarse = net(torch.as_tensor(np.exp(log), dtype=torch.float32)).double().numpy()
        direct = net(nu)
    count = sum(p.numel() for p in net.parameters())
    fresh = net.cascade()
    assert net.cascades == 1 and net.coarse.cascades == 0
    assert sum(p.numel() for p in net.parameters()) == count + sum(p.numel() for p in fresh)
    with torch.no_grad():
        u = net(nu).double().numpy()
    fine = np.stack(np.meshgrid(*[np.linspace(0, 1, n + 1)] * dim, indexing="ij"), axis=-1)
    for b in range(2):
        interp = RegularGridInterpolator([np.linspace(0, 1, n // 2 + 1)] * dim, coarse[b])
        np.testing.assert_allclose(u[b], interp(fine), atol=1e-6)
    assert not np.allclose(u, direct.double().numpy(), atol=1e-3)  # not the weights run at n
    assert np.all(u[..., 0] == 1) and np.all(u[..., -1] == 0)


def test_cascaded_network_learns_in_both_stages_and_keeps_dirichlet_values():
    torch.manual_seed(2)
    net = UNet(dim=2, depth=2, base_filters=4)
    net.cascade()
    net.cascade()  # two coarse stages: 16 → 8 → 4 cells
    nu = _nu(3, 16, 2)
    energy(nu, net(nu)).mean().backward()
    for stage in (net, net.coarse, net.coarse.coarse):
        grads = [p.grad for p in stage.head.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    before = net(nu).detach()
    opt.step()
    u = net(nu)
    assert not torch.allclose(u, before)
    assert torch.equal(u[..., 0], torch.ones_like(u[..., 0]))
    assert torch.equal(u[..., -1], torch.zeros_like(u[..., -1]))
    # the weights load into a network rebuilt from its description alone
    copy_ = UNet.from_state(net.config.to_dict(), net.state_dict(), cascades=2)
    assert torch.equal(copy_(nu), u)


def test_cascade_refusals():
    net = UNet(dim=2, depth=1, base_filters=4)
    net.cascade()
    net.cascade()
    with pytest.raises(
        ValueError, match=r"2 coarse stage\(s\) .* a multiple of 4 cells per side \(got 2\)"
    ):
        net.eval()(_nu(1, 2, 2))  # 2 cells → 1 → the second stage cannot halve it
    with pytest.raises(ValueError, match="a cascaded network cannot grow"):
        net.grow()
    grown = UNet(dim=2, depth=1, base_filters=4)
    grown.grow()
    with pytest.raises(ValueError, match="a grown network cannot be cascaded"):
        grown.cascade()


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
@pytest.mark.parametrize("activation", ["leaky_relu", "gelu"])
def test_norms_and_activations(norm, activation):
    net = UNet(UNetConfig(dim=2, depth=1, base_filters=8, norm=norm, activation=activation))
    assert net(_nu(2, 8, 2)).shape == (2, 9, 9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 4}, "dim must be 2 or 3"),
        ({"depth": 0}, "depth must be an integer ≥ 1"),
        ({"base_filters": 0}, "base_filters"),
        ({"norm": "layer"}, "norm must be one of"),
        ({"activation": "tanh"}, "activation must be one of"),
        ({"base_filters": 8, "max_filters": 4}, "max_filters must be an integer ≥ base_filters"),
    ],
)
def test_bad_config_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig(**kwargs)


def test_max_filters_caps_the_widths_of_a_deeper_network():
    # depth 5, widths 4 8 16 16 16 16: every level of a 32² hierarchy down to 2² still runs
    # (grids below 2**depth are padded) with exact Dirichlet values.
    net = UNet(dim=2, depth=5, base_filters=4, max_filters=16)
    widths = [block[0].out_channels for block in net.encoder]
    assert widths == [4, 8, 16, 16, 16, 16]
    assert [up.out_channels for up in net.up] == [4, 8, 16, 16, 16]
    uncapped = UNet(dim=2, depth=5, base_filters=4)
    assert [block[0].out_channels for block in uncapped.encoder] == [4, 8, 16, 32, 64, 128]
    for n in (32, 16, 4, 2):
        u = net(_nu(2, n, 2))
        assert u.shape == (2, n + 1, n + 1)
        assert (u[..., 0] == 1).all() and (u[..., -1] == 0).all()


def test_wrong_input_shape_named():
    with pytest.raises(ValueError, match=r"expects ν of shape \(batch,\)"):
        UNet(dim=3)(torch.ones(8, 8))


def _channels_first_reference(net: UNet) -> UNet:
    """The same weights, channels-first and with activations out of place (the former code)."""
    ref = copy.deepcopy(net)
    ref.channels_last = False
    for m in ref.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return ref


def _train_step(net, nu):
    net.zero_grad(set_to_none=True)
    loss = energy(nu, net(nu)).mean()
    loss.backward()
    return loss.detach(), {k: p.grad for k, p in net.named_parameters()}


@pytest.mark.parametrize(
    ("dim", "norm", "activation"),
    [
        (3, "batch", "leaky_relu"),
        (2, "batch", "leaky_relu"),
        (3, "instance", "relu"),
        (2, "group", "leaky_relu"),
        (3, "none", "relu"),
        (2, "batch", "silu"),
    ],
)
def test_channels_last_in_place_matches_channels_first_reference(dim, norm, activation):
    # Same function, gradients and batch-norm statistics as the plain layout, growth included.
    torch.manual_seed(3)
    cfg = UNetConfig(dim=dim, depth=2, base_filters=4, norm=norm, activation=activation)
    net = UNet(cfg)
    net.grow()
    # let the zero-initialised growth convs carry signal, so their gradients are tested too
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref = _channels_first_reference(net)
    nu = _nu(3, 16 if dim == 2 else 8, dim, seed=4)
    loss, grads = _train_step(net.train(), nu)
    loss_ref, grads_ref = _train_step(ref.train(), nu)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=0)
    for k, g in grads_ref.items():
        # float32 rounding in another summation order, relative to the tensor's own scale
        assert (grads[k] - g).abs().max() <= 1e-5 * g.abs().max(), k
    for (k, a), b in zip(ref.state_dict().items(), net.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7, msg=k)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(nu), ref.eval()(nu), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dim", [2, 3])
def test_activations_stay_channels_last_between_layers(dim):
    # No layout flips: every convolution sees channels-last inputs, outputs and output gradients
    # (a channels-first one would make oneDNN reorder it, the cost this layout removes).
    # The head's single output channel is left out of the gradient check (any layout fits it).
    fmt = torch.channels_last if dim == 2 else torch.channels_last_3d
    net = UNet(dim=dim, depth=2, base_filters=4)
    net.grow()
    seen = []

    def check(module, args, output):
        seen.append(args[0].is_contiguous(memory_format=fmt))
        seen.append(output.is_contiguous(memory_format=fmt))
        # gradients of the upsampling outputs are channel slices of the concatenation's
        # gradient: channels-last order with a wider pixel stride, so only ask channels innermost
        if output.shape[1] > 1:
            output.register_hook(lambda g: seen.append(g.stride(1) == 1))

    convs = [m for m in net.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    for m in convs:
        m.register_forward_hook(check)
    nu = _nu(2, 8, dim)
    energy(nu, net(nu)).mean().backward()
    assert len(seen) == 3 * len(convs) - 1 and all(seen), seen


@pytest.mark.parametrize("dim", [2, 3])
def test_every_mirror_image_of_a_field_has_the_mirrored_fem_solution(dim):
    """The symmetry that mirror averaging relies on, checked on the FEM reference itself."""
    from mgtoolkit.fem import solve
    from mgtoolkit.nn import mirror_back, mirrors

    nu = _nu(1, 8, dim, seed=3).double()
    u = solve(nu, rtol=1e-12, precision="double")
    assert len(mirrors(dim)) == 2**dim and mirrors(dim)[0] == ()
    for axes in mirrors(dim)[1:]:
        image = solve(torch.flip(nu, [1 + a for a in axes]), rtol=1e-12, precision="double")
        torch.testing.assert_close(mirror_back(image, axes, dim=dim), u, rtol=0, atol=1e-9)
        assert not torch.allclose(image, u, atol=1e-3)  # the images do differ


@pytest.mark.parametrize("dim", [2, 3])
def test_mirror_average_is_exactly_symmetric_and_keeps_dirichlet_values(dim):
    torch.manual_seed(0)
    net = UNet(dim=dim, depth=2, base_filters=4, norm="none").double().eval()
    nu = _nu(2, 8, dim, seed=4).double()
    flip_y, flip_x = [dim - 1], [dim]  # batch axis first
    with torch.no_grad():
        plain = net(nu)
        # A plain network is not symmetric: the test below would pass trivially otherwise.
        assert not torch.allclose(torch.flip(net(torch.flip(nu, flip_y)), flip_y), plain)
        net.mirror_average = True
        u = net(nu)
        mirrored_y = torch.flip(net(torch.flip(nu, flip_y)), flip_y)
        mirrored_x = 1 - torch.flip(net(torch.flip(nu, flip_x)), flip_x)
    torch.testing.assert_close(mirrored_y, u, rtol=0, atol=1e-12)
    torch.testing.assert_close(mirrored_x, u, rtol=0, atol=1e-12)
    assert torch.equal(u[..., 0], torch.ones_like(u[..., 0]))
    assert torch.equal(u[..., -1], torch.zeros_like(u[..., -1]))
    assert not torch.allclose(u, plain)


@pytest.mark.parametrize("dim", [2, 3])
def test_predict_at_runs_on_the_geometric_mean_and_interpolates_linearly(dim):
    """Against an independent reference: numpy block means of log ν, scipy linear interpolation."""
    import numpy as np
    from scipy.interpolate import RegularGridInterpolator

    torch.manual_seed(0)
    net = UNet(dim=dim, depth=2, base_filters=4).eval()
    n, at = (32, 8) if dim == 2 else (16, 4)
    nu = _nu(2, n, dim, seed=3)
    log = np.log(nu.double().numpy())
    for axis in range(1, dim + 1):  # mean over each block of n // at cells, axis by axis
        shape = (*log.shape[:axis], at, n // at, *log.shape[axis + 1 :])
        log = log.reshape(shape).mean(axis=axis + 1)
    with torch.no_grad():
        coarse = net(torch.as_tensor(np.exp(log), dtype=torch.float32)).double().numpy()
        net.predict_at = at
        u = net(nu).double().numpy()
    assert u.shape == (2,) + (n + 1,) * dim
    fine = np.stack(np.meshgrid(*[np.linspace(0, 1, n + 1)] * dim, indexing="ij"), axis=-1)
    for b in range(2):
        interp = RegularGridInterpolator([np.linspace(0, 1, at + 1)] * dim, coarse[b])
        np.testing.assert_allclose(u[b], interp(fine), atol=1e-6)
    assert np.all(u[..., 0] == 1) and np.all(u[..., -1] == 0)  # Dirichlet faces stay exact


def test_predict_at_the_fields_own_resolution_changes_nothing():
    torch.manual_seed(0)
    net = UNet(dim=2, depth=2, base_filters=4, mirror_average=True).eval()
    nu = _nu(2, 16, 2)
    with torch.no_grad():
        direct = net(nu)
        net.predict_at = 16
        assert torch.equal(net(nu), direct)


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (48, ValueError, "power of two ≥ 2 cells per side"),
        (1, ValueError, "power of two ≥ 2 cells per side"),
        (True, TypeError, "an int or None"),
        ("64", TypeError, "an int or None"),
    ],
)
def test_bad_predict_at_refused(value, error, match):
    with pytest.raises(error, match=match):
        UNet(dim=2, depth=2, base_filters=4, predict_at=value)


def test_a_field_coarser_than_predict_at_is_refused():
    net = UNet(dim=2, depth=2, base_filters=4, predict_at=32).eval()
    with pytest.raises(ValueError, match=r"predicts at 32 cells per side .* the field has 16"):
        net(_nu(1, 16, 2))
