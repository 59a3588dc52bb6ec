"""The re-ranking levers applied to cached descriptors: the same functions the product runs.

Whitening is learned on the database descriptors (as `lookalike whiten` learns it on a
collection), DBA augments the database (as at ingest), alpha-QE expands each query and
geometric verification re-orders each query's top N (as at search time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from lookalike.core import rerank
from lookalike.embedder.local_features import LocalFeatureConfig, LocalFeatures, verified_order
from lookalike.embedder.matching import VerifyPolicy, count_inliers
from lookalike.embedder.whitening import PCAWhitening, learn_pca_whitening
from lookalike.evaluation.configs import EvalConfig

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Prepared:
    """Final database and query vectors of one configuration, and the whitening it learned."""

    database: F32
    queries: F32
    whitening: PCAWhitening | None


def whiten_dim(config: EvalConfig, n_database: int, dim: int) -> int:
    """The whitened dimension: as asked, at most what the database can support."""
    return min(config.whiten_dim or dim, n_database - 1, dim)


def prepare(config: EvalConfig, database_raw: F32, external_raw: F32,
            self_index: Sequence[int]) -> Prepared:
    """Apply whitening, DBA and alpha-QE; query i is database row self_index[i] when that is
    >= 0 (a query by stored id uses the stored, augmented vector) and else the next external
    query vector."""
    whitening = None
    db = rerank.l2_normalise(database_raw)
    ext = rerank.l2_normalise(external_raw) if len(external_raw) else external_raw
    if config.whiten:
        whitening = learn_pca_whitening(db, whiten_dim(config, len(db), db.shape[1]),
                                        config.whiten_power)
        db = whitening.apply(db)
        ext = whitening.apply(ext) if len(ext) else np.zeros((0, whitening.dim), np.float32)
    if config.dba_k:
        db = rerank.dba(db, config.dba_k, config.dba_alpha)
    queries = np.zeros((len(self_index), db.shape[1]), dtype=np.float32)
    external = iter(range(len(ext)))
    for i, row in enumerate(self_index):
        queries[i] = db[row] if row >= 0 else ext[next(external)]
    if config.qe_n:
        queries = expand(queries, db, self_index, config.qe_n, config.qe_alpha)
    return Prepared(db, queries, whitening)


def expand(queries: F32, db: F32, self_index: Sequence[int], n: int, alpha: float) -> F32:
    """alpha-QE over the top `n` database neighbours of each query (itself left out)."""
    idx, sims = _top(queries, db, self_index, n)
    return rerank.alpha_qe(queries, db[idx], sims, alpha)


def masked_scores(queries: F32, db: F32, self_index: Sequence[int]) -> F32:
    """Query x database inner products, with each stored query's own row at -inf."""
    scores: F32 = queries @ db.T
    for i, row in enumerate(self_index):
        if row >= 0:
            scores[i, row] = -np.inf
    return scores


def _top(queries: F32, db: F32, self_index: Sequence[int], k: int) -> tuple[I64, F32]:
    scores = masked_scores(queries, db, self_index)
    k = min(k, db.shape[0] - 1)
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return idx.astype(np.int64), np.take_along_axis(scores, idx, axis=1).astype(np.float32)


def full_ranking(queries: F32, db: F32, self_index: Sequence[int]) -> I64:
    """Every database row for every query, best first; a query's own row goes last."""
    scores = masked_scores(queries, db, self_index)
    return np.argsort(-scores, axis=1, kind="stable").astype(np.int64)


def verify_rankings(
    rankings: I64, queries: F32, db: F32, self_index: Sequence[int], top_n: int,
    query_features: Sequence[LocalFeatures], db_features: Sequence[LocalFeatures],
    config: LocalFeatureConfig, policy: VerifyPolicy, progress: bool = False,
) -> I64:
    """Each ranking with its top `top_n` re-ordered by geometric verification, as a search
    verifies them (`matching.count_inliers`, one query at a time)."""
    out = rankings.copy()
    for i in tqdm(range(len(rankings)), desc="verifying", unit="query", disable=not progress,
                  dynamic_ncols=True):
        # A stored query's own row is last in its ranking: never a candidate.
        head = rankings[i, :min(top_n, rankings.shape[1] - (1 if self_index[i] >= 0 else 0))]
        counts = count_inliers(query_features[i], [db_features[int(j)] for j in head], config,
                               policy)
        order = verified_order((db[head] @ queries[i]).tolist(), counts, policy.min_inliers)
        out[i, :len(head)] = head[order]
    return out
