"""The store of the last stage of `kl3d-64` (train_3d_64_contrast.toml): fields weighted toward
high contrast.

256 KL fields at 64³ (one level, FEM-solved): 112 of kl3d-64.zarr's training ω, 112 ω drawn
with a density that grows toward the faces of the box (ω_i = 3 sign(v) |v|^(1/4), v uniform in
[-1, 1], numpy seed 7), and kl3d-64.zarr's
32 held-out ω last, so that the validation fields are the same as in train_3d_64.toml.

    .venv/bin/python examples/make_kl3d_64_contrast.py   # after the stores of train_3d_64.toml
"""

from pathlib import Path

import numpy as np
import zarr

from mgtoolkit.cluster import client_context
from mgtoolkit.data import generate, solve_store

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "data" / "kl3d-64.zarr"
STORE = ROOT / "data" / "kl3d-64-contrast.zarr"


def omegas() -> np.ndarray:
    """ω of the 256 fields, shape (256, 4)."""
    old = np.asarray(zarr.open_group(str(SOURCE), mode="r")["level1"]["omega"][:])
    v = np.random.default_rng(7).uniform(-1, 1, (112, 4))
    return np.concatenate([old[:112], 3.0 * np.sign(v) * np.abs(v) ** 0.25, old[-32:]])


if __name__ == "__main__":
    omega = omegas()
    with client_context(workers=2) as client:
        generate(STORE, dim=3, resolution=64, levels=1, samples=len(omega), seed=None,
                 omega=omega, client=client)  # fmt: skip
        solve_store(STORE, client=client)
