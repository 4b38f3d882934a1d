"""A family registered by name plugs into generation like the built-in ones."""

import sys

import cloudpickle
import numpy as np

from mgtoolkit.data import generate, open_store
from mgtoolkit.fields import Family, register_family

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/


class TwoLayers:
    """ν = contrast on the cells whose centre has x < ½, 1 elsewhere (a layered medium)."""

    name = "two-layers"
    coarsening = "analytic"
    modes = 1
    data_shape = None

    def parameters(self):
        return {"interface_x": 0.5}

    def draw(self, samples, seed):
        return np.random.default_rng(seed).uniform(1.0, 100.0, size=(samples, 1))

    def check_omega(self, omega):
        return np.asarray(omega, dtype=float).reshape(-1, 1)

    def block(self, sample, omega, *, dim, n, region):
        x = (np.arange(region[-1].start, region[-1].stop) + 0.5) / n
        shape = tuple(r.stop - r.start for r in region)
        return np.broadcast_to(np.where(x < 0.5, omega[0], 1.0), shape).copy()


def test_registered_family_generates_by_name(tmp_path, dask_client):
    assert isinstance(TwoLayers(), Family)
    register_family("two-layers", TwoLayers)
    path = generate(tmp_path / "d.zarr", dim=2, resolution=8, levels=2, samples=3, seed=5,
                    family="two-layers", client=dask_client, progress=False)  # fmt: skip
    tree = open_store(path)
    assert tree.attrs["family"] == "two-layers"
    assert tree.attrs["family_parameters"] == {"interface_x": 0.5}
    contrast = np.random.default_rng(5).uniform(1.0, 100.0, size=3)
    for level, n in ((1, 8), (2, 4)):
        nu = tree[f"level{level}"]["nu"].values
        np.testing.assert_allclose(
            nu[:, :, : n // 2], contrast[:, None, None] * np.ones((3, n, n // 2)), rtol=1e-6
        )
        np.testing.assert_array_equal(nu[:, :, n // 2 :], 1.0)
