"""Whole-sample prediction into a store, with each sample's errors against FEM."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mgtoolkit.grids import level_resolution
from mgtoolkit.nn import UNet
from mgtoolkit.nn.unet import check_predict_at, coarsening

__all__ = ["PredictFn", "predict", "sample_metrics"]


@dataclass
class PredictFn:
    """Picklable ``nu -> u_pred`` for :func:`mgtoolkit.data.map_samples` (runs on workers).

    Holds the network's config and weights; builds the network once per process.
    """

    model_config: dict
    growth: int
    state: dict
    threads: int = 1
    mirror_average: bool | tuple[str, ...] = False
    predict_at: int | None = None
    cascades: int = 0

    @classmethod
    def from_model(cls, model: UNet, *, threads: int = 1) -> PredictFn:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return cls(
            model.config.to_dict(),
            model.growth,
            state,
            threads,
            model.mirror_average,
            model.predict_at,
            model.cascades,
        )

    def __call__(self, nu: np.ndarray) -> np.ndarray:
        net = getattr(self, "_net", None)
        if net is None:
            torch.set_num_threads(self.threads)
            net = UNet.from_state(
                self.model_config,
                self.state,
                growth=self.growth,
                cascades=self.cascades,
                mirror_average=self.mirror_average,
                predict_at=self.predict_at,
            )
            self._net = net.eval()
        with torch.no_grad():
            return self._net(torch.as_tensor(nu, dtype=torch.float32)[None])[0].numpy()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_net"}


def sample_metrics(nu: torch.Tensor, u: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Errors of one prediction against the FEM solution, in float64.

    ``nu`` on cells ``(n,) * d``; ``u``, ``ref`` on nodes ``(n + 1,) * d``. Returns ``rel_l2``,
    ``max_abs`` and ``energy_gap`` as floats (see :func:`mgtoolkit.fem.error_metrics`).
    """
    from mgtoolkit.fem import error_metrics

    return {k: float(v) for k, v in error_metrics(nu, u, ref).items()}


def predict(
    store: str | Path,
    source: str | Path | UNet,
    *,
    level: int = 1,
    name: str = "u_pred",
    client=None,
    progress: bool = True,
    metrics_csv: str | Path | None = None,
    mirror_average: bool | None = None,
    predict_at: int | None = None,
) -> list[dict]:
    """Write the network's prediction as node field ``name`` at ``level`` and score it.

    Parameters
    ----------
    store : path-like
        Dataset store.
    source : path-like or UNet
        A run directory, a checkpoint file, or a network.
    level : int
        Which level to predict (the network runs on any).
    name : str
        Node field to write (default "u_pred"), beside u_fem; samples already written are
        kept (resumable, like every :func:`~mgtoolkit.data.map_samples` field).
    client : distributed.Client, optional
        Where to run (default: an embedded LocalCluster).
    metrics_csv : path-like, optional
        Also write the per-sample metrics there.
    mirror_average : bool, optional
        Predict the mean over each field's mirror images (:class:`~mgtoolkit.nn.UNet`;
        one network pass per image). Default: the network's own setting (off when loaded
        from a run).
    predict_at : int, optional
        Run the network on ν coarsened to this many cells per side and interpolate u back
        (:class:`~mgtoolkit.nn.UNet`); default: the network's own setting (off when loaded
        from a run).

    Returns
    -------
    list of dict
        One row per sample: ``sample`` and, when u_fem is complete at that level,
        ``rel_l2``, ``max_abs``, ``energy_gap`` (see :func:`sample_metrics`).
    """
    from mgtoolkit.data import LevelDataset, check_store, completed, map_samples
    from mgtoolkit.rundir import load_model

    attrs = check_store(store)
    model = source if isinstance(source, UNet) else load_model(source)
    if model.config.dim != attrs["dim"]:
        raise ValueError(
            f"the network is {model.config.dim}D but {store} holds {attrs['dim']}D fields; pass "
            f"a {attrs['dim']}D model (nothing was written)"
        )
    fn = PredictFn.from_model(model)
    if mirror_average is not None:
        fn.mirror_average = mirror_average
    if predict_at is not None:
        fn.predict_at = check_predict_at(predict_at)
    # refused here, before any worker runs: a level coarser than the network predicts at
    coarsening(level_resolution(attrs["resolution"], level), fn.predict_at)
    map_samples(
        store,
        fn,
        level=level,
        name=name,
        client=client,
        progress=progress,
    )
    has_ref = bool(completed(store, level, "u_fem").all())
    variables = ("nu", name, "u_fem") if has_ref else ("nu", name)
    ds = LevelDataset(store, level, variables=variables)
    rows = []
    for i in range(len(ds)):
        item = ds[i]
        row = {"sample": int(ds.indices[i])}
        if has_ref:
            row.update(sample_metrics(item["nu"], item[name], item["u_fem"]))
        rows.append(row)
    if metrics_csv is not None and rows:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        Path(metrics_csv).write_text(buf.getvalue())
    return rows
