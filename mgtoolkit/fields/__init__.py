"""Coefficient families: diffusivity fields ν on the cells of any level.

- ``"kl"`` — :class:`KLFamily`, the KL log-permeability family (docs/math.md, 'Coefficient
  family'), evaluated analytically at each level's own cell centres.
- ``"array"`` — :class:`ArrayFamily`, user voxel arrays; coarse levels by geometric mean.

Further families implement the :class:`Family` protocol and are added with
:func:`register_family`.
"""

from mgtoolkit.fields.arrays import ArrayFamily, geometric_coarsen
from mgtoolkit.fields.base import Family, family_names, get_family, register_family
from mgtoolkit.fields.kl import KL_A, KL_LAMBDA, OMEGA_BOUND, KLFamily, kl_xi

__all__ = [
    "KL_A",
    "KL_LAMBDA",
    "OMEGA_BOUND",
    "ArrayFamily",
    "Family",
    "KLFamily",
    "family_names",
    "geometric_coarsen",
    "get_family",
    "kl_xi",
    "register_family",
]
