"""The coefficient-family protocol and the registry of families by name.

A *family* turns a sample index and its parameters ω into diffusivity values ν on the cells of
any level. Generation (:func:`mgtoolkit.data.generate`) only talks to this protocol, so new
families (voxel images, random inclusions, …) plug in beside the built-in ones with
:func:`register_family`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Family", "family_names", "get_family", "register_family"]


@runtime_checkable
class Family(Protocol):
    """What a coefficient family provides.

    Attributes
    ----------
    name : str
        Registry name, recorded in the store (``attrs["family"]``).
    coarsening : str
        How coarse levels are made, recorded in the store: ``"analytic"`` (every level evaluated
        at its own cell centres) or ``"geometric-mean"`` (mean of log ν over the 2^d children).
    modes : int
        Length of the parameter vector ω of one sample (0 for families without parameters;
        their stores hold no ``omega`` variable).
    data_shape : tuple[int, int, int] or None
        ``(samples, dim, n)`` when the family is bound to existing data (user arrays), which then
        fixes the dataset's size; None for families that can make any number of samples.
    """

    name: str
    coarsening: str
    modes: int
    data_shape: tuple[int, int, int] | None

    def parameters(self) -> dict[str, Any]:
        """JSON-serialisable parameters; two families with equal parameters make equal fields."""
        ...

    def draw(self, samples: int, seed: int | None) -> np.ndarray:
        """Parameters ω of ``samples`` samples, ``(samples, modes)``, reproducible from ``seed``."""
        ...

    def check_omega(self, omega: Any) -> np.ndarray:
        """Validate user-given ω of shape ``(samples, modes)``; raise ValueError naming the fix."""
        ...

    def block(
        self, sample: int, omega: np.ndarray, *, dim: int, n: int, region: tuple[slice, ...]
    ) -> np.ndarray:
        """ν on the cells ``region`` of a grid with ``n`` cells per side, float64, shape of region.

        ``region`` holds one ``slice(start, stop)`` per spatial axis, in array order (x last);
        ``omega`` is this sample's parameter vector, shape ``(modes,)``.
        """
        ...


_REGISTRY: dict[str, Callable[..., Family]] = {}


def register_family(name: str, factory: Callable[..., Family]) -> None:
    """Make ``factory(**params)`` available as ``get_family(name, **params)``.

    Re-registering a name replaces the previous factory (useful in notebooks).
    """
    _REGISTRY[name] = factory


def family_names() -> tuple[str, ...]:
    """Registered family names, sorted."""
    return tuple(sorted(_REGISTRY))


def get_family(family: str | Family, **params: Any) -> Family:
    """Resolve a family name (or pass a Family instance through unchanged)."""
    if not isinstance(family, str):
        if not isinstance(family, Family):
            raise TypeError(
                f"family must be a registered name {family_names()} or an object implementing "
                f"mgtoolkit.fields.Family (got {type(family).__name__})"
            )
        return family
    try:
        factory = _REGISTRY[family]
    except KeyError:
        raise ValueError(
            f"unknown coefficient family {family!r}; choose one of {', '.join(family_names())} "
            "or register yours with mgtoolkit.fields.register_family"
        ) from None
    return factory(**params)
