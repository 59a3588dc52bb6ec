"""Retrieval metrics: precision at K, average precision, their means over queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


def precision_at_k(relevant: Sequence[bool], k: int) -> float:
    """Fraction of the first `k` results that are relevant (missing results count as misses)."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return float(sum(bool(r) for r in relevant[:k])) / k


def average_precision(relevant: Sequence[bool], n_relevant: int) -> float:
    """AP of one ranking.

    `relevant[i]` says whether the result at rank i+1 is relevant; `n_relevant` is how many
    relevant items the database holds (the query itself excluded). Relevant items the ranking
    never returns count as retrieved at no rank, so a truncated ranking can only lower AP.
    """
    if n_relevant <= 0:
        raise ValueError("a query needs at least one relevant item in the database")
    flags = np.asarray(relevant, dtype=bool)
    if flags.sum() > n_relevant:
        raise ValueError(f"ranking holds {int(flags.sum())} relevant items, expected <= {n_relevant}")
    hits = np.cumsum(flags)
    ranks = np.arange(1, len(flags) + 1)
    return float((hits[flags] / ranks[flags]).sum() / n_relevant)


@dataclass(frozen=True, slots=True)
class RankingScores:
    """Mean retrieval scores over a set of queries."""

    queries: int
    p_at_1: float
    p_at_5: float
    p_at_10: float
    mean_ap: float


def score_rankings(rankings: Sequence[Sequence[bool]], n_relevant: Sequence[int]) -> RankingScores:
    """Mean P@1, P@5, P@10 and mAP over queries; one ranking and relevant count per query."""
    if len(rankings) != len(n_relevant):
        raise ValueError("one relevant count per ranking is required")
    if not rankings:
        raise ValueError("no queries to score")
    return RankingScores(
        queries=len(rankings),
        p_at_1=float(np.mean([precision_at_k(r, 1) for r in rankings])),
        p_at_5=float(np.mean([precision_at_k(r, 5) for r in rankings])),
        p_at_10=float(np.mean([precision_at_k(r, 10) for r in rankings])),
        mean_ap=float(np.mean([average_precision(r, n) for r, n in zip(rankings, n_relevant,
                                                                          strict=True)])),
    )


@dataclass(frozen=True, slots=True)
class MatrixScores:
    """Per-query scores of a relevance matrix (queries x ranks), for means and breakdowns."""

    p_at_1: NDArray[np.float64]
    p_at_5: NDArray[np.float64]
    p_at_10: NDArray[np.float64]
    ap: NDArray[np.float64]
    ndcg_at_10: NDArray[np.float64]

    def mean(self) -> dict[str, float]:
        """Means over every query."""
        return {
            "p@1": float(self.p_at_1.mean()), "p@5": float(self.p_at_5.mean()),
            "p@10": float(self.p_at_10.mean()), "map": float(self.ap.mean()),
            "ndcg@10": float(self.ndcg_at_10.mean()),
        }


def score_matrix(relevant: NDArray[np.bool_], n_relevant: NDArray[np.integer]) -> MatrixScores:
    """P@1/5/10, AP and NDCG@10 (binary gains) of every row of a queries x ranks matrix.

    Row i is query i's ranking (True where the result is relevant); `n_relevant[i]` counts its
    relevant items in the database, so relevant items missing from a truncated ranking lower
    AP and the ideal DCG as they should.
    """
    rel = np.asarray(relevant, dtype=bool)
    n_rel = np.asarray(n_relevant, dtype=np.int64)
    if rel.ndim != 2 or rel.shape[0] != n_rel.shape[0]:
        raise ValueError(f"expected a queries x ranks matrix and one count per query, got "
                         f"{rel.shape} and {n_rel.shape}")
    if (n_rel <= 0).any():
        raise ValueError("every query needs at least one relevant item in the database")
    if (rel.sum(axis=1) > n_rel).any():
        raise ValueError("a ranking holds more relevant items than the database")
    ranks = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    hits = np.cumsum(rel, axis=1)
    ap = (np.where(rel, hits / ranks, 0.0)).sum(axis=1) / n_rel

    def p_at(k: int) -> NDArray[np.float64]:
        return np.asarray(rel[:, :k].sum(axis=1) / k, dtype=np.float64)

    discounts = 1.0 / np.log2(np.arange(2, 12, dtype=np.float64))
    top = rel[:, :10].astype(np.float64)
    dcg = (top * discounts[:top.shape[1]]).sum(axis=1)
    ideal = np.array([discounts[:min(int(n), 10)].sum() for n in n_rel])
    return MatrixScores(p_at(1), p_at(5), p_at(10), np.asarray(ap, dtype=np.float64), dcg / ideal)


def recall_at_k(approximate: NDArray[np.integer], exact: NDArray[np.integer]) -> float:
    """Mean fraction of each query's exact top-K that the approximate top-K also returns."""
    a = np.asarray(approximate)
    e = np.asarray(exact)
    if a.shape != e.shape or a.ndim != 2:
        raise ValueError(f"expected two queries x K matrices of one shape, got {a.shape}, {e.shape}")
    found = [len(set(row_a.tolist()) & set(row_e.tolist())) for row_a, row_e in zip(a, e, strict=True)]
    return float(np.mean(found) / e.shape[1]) if e.shape[1] else 1.0
