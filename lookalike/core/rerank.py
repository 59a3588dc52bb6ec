"""Re-ranking by neighbour averaging: alpha-query expansion and database-side augmentation.

Both replace a vector by the normalised, similarity-weighted sum of itself and its nearest
neighbours (Radenović et al., "Fine-tuning CNN image retrieval with no human annotation"):
weight_i = max(sim_i, 0) ** alpha, the vector itself weighted 1. alpha-QE does it to the query at
search time; DBA does it to every database vector once, so queries need nothing extra.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]


def l2_normalise(x: NDArray[np.floating]) -> F32:
    """Rows of `x` scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def neighbour_average(
    vectors: NDArray[np.floating], neighbours: NDArray[np.floating], sims: NDArray[np.floating],
    alpha: float,
) -> F32:
    """N x D `vectors` averaged with their K neighbours (N x K x D) weighted by `sims` (N x K)."""
    v = np.asarray(vectors, dtype=np.float32)
    nb = np.asarray(neighbours, dtype=np.float32)
    if nb.ndim != 3 or nb.shape[0] != v.shape[0] or nb.shape[2] != v.shape[1]:
        raise ValueError(f"neighbours must be N x K x D for N x D vectors; got {nb.shape} "
                         f"for {v.shape}")
    weights = np.clip(np.asarray(sims, dtype=np.float32), 0.0, None) ** alpha
    return l2_normalise(v + np.einsum("nk,nkd->nd", weights, nb))


def alpha_qe(
    queries: NDArray[np.floating], neighbours: NDArray[np.floating],
    sims: NDArray[np.floating], alpha: float,
) -> F32:
    """alpha-query expansion: the new query vectors, to be searched again."""
    return neighbour_average(queries, neighbours, sims, alpha)


def top_k_exact(
    queries: NDArray[np.floating], database: NDArray[np.floating], k: int,
    exclude_self: bool = False, chunk: int = 1024,
) -> tuple[NDArray[np.int64], F32]:
    """Indices and inner products of each query's `k` best database rows, best first.

    `exclude_self` leaves out row i for query i (the queries are the database).
    """
    q = np.asarray(queries, dtype=np.float32)
    db = np.asarray(database, dtype=np.float32)
    k = min(k, db.shape[0] - (1 if exclude_self else 0))
    idx_out = np.zeros((q.shape[0], max(k, 0)), dtype=np.int64)
    sim_out = np.zeros((q.shape[0], max(k, 0)), dtype=np.float32)
    if k <= 0:
        return idx_out, sim_out
    for start in range(0, q.shape[0], chunk):
        s = q[start:start + chunk] @ db.T
        if exclude_self:
            rows = np.arange(s.shape[0])
            s[rows, rows + start] = -np.inf
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        part_sims = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-part_sims, axis=1, kind="stable")
        idx_out[start:start + chunk] = np.take_along_axis(part, order, axis=1)
        sim_out[start:start + chunk] = np.take_along_axis(part_sims, order, axis=1)
    return idx_out, sim_out


def dba(database: NDArray[np.floating], k: int, alpha: float) -> F32:
    """Database-side augmentation over a whole in-memory database (N x D), exact neighbours."""
    db = l2_normalise(database)
    if k <= 0 or db.shape[0] < 2:
        return db
    idx, sims = top_k_exact(db, db, k, exclude_self=True)
    return neighbour_average(db, db[idx], sims, alpha)
