"""Retrieval metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.core.metrics import average_precision, precision_at_k, score_rankings


def test_precision_at_k_counts_missing_results_as_misses() -> None:
    """P@K divides by K even when fewer than K results came back."""
    assert precision_at_k([True, False, True], 2) == 0.5
    assert precision_at_k([True], 5) == 0.2


def test_average_precision_matches_hand_computation() -> None:
    """AP = mean of precision at each relevant rank, over all relevant items."""
    assert average_precision([True, False, True, False], 2) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision([True, True], 2) == 1.0


def test_average_precision_penalises_relevant_items_never_returned() -> None:
    """A relevant item missing from the ranking lowers AP."""
    assert average_precision([True, False], 2) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one relevant"):
        average_precision([True], 0)


def test_score_rankings_averages_over_queries() -> None:
    """The means over queries are the means of the per-query values."""
    scores = score_rankings([[True] * 10, [False] * 10], [10, 3])
    assert scores.queries == 2
    assert scores.p_at_1 == 0.5
    assert scores.p_at_10 == 0.5
    assert scores.mean_ap == pytest.approx(0.5)


def test_score_matrix_agrees_with_the_per_ranking_functions() -> None:
    from lookalike.core.metrics import score_matrix, score_rankings

    rng = np.random.default_rng(3)
    rel = rng.random((20, 30)) < 0.3
    n_rel = rel.sum(axis=1) + rng.integers(1, 3, size=20)
    matrix = score_matrix(rel, n_rel).mean()
    old = score_rankings([list(r) for r in rel], list(n_rel))
    assert matrix["map"] == pytest.approx(old.mean_ap)
    assert matrix["p@10"] == pytest.approx(old.p_at_10)
    assert matrix["p@1"] == pytest.approx(old.p_at_1)


def test_ndcg_at_10() -> None:
    from lookalike.core.metrics import score_matrix

    perfect = score_matrix(np.array([[True, True, False, False]]), np.array([2]))
    assert perfect.ndcg_at_10[0] == pytest.approx(1.0)
    late = score_matrix(np.array([[False, True]]), np.array([1]))
    assert late.ndcg_at_10[0] == pytest.approx(1.0 / np.log2(3))
    missing = score_matrix(np.array([[True, False]]), np.array([2]))
    assert missing.ndcg_at_10[0] == pytest.approx(1.0 / (1.0 + 1.0 / np.log2(3)))


def test_recall_at_k() -> None:
    from lookalike.core.metrics import recall_at_k

    assert recall_at_k(np.array([[1, 2], [3, 4]]), np.array([[2, 1], [3, 5]])) == 0.75
