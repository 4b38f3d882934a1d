"""Training with fields split across ranks equals single-rank training (real gloo ranks).

Float64: 20 Adam steps of the U-Net with batch norm through the slab network and loss, with
the trainer's recipe (data-group batch slices, averaged gradients), at spatial p = 2, 4 and a
2 × 2 data × space mesh, and 20 L-BFGS steps at p = 2, against one process training the
unsplit network. Float32: the real
:class:`~mgtoolkit.train.Trainer` with ``[parallel] spatial = 2`` on 2 ranks against one rank.
Bad input: refused before anything is written.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mgtoolkit import comm
from mgtoolkit.cli import main
from mgtoolkit.launch import spawn
from mgtoolkit.nn import UNet, UNetConfig
from mgtoolkit.rundir import request_stop
from mgtoolkit.spatial import SlabLayout, slab_loss, to_slabs
from mgtoolkit.train import (
    CycleConfig,
    DataConfig,
    OptimConfig,
    ParallelConfig,
    TrainConfig,
    Trainer,
    load_config,
    read_events,
    to_toml,
)
from mgtoolkit.train.losses import batch_loss

POOL, BATCH, STEPS = 6, 4, 20

# ---------------------------------------------------------------- functions run in the ranks


def _steps(spatial: int | None, optimizer: str = "adam") -> list[torch.Tensor]:
    """Parameters and running statistics after 20 optimizer steps (Adam, or L-BFGS with one
    inner iteration); ``spatial=None``: the unsplit network."""
    torch.manual_seed(0)
    net = comm.convert_sync_batchnorm(
        UNet(dim=3, depth=2, base_filters=4, convs_per_block=1).double()
    )
    pool = torch.exp(0.7 * torch.randn(POOL, 16, 16, 16, dtype=torch.float64))
    if optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    else:
        opt = torch.optim.LBFGS(net.parameters(), lr=0.5, max_iter=1, history_size=5)
    if spatial is not None:
        layout = SlabLayout.from_world(spatial)
        slab = to_slabs(net, layout)
    for step in range(STEPS):
        epoch, b = divmod(step, -(-POOL // BATCH))
        order = comm.padded_order(np.random.default_rng(epoch).permutation(POOL), BATCH)
        nu = pool[order[b * BATCH : (b + 1) * BATCH]]
        if spatial is not None:
            nu = layout.split(nu[layout.batch(BATCH)], grid="cells", dim=3)

        def closure(nu=nu):
            opt.zero_grad()
            if spatial is None:
                loss = batch_loss("energy", nu, net(nu))
            else:
                loss = slab_loss("energy", nu, slab(nu), layout)
            loss.backward()
            comm.average_gradients(net.parameters())
            return comm.all_reduce_mean(loss.detach())

        opt.step(closure)
    return _state(net)


def _state(net: torch.nn.Module) -> list[torch.Tensor]:
    """Parameters and floating-point buffers (the batch-norm running statistics)."""
    tensors = (*net.parameters(), *net.buffers())
    return [t.detach().clone() for t in tensors if t.is_floating_point()]


def _mesh_runs(runs: list[tuple[int, str]]) -> list[list[torch.Tensor]]:
    return [_steps(*run) for run in runs]


def _trainer_runs(jobs: list[tuple]) -> list[object]:
    """Each job's final parameters and validation metrics, or the text of the error it
    raised. A job is ``(config, run_dir)``, or ``(config, run_dir, "stop")`` to stop the run
    (checkpoint, reason "stopped") at the first batch of its second step."""
    out = []
    for config, run_dir, *stop in jobs:

        def stop_after_first_step(event, run_dir=run_dir, stop=stop):
            if stop and event["type"] == "step_end" and event["step"] == 0:
                request_stop(run_dir)

        try:
            trainer = Trainer(config, run_dir, progress=False, listeners=[stop_after_first_step])
            result = trainer.run()
            params = [p.detach().clone() for p in trainer.model.parameters()]
            out.append((params, result.validation))
        except ValueError as exc:
            out.append(str(exc))
    return out


# ---------------------------------------------------------------- float64 exactness


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).norm() / y.norm()) for x, y in zip(a, b, strict=True))


def test_twenty_steps_on_slabs_equal_one_rank_in_float64():
    ref = {opt: _steps(None, opt) for opt in ("adam", "lbfgs")}
    # training moved the parameters and statistics (the comparison is not vacuous)
    torch.manual_seed(0)
    start = _state(UNet(dim=3, depth=2, base_filters=4, convs_per_block=1).double())
    assert all(_rel(start, r) > 1e-2 for r in ref.values())
    two = spawn(_mesh_runs, 2, [(2, "adam"), (2, "lbfgs")])
    four = spawn(_mesh_runs, 4, [(4, "adam"), (2, "adam")])  # 4 slabs; 2 data groups × 2 slabs
    for name, ranks, i, opt in (
        ("p=2 Adam", two, 0, "adam"),
        ("p=2 L-BFGS", two, 1, "lbfgs"),
        ("p=4 Adam", four, 0, "adam"),
        ("2x2 Adam", four, 1, "adam"),
    ):
        for rank, runs in enumerate(ranks):
            err = _rel(runs[i], ref[opt])
            assert err < 1e-10, f"{name}, rank {rank}: relative difference {err:.2e}"


# ---------------------------------------------------------------- the trainer


def _config(
    store,
    *,
    spatial: int = 1,
    levels: int = 2,
    augment: bool = False,
    layouts: dict | None = None,
    **top,
) -> TrainConfig:
    return TrainConfig(
        **top,
        data=DataConfig(store=str(store), val_samples=4, augment=augment),
        model=UNetConfig(dim=2, depth=2, base_filters=4),
        cycle=CycleConfig(name="V", levels=levels, epochs=2, patience=1, max_epochs=2),
        optim=OptimConfig(batch_size=8, lr=3e-3),
        parallel=ParallelConfig(spatial=spatial, levels=layouts or {}),
    )


def test_trainer_on_slabs_matches_one_rank_and_refuses_thin_slabs(store2d, tmp_path):
    # Each rank reads only its slab; with augmentation it reads whole fields, maps them and
    # then keeps its slab. The V-cycle's last step grows the network: its slab form follows.
    other = {
        "grown": {"adaptation": "grow"},
        "augmented": {"augment": True},
        # level 2 data-parallel over both ranks, level 1 split: the layout changes per step
        "level layouts": {"layouts": {"2": 1}},
    }
    one = {k: v for k, v in other.items() if k != "level layouts"}  # one rank: no layouts
    (ref, ref_val), *refs = _trainer_runs(
        [(_config(store2d), str(tmp_path / "one"))]
        + [(_config(store2d, **kw), str(tmp_path / f"one-{k}")) for k, kw in one.items()]
    )
    refs.append((ref, ref_val))  # the level layouts train the plain configuration
    jobs = [
        (_config(store2d, spatial=2), str(tmp_path / "two")),
        # level 3 has 4 cells per side: 2 slabs of 2 planes, fewer than 2^depth = 4
        (_config(store2d, spatial=2, levels=3), str(tmp_path / "thin")),
    ] + [(_config(store2d, spatial=2, **kw), str(tmp_path / f"two-{k}")) for k, kw in other.items()]
    jobs.append((_config(store2d, spatial=2), str(tmp_path / "switch"), "stop"))
    ranks = spawn(_trainer_runs, 2, jobs)
    # the run stopped on 2 ranks with 2 slabs resumes on one rank (parallel is not part of
    # the trajectory) and ends where one rank alone does
    stopped = [r[-1] for r in ranks]
    assert all(len(p[0]) == len(ref) for p in stopped)
    (resumed, _), *_ = _trainer_runs([(_config(store2d), str(tmp_path / "switch"))])
    assert _rel(resumed, ref) < 1e-3 < _rel(stopped[0][0], ref)
    assert len(refs[0][0]) > len(ref)  # the network did grow
    steps = read_events(tmp_path / "two-level layouts" / "events.jsonl")
    layouts = [(e["level"], e["spatial"]) for e in steps if e["type"] == "step_start"]
    assert layouts == [(1, 2), (2, 1), (1, 2)]
    for rank, ((params, val), refusal, *runs, _) in enumerate(ranks):
        for name, (got, _), (want, _) in zip(other, runs, refs, strict=True):
            err = _rel(got, want)
            assert err < 1e-3, f"rank {rank}, {name}: relative difference {err:.2e} from one rank"
        # float32 with batch norm and Adam: rounding, amplified (measured: see docs/spatial.md)
        err = _rel(params, ref)
        assert err < 1e-3, f"rank {rank}: relative difference {err:.2e} from one rank"
        # validation ran on slabs (the prediction gathered) and saw the same network
        assert val.keys() == ref_val.keys() and "val_energy" in val
        for key, value in val.items():
            assert value == pytest.approx(ref_val[key], rel=1e-3), key
        assert "parallel.spatial = 2 at level 3" in refusal
        assert "choose spatial from 1" in refusal and "depth of at most 1" in refusal
    # every rank holds the same weights
    assert all(torch.equal(a, b) for a, b in zip(ranks[0][0][0], ranks[1][0][0], strict=True))
    assert not (tmp_path / "thin").exists()


def test_spatial_size_must_divide_the_world(store2d, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"does not divide the world size 1: choose one of 1$"):
        Trainer(_config(store2d, spatial=2), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(to_toml(_config(store2d)))
    code = main(["train", str(cfg), "--run-dir", str(tmp_path / "cli"), "--spatial", "3"])
    assert code != 0
    assert "spatial = 3 ranks per field does not divide the world size 1" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


def test_parallel_section_is_read_checked_and_not_part_of_the_trajectory(store2d, tmp_path):
    config = _config(store2d, spatial=2)
    path = tmp_path / "cfg.toml"
    path.write_text(to_toml(config))
    assert "[parallel]\nspatial = 2" in path.read_text()
    assert load_config(path) == config
    assert "parallel" not in config.trajectory_dict()
    with pytest.raises(ValueError, match=r"parallel.spatial must be an integer ≥ 1"):
        ParallelConfig(spatial=0)
    with pytest.raises(ValueError, match=r"use model\.norm = 'batch' or 'none'"):
        dataclasses.replace(config, model=UNetConfig(dim=2, norm="instance"))
    # per-level layouts: read back, checked, and refused for a level the schedule lacks
    layered = _config(store2d, layouts={2: 1})
    assert layered.parallel.levels == {"2": 1} and layered.parallel.spatial_at(1) == 1
    path.write_text(to_toml(layered))
    assert load_config(path) == layered
    with pytest.raises(ValueError, match=r"parallel\.levels keys must be level numbers"):
        ParallelConfig(levels={"coarse": 1})
    with pytest.raises(ValueError, match=r"parallel\.levels\.3 must be an integer ≥ 1"):
        ParallelConfig(levels={"3": 0})
    with pytest.raises(ValueError, match="level 3, which the V schedule does not use: choose"):
        Trainer(_config(store2d, layouts={"3": 1}), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
