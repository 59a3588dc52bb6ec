"""Retrieval metrics: precision at K, average precision, their means over queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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
