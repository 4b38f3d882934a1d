"""Q1 finite elements on the uniform grid: the training loss and the reference solver.

One element algebra (:mod:`~mgtoolkit.fem.element`) gives both the discrete energy
``J(ν, u)`` — the neural solvers' loss — and the matrix-free operator ``K(ν) u = ∇_u J``;
:func:`solve` minimizes the same J with multigrid-preconditioned CG, and :func:`assemble`
builds the same operator as a scipy sparse matrix for validation.
"""

from mgtoolkit.fem.boundary import free_mask, impose_dirichlet
from mgtoolkit.fem.element import reference_stiffness
from mgtoolkit.fem.errors import error_metrics
from mgtoolkit.fem.multigrid import Hierarchy, MultigridConfig
from mgtoolkit.fem.operator import apply_operator, energy, operator_diagonal, slab_energy
from mgtoolkit.fem.solver import ConvergenceError, SolveInfo, solve
from mgtoolkit.fem.sparse import assemble

__all__ = [
    "ConvergenceError",
    "Hierarchy",
    "MultigridConfig",
    "SolveInfo",
    "apply_operator",
    "assemble",
    "energy",
    "error_metrics",
    "free_mask",
    "impose_dirichlet",
    "operator_diagonal",
    "reference_stiffness",
    "slab_energy",
    "solve",
]
