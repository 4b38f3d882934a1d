"""The U-Net and the energy on slabs, on real process groups, against the unsplit run.

Each rank builds the same network and fields (same seeds), computes the unsplit reference in
its own process with plain batch norm, then its slab of the spatially parallel computation;
forward output, loss, parameter gradients and batch-norm running statistics must agree to
1e-10 in float64. Halos and sums travel over each transport: shared memory (local ranks, the
default), gloo (``MGTOOLKIT_TRANSPORT=gloo``) and MPI (under ``mpirun``).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mgtoolkit import comm
from mgtoolkit.launch import spawn
from mgtoolkit.nn import UNet
from mgtoolkit.spatial import SlabLayout, halo, slab_loss, to_slabs
from mgtoolkit.train.losses import batch_loss

TOL = 1e-10

# ---------------------------------------------------------------- functions run in the ranks


def _halo_errors(spatial: int, width: int = 5) -> dict[str, float]:
    """Forward and backward of a 2-below, 1-above zero-padded halo against the padded field.

    A plane holds 48 · ``width`` bytes: from width 5462 on, the 2-plane messages exceed half a
    shared-memory slot and travel in several rounds.
    """
    layout = SlabLayout.from_world(spatial)
    gen = torch.Generator().manual_seed(1)
    whole = torch.randn(2, 3, 4 * spatial, width, generator=gen, dtype=torch.float64)
    lo, hi, m = 2, 1, 4
    weights = torch.randn(2, 3, m + lo + hi, width, generator=gen, dtype=torch.float64)
    # reference: every slab's window of the zero-padded whole field, weighted and summed
    ref_x = whole.clone().requires_grad_(True)
    padded = F.pad(ref_x, (0, 0, lo, hi))
    windows = [padded.narrow(2, s * m, m + lo + hi) for s in range(spatial)]
    sum(((w * weights).sum() for w in windows), torch.zeros((), dtype=torch.float64)).backward()
    x = whole.narrow(2, layout.index * m, m).clone().requires_grad_(True)
    h = halo(x, layout, axis=2, lo=lo, hi=hi, outer="zeros")
    (h * weights).sum().backward()
    return {
        "halo forward": float((h.detach() - windows[layout.index]).abs().max()),
        "halo backward": float((x.grad - ref_x.grad.narrow(2, layout.index * m, m)).abs().max()),
    }


def _network_errors(
    dim: int, norm: str, spatial: int, loss: str, power: float = 2.0
) -> dict[str, float]:
    """Slab-parallel U-Net + slab loss against the unsplit network + loss, this rank's part."""
    n, batch = 16, 4
    torch.manual_seed(0)
    net = UNet(dim=dim, depth=2, base_filters=4, convs_per_block=1, norm=norm).double()
    nu = torch.exp(0.7 * torch.randn((batch,) + (n,) * dim, dtype=torch.float64))
    ref = copy.deepcopy(net)
    u_ref = ref(nu)
    j_ref = batch_loss(loss, nu, u_ref, power=power)
    j_ref.backward()

    layout = SlabLayout.from_world(spatial)
    slab = to_slabs(net, layout)
    part = layout.batch(batch)
    nu_s = layout.split(nu[part], grid="cells", dim=dim)
    u = slab(nu_s)
    value = slab_loss(loss, nu_s, u, layout, power=power)
    value.backward()
    comm.average_gradients(net.parameters())
    grads = [
        float((p.grad - q.grad).abs().max() / q.grad.abs().max())
        for p, q in zip(net.parameters(), ref.parameters(), strict=True)
    ]
    stats = [
        float((a - b).abs().max())
        for a, b in zip(net.buffers(), ref.buffers(), strict=True)
        if a.is_floating_point()
    ]
    return {
        "u": float((u - layout.split(u_ref[part], grid="nodes", dim=dim)).abs().max()),
        "loss": float(abs(comm.all_reduce_mean(value.detach()) - j_ref) / abs(j_ref)),
        "gradients": max(grads),
        "running statistics": max(stats, default=0.0),
    }


def _prediction_errors(dim: int, spatial: int) -> dict[str, float]:
    """Eval-mode prediction on slabs, gathered, against the unsplit network in eval mode."""
    n, batch = 16, 2
    torch.manual_seed(0)
    net = UNet(dim=dim, depth=2, base_filters=4, convs_per_block=1).double()
    with torch.no_grad():  # running statistics that differ from any one batch's
        net(torch.exp(torch.randn((6,) + (n,) * dim, dtype=torch.float64)))
    nu = torch.exp(0.7 * torch.randn((batch,) + (n,) * dim, dtype=torch.float64))
    ref = copy.deepcopy(net).eval()(nu).detach()
    layout = SlabLayout.from_world(spatial)
    u = to_slabs(net, layout).predict(layout.split(nu[layout.batch(batch)], grid="cells", dim=dim))
    return {"prediction": float((u - ref[layout.batch(batch)]).abs().max())}


def _cases(cases: list[tuple]) -> list[dict[str, float]]:
    """Run every case in this rank (one spawn for several cases: process start-up is slow)."""
    run = {"halo": _halo_errors, "net": _network_errors, "predict": _prediction_errors}
    return [run[case[0]](*case[1:]) for case in cases]


def _transported(cases: list[tuple]) -> tuple[str, list[dict[str, float]]]:
    """How sums and halos travel in this rank, and the cases' errors."""
    return comm.transport(torch.zeros(1, dtype=torch.float64)), _cases(cases)


# ---------------------------------------------------------------- tests


def _check(results: list, cases: list[tuple], transport: str | None = None) -> None:
    if transport is not None:
        assert [how for how, _ in results] == [transport] * len(results)
        results = [errors for _, errors in results]
    for rank, per_case in enumerate(results):
        for case, errors in zip(cases, per_case, strict=True):
            for what, err in errors.items():
                assert err <= TOL, f"rank {rank}, case {case}: {what} differs by {err:.3g}"


def test_two_slabs_equal_the_unsplit_network():
    cases = [
        ("net", 3, "batch", 2, "energy"),
        ("net", 2, "batch", 2, "scaled_energy"),
        ("net", 3, "none", 2, "energy"),
        ("net", 2, "batch", 2, "multigrid", 4.0),
        ("predict", 3, 2),
        ("halo", 2, 6000),  # messages of several shared-memory rounds
    ]
    _check(spawn(_transported, 2, cases), cases, "shm")


def test_four_slabs_and_a_two_by_two_mesh_equal_the_unsplit_network():
    cases = [
        ("halo", 4),
        ("net", 3, "batch", 4, "energy"),
        ("net", 3, "batch", 2, "energy"),  # 2 data groups × 2 slabs
        ("net", 3, "batch", 4, "multigrid"),
        ("predict", 2, 2),  # 2 data groups × 2 slabs
        ("halo", 4, 6000),
    ]
    _check(spawn(_transported, 4, cases), cases, "shm")


def test_slabs_over_gloo_equal_the_unsplit_network(monkeypatch):
    monkeypatch.setenv("MGTOOLKIT_TRANSPORT", "gloo")  # the spawned ranks inherit it
    cases = [("halo", 2), ("halo", 2, 6000), ("net", 3, "batch", 2, "energy")]
    _check(spawn(_transported, 2, cases), cases, "process-group")


#: Cases run under mpirun by ``slab_mpi.py``: halos and sums travel over MPI there.
MPI_CASES = [("halo", 2), ("net", 3, "batch", 2, "energy")]


def test_two_slabs_under_mpirun_exchange_over_mpi(tmp_path):
    env = {
        **os.environ,
        # Open MPI refuses root without these; CI containers run as root.
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMP_NUM_THREADS": "1",
    }
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slab_mpi.py")
    mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
    cmd = [mpirun, "-n", "2", "--oversubscribe", sys.executable, script, "out.pt"]
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    ranks = torch.load(tmp_path / "out.pt", weights_only=False)
    assert [r["transport"] for r in ranks] == ["mpi", "mpi"]
    _check([r["errors"] for r in ranks], MPI_CASES)


# ---------------------------------------------------------------- bad input (one process)


def test_bad_layouts_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"spatial = 3 .* world size 4: choose one of 1, 2, 4"):
        SlabLayout(3, 0, 4)
    layout = SlabLayout(4, 0, 4)
    with pytest.raises(ValueError, match=r"choose spatial from 1, 2, or a depth of at most 2"):
        layout.check(16, depth=3)
    with pytest.raises(ValueError, match="global batch 3 is not divisible by the 2 data"):
        SlabLayout(2, 0, 4).batch(3)
    with pytest.raises(ValueError, match="use one of batch, none"):
        to_slabs(UNet(dim=2, depth=1, base_filters=2, norm="instance"), layout)
    with pytest.raises(ValueError, match="mirror_average"):
        to_slabs(UNet(dim=2, depth=1, base_filters=2, mirror_average=True), layout)
    cascaded = UNet(dim=2, depth=1, base_filters=2)
    cascaded.cascade()
    with pytest.raises(ValueError, match="its coarse stage cannot be split in slabs"):
        to_slabs(cascaded, layout)
    with pytest.raises(ValueError, match="use one of energy, scaled_energy, multigrid"):
        slab_loss("l2", torch.ones(1, 4, 16), torch.ones(1, 5, 17), layout)


def test_one_slab_is_the_network_itself():
    torch.manual_seed(0)
    net = UNet(dim=2, depth=2, base_filters=4).double()
    nu = torch.exp(torch.randn(2, 8, 8, dtype=torch.float64))
    slab = to_slabs(net, SlabLayout(1, 0, 1))
    assert all(a is b for a, b in zip(slab.parameters(), net.parameters(), strict=True))
    assert list(slab.net.state_dict()) == list(net.state_dict())
    torch.testing.assert_close(slab(nu), net(nu), rtol=0, atol=1e-12)
