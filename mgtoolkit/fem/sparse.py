"""scipy sparse assembly of the same Q1 operator, for validation and small problems."""

from __future__ import annotations

import itertools

import numpy as np

from mgtoolkit.fem.element import reference_stiffness
from mgtoolkit.fem.operator import split_shapes

__all__ = ["assemble"]

#: Rows assembled at once: bounds the COO temporaries (≈ 16 bytes × 40 entries per row in 3D),
#: so that the transient memory stays well below that of the finished matrix at 257³ nodes.
_BLOCK_ROWS = 2**21


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

    Rows are assembled in slabs of node planes (first axis), each from the cells that touch it,
    so the temporaries stay bounded: 257³ nodes need about 4.3 GiB for the matrix and twice
    that while the slabs are stacked, instead of the ~25 GiB of one global COO.
    """
    import scipy.sparse as sp

    values = nu.detach().cpu().numpy() if hasattr(nu, "detach") else np.asarray(nu)
    dim, n, batch = split_shapes(values, dim=dim)
    if batch:
        raise ValueError(f"assemble takes one field of shape (n,)*{dim} (got shape {values.shape})")
    values = values.astype(np.float64)
    k_ref = reference_stiffness(dim) * (1.0 / n) ** (dim - 2)
    size, plane = (n + 1) ** dim, (n + 1) ** (dim - 1)
    node_ids = np.arange(size, dtype=np.int32 if size < 2**31 else np.int64)
    node_ids = node_ids.reshape((n + 1,) * dim)
    corners = list(itertools.product((0, 1), repeat=dim))  # C order, as in reference_stiffness
    pairs = [(a, b) for a, b in itertools.product(corners, repeat=2) if k_ref[_i(a), _i(b)]]

    def corner_nodes(c: tuple[int, ...], lo: int, hi: int) -> np.ndarray:
        """Node id of corner ``c`` of every cell in cell planes ``lo .. hi`` (flattened)."""
        index = (slice(lo + c[0], hi + c[0]), *(slice(o, o + n) for o in c[1:]))
        return node_ids[index].ravel()

    step = max(1, _BLOCK_ROWS // plane)
    blocks = []
    for z0 in range(0, n + 1, step):
        z1 = min(z0 + step, n + 1)
        rows, cols, data = [], [], []
        for a, b in pairs:
            # Cells whose corner a lies in node planes z0 .. z1 - 1.
            lo, hi = max(z0 - a[0], 0), min(z1 - a[0], n)
            if lo >= hi:
                continue
            rows.append(corner_nodes(a, lo, hi) - z0 * plane)
            cols.append(corner_nodes(b, lo, hi))
            data.append(values[lo:hi].ravel() * k_ref[_i(a), _i(b)])
        block = sp.coo_array(
            (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
            shape=((z1 - z0) * plane, size),
        ).tocsr()
        del rows, cols, data
        block.sum_duplicates()
        blocks.append(block)
    mat = sp.vstack(blocks, format="csr")
    mat.sum_duplicates()
    return mat


def _i(corner: tuple[int, ...]) -> int:
    """Index of a corner (offsets 0/1 per axis) in the C-ordered element matrix."""
    return int("".join(map(str, corner)), 2)
