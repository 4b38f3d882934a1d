"""Pretrained networks shipped with the package, found by name.

Each model is two files in this folder: ``<name>.pt``, a model-only checkpoint in the run
directory's format (tensors and plain data, loaded without unpickling, see
:mod:`mgtoolkit.rundir`), and ``<name>.json``, its card: what it was trained on, the training
configuration, the commit and machine it was trained on, its training time and its held-out
metrics against the finite-element reference. Cards are read without torch, so listing the
models is instant.

Load one with ``mgtoolkit.load_model("<name>")``; every command that takes a run directory or a
checkpoint file (``mgtoolkit predict``, ``predict-tiled``, ``plan --model``) takes the name too.
``mgtoolkit models`` lists them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PretrainedModel", "available", "find", "get", "names"]

_HERE = Path(__file__).parent


@dataclass(frozen=True)
class PretrainedModel:
    """The card of one packaged model.

    Attributes
    ----------
    name : str
        What ``load_model`` and the commands take, e.g. ``"kl2d-128"``.
    checkpoint : Path
        Its checkpoint file (model only, no optimizer state).
    card : dict
        The JSON card: ``description``, ``dim``, ``resolution`` (cells per side of the
        training fields), ``family``, ``config`` (the training configuration), ``commit``,
        ``machine``, ``training_s`` (wall seconds of training), ``metrics`` (per group of
        held-out fields: mean relative L2, mean and worst per-field max abs error, for the
        network and the symmetry-averaged network), ``command`` (how it was made).
    """

    name: str
    checkpoint: Path
    card: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.card["dim"])

    @property
    def rel_l2(self) -> float:
        """The network's mean relative L2 error on the held-out fields of an unseen seed."""
        return float(self.card["metrics"]["unseen"]["network"]["rel_l2"])


def names() -> list[str]:
    """The packaged models' names, sorted."""
    return sorted(p.stem for p in _HERE.glob("*.json") if p.with_suffix(".pt").is_file())


def get(name: str) -> PretrainedModel:
    """The packaged model called ``name``.

    Raises
    ------
    ValueError
        No model has that name (the message lists the names), or its card is not valid JSON
        (a damaged installation).
    """
    found = find(name)
    if found is None:
        raise ValueError(
            f"no pretrained model named {name!r}; the packaged models are: "
            f"{', '.join(names()) or '(none)'} (`mgtoolkit models` lists them)"
        )
    return found


def find(name: str) -> PretrainedModel | None:
    """The packaged model called ``name``, or None (for callers that also accept paths)."""
    if name not in names():
        return None
    card_path = _HERE / f"{name}.json"
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"the card of pretrained model {name!r} ({card_path}) is damaged ({exc}); "
            "reinstall mgtoolkit"
        ) from None
    return PretrainedModel(name=name, checkpoint=_HERE / f"{name}.pt", card=card)


def available() -> list[PretrainedModel]:
    """Every packaged model, by name."""
    return [get(n) for n in names()]
