"""``mgtoolkit models``: the pretrained networks shipped with the package."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the pretrained models (load one by name anywhere a model is taken)",
        description="List the pretrained networks shipped with mgtoolkit with their held-out "
        "errors against the FEM reference, or show one model's card. Any command that takes "
        "a run directory or checkpoint also takes a model's name, e.g. "
        "`mgtoolkit predict data.zarr kl2d-128`.",
    )
    parser.add_argument("name", nargs="?", default=None, help="show this model's whole card")
    parser.set_defaults(run=_models)


def _models(args: argparse.Namespace) -> int:
    from mgtoolkit import pretrained

    if args.name is not None:
        model = pretrained.get(args.name)
        print(json.dumps({"name": model.name, **model.card}, indent=2))
        print(f"checkpoint: {model.checkpoint}")
        return 0
    models = pretrained.available()
    if not models:
        print("no pretrained models are installed")
        return 0
    print(
        f"{'name':<10} {'trained on':<24} {'rel L2':>7} {'max abs':>8} {'avg rel L2':>11} "
        f"{'avg max abs':>12} {'corners rel L2':>15} {'training':>9}"
    )
    for m in models:
        unseen, corners = m.card["metrics"]["unseen"], m.card["metrics"]["corners"]
        side = "²" if m.dim == 2 else "³"
        print(
            f"{m.name:<10} {m.card['family'] + ' ' + str(m.card['resolution']) + side:<24} "
            f"{unseen['network']['rel_l2']:>7.4f} {unseen['network']['max_abs']:>8.4f} "
            f"{unseen['averaged']['rel_l2']:>11.4f} {unseen['averaged']['max_abs']:>12.4f} "
            f"{corners['network']['rel_l2']:>15.4f} {m.card['training_s'] / 60:>7.1f} min"
        )
    print(
        "errors vs FEM on held-out fields of an unseen seed (mean relative L2, mean per-field "
        "max abs); avg = averaged over the problem's symmetry group (--mirror-average); "
        "corners = the 16 corners of the ω box. Fields finer than a model's: `mgtoolkit "
        "predict STORE NAME --predict-at N` runs it at its N and interpolates u (far more "
        "accurate on smooth fields). `mgtoolkit models NAME` shows a model's card."
    )
    return 0
