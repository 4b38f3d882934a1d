"""The stores of the last stages of `kl3d-64` (train_3d_64_contrast*.toml): fields weighted
toward high contrast.

256 KL fields at 64³ (one level, FEM-solved): 112 of kl3d-64.zarr's training ω, 112 ω drawn
with a density that grows toward the faces of the box (ω_i = 3 sign(v) |v|^p, v uniform in
[-1, 1]), and kl3d-64.zarr's 32 held-out ω last, so that the validation fields are the same as
in train_3d_64.toml. The defaults make the store of train_3d_64_contrast.toml (p = 1/4, numpy
seed 7, the first 112 training ω); train_3d_64_contrast2.toml's store takes p = 1/8 (a field
in ten has all four |ω_i| ≥ 2.7; none lies at a corner of the box, whose 16 fields the model's
card scores), seed 8 and the other 112 training ω.

    .venv/bin/python examples/make_kl3d_64_contrast.py   # after the stores of train_3d_64.toml
    .venv/bin/python examples/make_kl3d_64_contrast.py --power 0.125 --seed 8 --second-half \\
        --out data/kl3d-64-contrast2.zarr
"""

import argparse
from pathlib import Path

import numpy as np
import zarr

from mgtoolkit.cluster import client_context
from mgtoolkit.data import generate, solve_store

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "data" / "kl3d-64.zarr"


def omegas(*, power: float, seed: int, second_half: bool) -> np.ndarray:
    """ω of the 256 fields, shape (256, 4)."""
    old = np.asarray(zarr.open_group(str(SOURCE), mode="r")["level1"]["omega"][:])
    uniform = old[112:224] if second_half else old[:112]
    v = np.random.default_rng(seed).uniform(-1, 1, (112, 4))
    return np.concatenate([uniform, 3.0 * np.sign(v) * np.abs(v) ** power, old[-32:]])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--power", type=float, default=0.25, help="p in ω_i = 3 sign(v)|v|^p")
    parser.add_argument("--seed", type=int, default=7, help="numpy seed of v")
    parser.add_argument(
        "--second-half", action="store_true", help="take training ω 112–223, not 0–111"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "kl3d-64-contrast.zarr")
    args = parser.parse_args()
    omega = omegas(power=args.power, seed=args.seed, second_half=args.second_half)
    with client_context(workers=2) as client:
        generate(args.out, dim=3, resolution=64, levels=1, samples=len(omega), seed=None,
                 omega=omega, client=client)  # fmt: skip
        solve_store(args.out, client=client)
