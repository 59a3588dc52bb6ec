"""The verification grid's choice: made on one camera's queries, within the latency budget."""

from __future__ import annotations

import pytest

from bench.verify import Row, choose


def _rows() -> list[Row]:
    return [Row(480, 500, 0, "palm", 0.97, 100.0, 140.0),
            Row(480, 500, 40, "palm", 0.94, 80.0, 130.0),
            Row(640, 1000, 0, "palm", 0.99, 280.0, 400.0),
            Row(640, 500, 0, "palm", 0.97, 110.0, 150.0),
            Row(640, 1000, 0, "e63", 1.0, 10.0, 20.0)]


def test_the_most_right_within_the_budget_ties_to_the_faster() -> None:
    """A configuration over budget never wins, however right; equal top-1 goes to the faster;
    the other camera's rows play no part."""
    assert choose(_rows(), "palm", 150.0) == _rows()[0]
    assert choose(_rows(), "palm", 300.0) == _rows()[2]


def test_nothing_within_the_budget_is_an_error() -> None:
    """A budget no configuration meets stops the benchmark with the reason."""
    with pytest.raises(SystemExit, match="no configuration fits"):
        choose(_rows(), "palm", 50.0)
