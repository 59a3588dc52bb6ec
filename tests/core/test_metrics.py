"""Retrieval metrics against hand-computed values."""

from __future__ import annotations

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
