"""Q1 finite elements on the uniform grid: the training loss and the reference solver.

One element algebra (:mod:`~mgtoolkit.fem.element`) gives both the discrete energy
``J(ν, u)`` — the neural solvers' loss — and the matrix-free operator ``K(ν) u = ∇_u J``.
"""

from mgtoolkit.fem.boundary import free_mask, impose_dirichlet
from mgtoolkit.fem.element import reference_stiffness
from mgtoolkit.fem.operator import apply_operator, energy, operator_diagonal

__all__ = [
    "apply_operator",
    "energy",
    "free_mask",
    "impose_dirichlet",
    "operator_diagonal",
    "reference_stiffness",
]
