"""The trainer on a real store: run directory, events, exact resume, refusals, bad input."""

import json
import math

import pytest
import torch

from mgtoolkit.nn import UNetConfig
from mgtoolkit.rundir import request_stop
from mgtoolkit.train import (
    CycleConfig,
    DataConfig,
    OptimConfig,
    TrainConfig,
    Trainer,
    load_config,
    read_events,
    to_toml,
    train,
)


def small_config(store, **top) -> TrainConfig:
    sections = dict(
        data=DataConfig(store=str(store), val_samples=4),
        model=UNetConfig(dim=2, depth=2, base_filters=4),
        cycle=CycleConfig(name="V", levels=2, epochs=2, patience=1, max_epochs=2),
        optim=OptimConfig(batch_size=8, lr=3e-3),
    )
    sections.update(top)
    return TrainConfig(**sections)


class Interrupt(BaseException):
    """Stands for Ctrl-C / a killed job: not caught by the trainer's error handling."""


def test_run_directory_events_and_metrics(store2d, tmp_path):
    seen = []
    result = train(small_config(store2d), tmp_path / "run", listeners=[seen.append], progress=False)
    run = tmp_path / "run"
    for name in (
        "config.toml",
        "events.jsonl",
        "metrics.csv",
        "report.md",
        "report.json",
        "checkpoints/latest.pt",
        "checkpoints/step-003.pt",
    ):
        assert (run / name).exists(), name
    events = read_events(run / "events.jsonl")
    assert [e["type"] for e in events] == [e["type"] for e in seen]
    types = [e["type"] for e in events]
    assert types[0] == "run_start" and types[-1] == "run_end"
    assert types.count("step_start") == 3 and types.count("step_end") == 3
    # 20 training samples, batch 8 → 3 full batches per epoch (padded), 2 epochs per step
    assert types.count("batch_end") == 3 * 2 * 3
    for e in events:
        assert {"type", "time", "run"} <= set(e) and e["run"] == "run"
    assert [e["level"] for e in events if e["type"] == "step_start"] == [1, 2, 1]
    assert all(math.isfinite(e["loss"]) for e in events if e["type"] == "batch_end")
    assert result.reason == "schedule complete"
    assert [row["level"] for row in result.steps] == [1, 2, 1]
    assert set(result.level_wall_s) == {1, 2}
    # the written config reads back equal
    assert load_config(run / "config.toml") == small_config(store2d)
    summary = json.loads((run / "report.json").read_text())
    assert summary["reason"] == "schedule complete"


def _state(run_dir, name="latest.pt"):
    return torch.load(run_dir / "checkpoints" / name, weights_only=True)


def _assert_same(a, b, tol=1e-6):
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, atol=tol, rtol=0)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for name, value in sa[k].items():
            torch.testing.assert_close(sb[k][name], value, atol=tol, rtol=0)


@pytest.mark.parametrize(
    ("where", "augment"),
    [
        # mid-epoch (timed checkpoint), with mirrored samples: the rest of the epoch draws the
        # same mirrors
        ({"type": "batch_end", "step": 1, "epoch": 1, "batch": 2}, True),
        ({"type": "step_start", "step": 2}, False),  # right after a step-end checkpoint
    ],
)
def test_resume_equals_uninterrupted(store2d, tmp_path, where, augment):
    # checkpoint_minutes tiny: a timed checkpoint follows every batch, as after N minutes
    data = DataConfig(store=str(store2d), val_samples=4, augment=augment)
    cfg = small_config(store2d, checkpoint_minutes=1e-9, data=data)
    train(cfg, tmp_path / "full", progress=False)

    def stop(event):
        if all(event.get(k) == v for k, v in where.items()):
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "cut", listeners=[stop], progress=False)
    resumed = train(cfg, tmp_path / "cut", progress=False)
    assert resumed.reason == "schedule complete"
    _assert_same(_state(tmp_path / "full"), _state(tmp_path / "cut"))
    _assert_same(_state(tmp_path / "full", "step-002.pt"), _state(tmp_path / "cut", "step-002.pt"))
    events = read_events(tmp_path / "cut" / "events.jsonl")
    assert [e["resumed"] for e in events if e["type"] == "run_start"] == [False, True]


def test_checkpoint_from_another_config_is_refused(store2d, tmp_path):
    cfg = small_config(store2d)
    train(cfg, tmp_path / "run", progress=False)
    other = small_config(store2d, model=UNetConfig(dim=2, depth=2, base_filters=8))
    with pytest.raises(ValueError, match=r"model\.base_filters: 4 in the checkpoint, 8 now"):
        Trainer(other, tmp_path / "run", progress=False)
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(cfg, tmp_path / "run", progress=False, resume=False)


def test_init_starts_from_another_networks_weights(store2d, tmp_path):
    """``init``: the first step starts from the given network's weights (not the seed's), a
    wrong architecture or a missing source is refused before the run directory exists, and a
    resumed run keeps its own checkpoint."""
    from mgtoolkit.rundir import load_model

    first = small_config(store2d, seed=1)
    train(first, tmp_path / "first", progress=False)
    start = load_model(tmp_path / "first").state_dict()
    seen = []

    def capture(event):  # the weights as the first batch finds them
        if event["type"] == "step_start" and event["step"] == 0 and not seen:
            seen.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    cont = small_config(store2d, init=str(tmp_path / "first"))
    trainer = Trainer(cont, tmp_path / "cont", listeners=[capture], progress=False)
    trainer.run()
    for key, value in start.items():
        torch.testing.assert_close(seen[0][key], value, atol=0, rtol=0)
    key = "encoder.0.0.weight"
    fresh = Trainer(small_config(store2d), tmp_path / "fresh", progress=False)
    assert not torch.equal(fresh.model.state_dict()[key], start[key])  # the seed's, not init's
    # the continued run trained on from there: its weights moved
    assert not torch.equal(load_model(tmp_path / "cont").state_dict()[key], start[key])
    assert load_config(tmp_path / "cont" / "config.toml").init == str(tmp_path / "first")

    wider = small_config(
        store2d, init=str(tmp_path / "first"), model=UNetConfig(dim=2, depth=2, base_filters=8)
    )
    with pytest.raises(ValueError, match=r"init = .* is a different network .* drop init"):
        Trainer(wider, tmp_path / "wider", progress=False)
    assert not (tmp_path / "wider").exists()
    with pytest.raises(ValueError, match=r"init = .*nope.*: no checkpoint at"):
        Trainer(small_config(store2d, init=str(tmp_path / "nope")), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="init must be"):
        small_config(store2d, init="")


def test_adaptation_grows_when_moving_finer_and_resumes(store2d, tmp_path):
    cfg = small_config(store2d, adaptation="grow")
    result = train(cfg, tmp_path / "run", progress=False)
    ckpt = _state(tmp_path / "run")
    assert ckpt["growth"] == 1  # V(2) = 1 2 1: one move to a finer level
    assert result.reason == "schedule complete"
    Trainer(cfg, tmp_path / "run", progress=False)  # the grown checkpoint loads


def test_adaptation_cascade_starts_the_finer_level_from_the_coarse_function(store2d, tmp_path):
    """The finer step's network is the coarse step's, run on coarsened ν and interpolated:
    with a rate too small to move the weights, the run ends computing exactly that."""
    import numpy as np
    import zarr

    from mgtoolkit.rundir import load_model, read_checkpoint

    cfg = small_config(
        store2d,
        adaptation="cascade",
        cycle=CycleConfig(name="half-V", levels=2, epochs=1, patience=1, max_epochs=1),
        optim=OptimConfig(batch_size=8, lr=1e-9),
        model=UNetConfig(dim=2, depth=2, base_filters=4, norm="none"),  # no running statistics
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.reason == "schedule complete"
    assert _state(tmp_path / "run")["cascades"] == 1
    coarse_end = read_checkpoint(tmp_path / "run" / "checkpoints" / "step-001.pt")
    assert coarse_end.cascades == 0
    model = load_model(tmp_path / "run")
    assert model.cascades == 1
    nu = torch.as_tensor(np.asarray(zarr.open_group(str(store2d))["level1"]["nu"][:4]))
    expected = coarse_end.build_model().eval()
    expected.predict_at = nu.shape[-1] // 2
    with torch.no_grad():
        torch.testing.assert_close(model(nu), expected(nu), atol=1e-5, rtol=0)
        assert not torch.allclose(model(nu), coarse_end.build_model().eval()(nu), atol=1e-3)
    Trainer(cfg, tmp_path / "run", progress=False)  # the cascaded checkpoint loads to resume


def test_a_cascade_run_ending_on_a_coarse_level_leaves_the_network_it_validated(
    store2d_fem, tmp_path
):
    """Target reached on level 3 (at the start): the run leaves a finest-level network that
    scores on the held-out fields exactly what validation reported, not the coarse network's
    weights applied at the finest level."""
    import numpy as np
    import zarr

    from mgtoolkit.rundir import load_model
    from mgtoolkit.train.validation import validation_metrics

    cfg = small_config(
        store2d_fem,
        adaptation="cascade",
        cycle=CycleConfig(name="half-V", levels=3, epochs=1, patience=1, max_epochs=1),
        target_metric="rel_l2",
        target=1.0,
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.reason == "target reached"
    model = load_model(tmp_path / "run")
    assert model.cascades == 2  # 4² → 8² → 16²
    group = zarr.open_group(str(store2d_fem))["level1"]
    nu, u_fem = (torch.as_tensor(np.asarray(group[k][-4:])) for k in ("nu", "u_fem"))
    kw = dict(chunk=4, device=torch.device("cpu"))
    delivered = validation_metrics(model, nu, u_fem, **kw)["val_rel_l2"]
    assert delivered == pytest.approx(result.validation["val_rel_l2"], rel=1e-5)
    plain = model.coarse.coarse  # the network trained on level 3 (here: as initialised)
    direct = validation_metrics(plain, nu, u_fem, **kw)["val_rel_l2"]
    assert direct != pytest.approx(delivered, rel=1e-3)
    train(cfg, tmp_path / "run", progress=False)  # the finished run, reopened
    assert load_model(tmp_path / "run").cascades == 2  # nothing cascades again


@pytest.mark.parametrize("channels_last", [False, True])
def test_lbfgs_runs_and_lowers_the_loss(store2d, tmp_path, channels_last):
    # channels_last: torch's L-BFGS flattens gradients with .view, which channels-last
    # weights (and so gradients) refused; the trainer keeps weights in their usual layout.
    cfg = small_config(
        store2d,
        optim=OptimConfig(name="lbfgs", batch_size=20, lr=0.5, lbfgs_max_iter=4),
        cycle=CycleConfig(sequence=[1], max_epochs=3, patience=3),
        channels_last=channels_last,
    )
    result = train(cfg, tmp_path / "run", progress=False)
    events = read_events(tmp_path / "run" / "events.jsonl")
    losses = [e["loss"] for e in events if e["type"] == "epoch_end"]
    assert losses[-1] < losses[0]
    assert result.reason == "schedule complete"


def test_store_without_u_fem_warns_how_to_add_it(store2d, tmp_path):
    with pytest.warns(UserWarning, match="mgtoolkit fem solve"):
        result = train(small_config(store2d), tmp_path / "run", progress=False)
    assert "val_energy" in result.validation and "val_energy_gap" not in result.validation


def test_store_lacking_a_level_is_rejected(store2d, tmp_path):
    cfg = small_config(store2d, cycle=CycleConfig(name="half-V", levels=4))
    with pytest.raises(
        ValueError, match=r"has levels 1\.\.3 but the half-V schedule needs level 4"
    ):
        Trainer(cfg, tmp_path / "run", progress=False)


def test_wrong_dimension_and_too_few_samples(store2d, tmp_path):
    with pytest.raises(ValueError, match=r"holds 2D samples but model\.dim = 3"):
        Trainer(small_config(store2d, model=UNetConfig(dim=3)), tmp_path / "a", progress=False)
    cfg = small_config(store2d, data=DataConfig(store=str(store2d), val_samples=24))
    with pytest.raises(ValueError, match="no samples are left to train on"):
        Trainer(cfg, tmp_path / "b", progress=False)


def test_missing_store(tmp_path):
    cfg = small_config(tmp_path / "nope.zarr")
    with pytest.raises(FileNotFoundError, match="mgtoolkit data generate"):
        Trainer(cfg, tmp_path / "run", progress=False)


def test_toml_round_trip_with_overrides(store2d, tmp_path):
    cfg = small_config(
        store2d,
        cycle=CycleConfig(name="W", levels=3, overrides={-1: {"patience": 9}, 0: {"epochs": 1}}),
        target=0.05,
    )
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    back = load_config(path)
    assert back == cfg
    s = back.cycle.build()
    assert s.steps[-1].rule.patience == 9 and s.steps[0].rule.epochs == 1


def test_training_lowers_the_energy_gap_tenfold(store2d_fem, tmp_path):
    # 20 training samples at 16², 4 held out; fixed budget: 40 epochs of 2 batches each.
    cfg = small_config(
        store2d_fem,
        cycle=CycleConfig(sequence=[1], patience=40, max_epochs=40),
        optim=OptimConfig(batch_size=10, lr=5e-3),
        validate_every=40,
    )
    result = train(cfg, tmp_path / "run", progress=False)
    first, last = result.validations[0], result.validations[-1]
    assert first["wall_s"] == 0.0  # the untrained network
    print(f"energy gap {first['val_energy_gap']:.3g} -> {last['val_energy_gap']:.3g}")
    assert last["val_energy_gap"] < first["val_energy_gap"] / 10
    assert last["val_rel_l2"] < 0.7 * first["val_rel_l2"]
    assert 0 <= last["val_energy_gap"]  # u_fem minimizes J: no prediction does better


def test_request_stop_checkpoints_and_a_rerun_resumes_exactly(store2d, tmp_path):
    cfg = small_config(store2d)
    train(cfg, tmp_path / "full", progress=False)

    def stop(event):
        if event["type"] == "batch_end" and event["step"] == 1 and event["batch"] == 1:
            request_stop(tmp_path / "cut")

    first = train(cfg, tmp_path / "cut", listeners=[stop], progress=False)
    assert first.reason == "stopped"
    assert not (tmp_path / "cut" / "STOP").exists()
    events = read_events(tmp_path / "cut" / "events.jsonl")
    assert events[-1]["type"] == "run_end" and events[-1]["reason"] == "stopped"
    last_batch = [e for e in events if e["type"] == "batch_end"][-1]
    assert (last_batch["step"], last_batch["batch"]) == (1, 1)  # stopped right after it
    again = train(cfg, tmp_path / "cut", progress=False)
    assert again.reason == "schedule complete"
    _assert_same(_state(tmp_path / "full"), _state(tmp_path / "cut"))


def test_streaming_batches_equal_the_in_memory_cache(store2d, tmp_path):
    cfg = small_config(store2d)
    streamed = small_config(
        store2d, data=DataConfig(store=str(store2d), val_samples=4, cache=False)
    )
    train(cfg, tmp_path / "cached", progress=False)
    train(streamed, tmp_path / "streamed", progress=False)
    _assert_same(_state(tmp_path / "cached"), _state(tmp_path / "streamed"), tol=0)


def test_multigrid_loss_gradient_points_at_the_fem_solution(store2d_fem):
    """The loss's gradient w.r.t. u is one V-cycle applied to ∇J: nearly the error u − u_fem
    (u_fem from the FEM solver, an independent reference), zero at u_fem."""
    from mgtoolkit.data import LevelDataset
    from mgtoolkit.fem import energy
    from mgtoolkit.train.losses import multigrid_loss as _multigrid_loss

    ds = LevelDataset(store2d_fem, 1, variables=("nu", "u_fem"))
    nu = torch.stack([ds[i]["nu"] for i in range(8)]).double()
    u_fem = torch.stack([ds[i]["u_fem"] for i in range(8)]).double()
    x = torch.linspace(0, 1, nu.shape[-1] + 1, dtype=torch.float64)
    u = (1 - x).expand_as(u_fem).clone().requires_grad_()  # the constant-ν solution
    loss = _multigrid_loss(nu, u)
    loss.backward()
    error = (u - u_fem).detach()
    step = u.grad * u[0].numel()  # the loss is a mean over nodes
    cos = torch.nn.functional.cosine_similarity(step.flatten(1), error.flatten(1))
    assert cos.min() > 0.95, cos
    assert loss.item() == pytest.approx(0.5 * error.square().mean().item(), rel=0.2)
    assert _multigrid_loss(nu, u_fem).item() < 1e-12  # stationary at the FEM solution
    # and it is a descent direction for the energy itself
    j = lambda v: energy(nu, v).sum()  # noqa: E731
    assert j(u.detach() - 0.5 * step) < j(u.detach())


def test_multigrid_loss_power_weights_each_samples_largest_errors(store2d_fem):
    """With p = 4 the gradient approaches that of mean |u − u_fem|⁴ (per sample), is still
    zero at u_fem, and a sample's gradient does not depend on the rest of its batch."""
    from mgtoolkit.data import LevelDataset
    from mgtoolkit.train.losses import multigrid_loss as _multigrid_loss

    ds = LevelDataset(store2d_fem, 1, variables=("nu", "u_fem"))
    nu = torch.stack([ds[i]["nu"] for i in range(8)]).double()
    u_fem = torch.stack([ds[i]["u_fem"] for i in range(8)]).double()
    x = torch.linspace(0, 1, nu.shape[-1] + 1, dtype=torch.float64)
    error = (1 - x).expand_as(u_fem) - u_fem

    def step(power, rows=slice(None)):
        u = (u_fem[rows] + error[rows]).clone().requires_grad_()
        _multigrid_loss(nu[rows], u, power=power).backward()
        return u.grad.flatten(1)

    cos = torch.nn.functional.cosine_similarity
    l4 = (error.abs() ** 2 * error).flatten(1)  # the gradient of |e|⁴ / 4
    assert cos(step(4), l4).min() > 0.9
    assert (cos(step(4), l4) > cos(step(2), l4)).all()  # closer to it than the p = 2 loss
    # Per-sample weights: half a batch gives each of its samples twice the gradient (a mean
    # over half as many samples), and nothing else changes.
    torch.testing.assert_close(step(4, slice(0, 4)), 2 * step(4)[:4], rtol=1e-10, atol=0)
    # Stationary at the FEM solution (stored in float32: its residual is rounding, ~1e-7).
    at_fem = u_fem.clone().requires_grad_()
    _multigrid_loss(nu, at_fem, power=4).backward()
    assert at_fem.grad.abs().max() < 1e-4 * step(4).abs().max()


def test_every_step_starts_with_fresh_optimizer_state(store2d, tmp_path):
    # V(2) = 1 2 1, 2 epochs × 3 batches per step: Adam has counted the last step's 6 updates
    # only, not the run's 18 (moments from a previous level would mis-scale the first steps).
    train(small_config(store2d), tmp_path / "run", progress=False)
    counts = {float(v["step"]) for v in _state(tmp_path / "run")["optimizer"]["state"].values()}
    assert counts == {6.0}


def test_cosine_rates_follow_each_steps_epoch_cap(store2d, tmp_path):
    # half-V over 2 levels = two early-stopping steps; patience ≥ cap, so each runs its whole
    # cosine: 4 epochs on level 2 (an override), 5 on level 1.
    config = small_config(
        store2d,
        cycle=CycleConfig(
            name="half-V", levels=2, patience=5, max_epochs=5, overrides={0: {"max_epochs": 4}}
        ),
        optim=OptimConfig(batch_size=8, lr=1e-2, lr_schedule="cosine", min_lr=1e-4),
    )
    train(config, tmp_path / "run", progress=False)
    events = read_events(tmp_path / "run" / "events.jsonl")
    for step, cap in ((0, 4), (1, 5)):
        rates = [e["lr"] for e in events if e["type"] == "epoch_start" and e["step"] == step]
        expected = [
            1e-4 + (1e-2 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (e + 0.5) / cap))
            for e in range(cap)
        ]
        assert rates == pytest.approx(expected, rel=1e-12)
    assert rates[0] > 0.97e-2 and rates[-1] < 0.05e-2  # from about lr to a few times min_lr


def test_bf16_training_follows_the_float32_run_closely_and_validates_in_float32(
    store2d_fem, tmp_path
):
    runs = {}
    for precision in ("fp32", "bf16"):
        cfg = small_config(
            store2d_fem,
            cycle=CycleConfig(sequence=[1], max_epochs=2, patience=2),
            optim=OptimConfig(batch_size=8, lr=3e-3, loss="multigrid"),
            precision=precision,
        )
        train(cfg, tmp_path / precision, progress=False)
        events = read_events(tmp_path / precision / "events.jsonl")
        runs[precision] = [e["loss"] for e in events if e["type"] == "batch_end"]
    first32, first16 = runs["fp32"][0], runs["bf16"][0]
    # Same initial weights and batch: the first loss differs by bf16 rounding only ...
    assert first16 == pytest.approx(first32, rel=2e-2)
    assert first16 != first32  # ... and the forward pass did run in bfloat16
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        small_config(store2d_fem, precision="fp16")


def test_bf16_warns_on_a_cpu_without_bfloat16_instructions(tmp_path, dask_client):
    import warnings

    from mgtoolkit.data import generate

    store = tmp_path / "kl8.zarr"
    generate(store, dim=3, resolution=8, levels=1, samples=3, seed=0, client=dask_client,
             progress=False)  # fmt: skip
    slow_cpu = "AVX512" not in torch.backends.cpu.get_cpu_capability()
    for precision in ("bf16", "fp32"):
        cfg = small_config(
            store,
            data=DataConfig(store=str(store), val_samples=1),
            model=UNetConfig(dim=3, depth=1, base_filters=2),
            cycle=CycleConfig(sequence=[1], epochs=1),
            precision=precision,
        )
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            Trainer(cfg, tmp_path / precision, progress=False)  # warns before any training
        slow = [w for w in seen if "many times slower than fp32" in str(w.message)]
        assert len(slow) == (precision == "bf16" and slow_cpu), [str(w.message) for w in seen]


class RecordingTrainer(Trainer):
    """Keeps every training batch of ν that reaches the loss."""

    def loss(self, nu):
        self.seen = [*getattr(self, "seen", []), nu.clone()]
        return super().loss(nu)


def test_augment_trains_on_mirrored_samples_drawn_per_epoch(store2d, tmp_path):
    from mgtoolkit.data import LevelDataset

    cfg = small_config(
        store2d,
        data=DataConfig(store=str(store2d), val_samples=4, augment=True),
        cycle=CycleConfig(sequence=[1], max_epochs=2, patience=2),
    )
    trainer = RecordingTrainer(cfg, tmp_path / "run", progress=False)
    trainer.run()
    ds = LevelDataset(store2d, 1, variables=("nu",), indices=range(20))
    stored = torch.stack([ds[i]["nu"] for i in range(20)])
    # In 2D the problem's symmetries are the four mirrors (along x, y, both or neither).
    mirrors = {(): stored, (1,): stored.flip(1), (2,): stored.flip(2), (1, 2): stored.flip(1, 2)}
    used = set()
    for nu in torch.cat(trainer.seen):  # 2 epochs × 3 batches × 8 (20 samples, padded)
        hits = [
            (axes, i) for axes, m in mirrors.items() for i in range(20) if torch.equal(m[i], nu)
        ]
        assert hits, "a training batch held a field that is no mirror of a training sample"
        used.add(hits[0][0])
    assert used == set(mirrors)  # each of the four maps appears
    # without augment the samples reach the loss as stored
    plain = RecordingTrainer(
        small_config(store2d, cycle=cfg.cycle), tmp_path / "plain", progress=False
    )
    plain.run()
    assert all(any(torch.equal(s, nu) for s in stored) for nu in torch.cat(plain.seen))


def test_warmup_leaves_the_first_step_and_slows_the_start_of_later_ones(store2d, tmp_path):
    plain = small_config(store2d)
    warm = small_config(store2d, optim=OptimConfig(batch_size=8, lr=3e-3, warmup_epochs=1))
    train(plain, tmp_path / "plain", progress=False)
    train(warm, tmp_path / "warm", progress=False)
    first = "step-001.pt"
    _assert_same(_state(tmp_path / "plain", first), _state(tmp_path / "warm", first), tol=0)
    after_plain, after_warm = (
        _state(tmp_path / "plain", "step-002.pt"),
        _state(tmp_path / "warm", "step-002.pt"),
    )
    start = _state(tmp_path / "plain", first)["model"]
    # the second step moved the weights less from where the first left them
    moved = [
        sum(float((s[k] - start[k]).norm()) for k in start if start[k].is_floating_point())
        for s in (after_plain["model"], after_warm["model"])
    ]
    assert moved[1] < 0.9 * moved[0], moved
