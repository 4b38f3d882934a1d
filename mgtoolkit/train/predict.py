"""Inference with a trained network: u_pred into the store, and errors vs FEM per sample."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mgtoolkit.nn import UNet, UNetConfig

__all__ = ["PredictFn", "load_model", "predict", "sample_metrics"]


def _checkpoint_path(source: str | Path) -> Path:
    source = Path(source)
    path = source / "checkpoints" / "latest.pt" if source.is_dir() else source
    if not path.exists():
        raise FileNotFoundError(
            f"no checkpoint at {path}; pass a run directory written by `mgtoolkit train` "
            "or a checkpoint file"
        )
    return path


def load_model(
    source: str | Path, *, device: str | torch.device = "cpu", mirror_average: bool = False
) -> UNet:
    """The trained network of a run directory (its latest checkpoint) or a checkpoint file.

    Returns the :class:`~mgtoolkit.nn.UNet` in eval mode on ``device``; with
    ``mirror_average`` it predicts the mean over the field's mirror images (see
    :class:`~mgtoolkit.nn.UNet`: exactly symmetric, 2^d times the cost).
    """
    path = _checkpoint_path(source)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path} is not an mgtoolkit training checkpoint")
    model = UNet(UNetConfig(**ckpt["config"]["model"]))
    for _ in range(ckpt["growth"]):
        model.grow()
    model.load_state_dict(ckpt["model"])
    model.mirror_average = mirror_average
    return model.to(device).eval()


@dataclass
class PredictFn:
    """Picklable ``nu -> u_pred`` for :func:`mgtoolkit.data.map_samples` (runs on workers).

    Holds the network's config and weights; builds the network once per process.
    """

    model_config: dict
    growth: int
    state: dict
    threads: int = 1
    mirror_average: bool = False

    @classmethod
    def from_model(cls, model: UNet, *, threads: int = 1) -> PredictFn:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return cls(model.config.to_dict(), model.growth, state, threads, model.mirror_average)

    def __call__(self, nu: np.ndarray) -> np.ndarray:
        net = getattr(self, "_net", None)
        if net is None:
            torch.set_num_threads(self.threads)
            net = UNet(UNetConfig(**self.model_config), mirror_average=self.mirror_average)
            for _ in range(self.growth):
                net.grow()
            net.load_state_dict(self.state)
            self._net = net.eval()
        with torch.no_grad():
            return self._net(torch.as_tensor(nu, dtype=torch.float32)[None])[0].numpy()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_net"}


def sample_metrics(nu: torch.Tensor, u: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Errors of one prediction against the FEM solution (DESIGN.md §1, accuracy measures).

    ``nu`` on cells ``(n,) * d``; ``u``, ``ref`` on nodes ``(n + 1,) * d``. Returns ``rel_l2`` =
    ‖u − ref‖ / ‖ref‖ over nodes, ``max_abs`` = max |u − ref| and ``energy_gap`` =
    (J(u) − J(ref)) / J(ref), computed in float64.
    """
    from mgtoolkit.fem import energy

    nu, u, ref = nu.double(), u.double(), ref.double()
    j, j_ref = float(energy(nu, u)), float(energy(nu, ref))
    return {
        "rel_l2": float((u - ref).norm() / ref.norm()),
        "max_abs": float((u - ref).abs().max()),
        "energy_gap": (j - j_ref) / j_ref,
    }


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
        2^d times the cost). Default: the network's own setting (off when loaded from a run).

    Returns
    -------
    list of dict
        One row per sample: ``sample`` and, when u_fem is complete at that level,
        ``rel_l2``, ``max_abs``, ``energy_gap`` (see :func:`sample_metrics`).
    """
    from mgtoolkit.data import LevelDataset, completed, map_samples

    model = source if isinstance(source, UNet) else load_model(source)
    fn = PredictFn.from_model(model)
    if mirror_average is not None:
        fn.mirror_average = mirror_average
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
