"""scipy sparse assembly of the same Q1 operator, for validation and small problems."""

from __future__ import annotations

import itertools

import numpy as np

from mgtoolkit.fem.element import reference_stiffness
from mgtoolkit.fem.operator import split_shapes

__all__ = ["assemble"]


def assemble(nu, *, dim: int | None = None):
    """Assemble K(ν) on all nodes as a scipy CSR matrix (Neumann everywhere, no rows removed).

    Parameters
    ----------
    nu : numpy.ndarray or torch.Tensor, shape ``(n,) * d`` on cells (no batch axis)

    Returns
    -------
    scipy.sparse.csr_array, shape ``((n + 1)**d, (n + 1)**d)``, float64
        Nodes numbered in C order of the node array (x fastest), so
        ``assemble(nu) @ u.ravel() == apply_operator(nu, u).ravel()`` to rounding. Exact
        zeros of K̂ (face neighbours in 3D) are not stored: 21 entries per interior row in
        3D, 9 in 2D.
    """
    import scipy.sparse as sp

    values = nu.detach().cpu().numpy() if hasattr(nu, "detach") else np.asarray(nu)
    dim, n, batch = split_shapes(values, dim=dim)
    if batch:
        raise ValueError(f"assemble takes one field of shape (n,)*{dim} (got shape {values.shape})")
    values = values.astype(np.float64)
    k_ref = reference_stiffness(dim) * (1.0 / n) ** (dim - 2)
    node_ids = np.arange((n + 1) ** dim).reshape((n + 1,) * dim)
    corners = list(itertools.product((0, 1), repeat=dim))  # C order, as in reference_stiffness
    # Global node id of corner a of every cell, shape (2**d, n**d).
    ids = np.stack([node_ids[tuple(slice(o, o + n) for o in c)].ravel() for c in corners], axis=0)
    nu_flat = values.ravel()
    rows, cols, data = [], [], []
    for a, b in itertools.product(range(len(corners)), repeat=2):
        if k_ref[a, b] == 0.0:
            continue
        rows.append(ids[a])
        cols.append(ids[b])
        data.append(nu_flat * k_ref[a, b])
    size = (n + 1) ** dim
    mat = sp.coo_array(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(size, size)
    ).tocsr()
    mat.sum_duplicates()
    return mat
