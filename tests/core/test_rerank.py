"""alpha-QE and DBA on toy sets where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.core import rerank


def _unit(*rows: list[float]) -> np.ndarray:
    return rerank.l2_normalise(np.array(rows, dtype=np.float32))


def test_top_k_exact_orders_and_leaves_self_out() -> None:
    db = _unit([1, 0], [0.9, 0.1], [0, 1], [0.5, 0.5])
    idx, sims = rerank.top_k_exact(db, db, 2, exclude_self=True)
    assert idx[0].tolist() == [1, 3]
    assert all(i not in row for i, row in enumerate(idx.tolist()))
    assert (np.diff(sims, axis=1) <= 0).all()


def test_alpha_qe_reaches_an_item_the_plain_query_misses() -> None:
    """Three views of one object and a distractor: the plain query ranks the distractor above
    the third view; expanding with the two views it finds first puts the third view above it."""
    db = _unit([1, 0.3, 0, 0], [1, 0, 0.3, 0], [1, -0.3, -0.3, 0], [0.5, 0, 0, 1])
    q = _unit([1, 0.3, 0.3, 0.5])
    plain = np.argsort(-(q @ db.T)[0]).tolist()
    assert plain == [0, 1, 3, 2]
    idx, sims = rerank.top_k_exact(q, db, 2)
    expanded = rerank.alpha_qe(q, db[idx], sims, alpha=1.0)
    after = np.argsort(-(expanded @ db.T)[0]).tolist()
    assert set(after[:2]) == {0, 1}
    assert after[2] == 2
    assert np.isclose(np.linalg.norm(expanded), 1.0, atol=1e-6)


def test_alpha_weights_follow_similarity() -> None:
    """With a large alpha, a weak neighbour contributes next to nothing."""
    q = _unit([1, 0, 0])
    neighbours = _unit([0.9, 0.1, 0], [0.1, 0, 1])[None, :, :]
    sims = np.array([[0.99, 0.1]], dtype=np.float32)
    strong = rerank.alpha_qe(q, neighbours, sims, alpha=10.0)
    assert strong[0, 2] < 1e-3


def test_dba_pulls_a_group_together() -> None:
    """Two noisy groups: after DBA each vector is closer to its own group's members."""
    rng = np.random.default_rng(0)
    centres = rerank.l2_normalise(rng.normal(size=(2, 16)))
    db = rerank.l2_normalise(np.repeat(centres, 5, axis=0) + 0.6 * rng.normal(size=(10, 16)))
    group = np.repeat([0, 1], 5)
    same = group[:, None] == group[None, :]
    off_diag = ~np.eye(10, dtype=bool)

    def margin(v: np.ndarray) -> float:
        s = v @ v.T
        return float(s[same & off_diag].mean() - s[~same].mean())

    augmented = rerank.dba(db, k=4, alpha=1.0)
    assert margin(augmented) > margin(db)
    assert np.allclose(np.linalg.norm(augmented, axis=1), 1.0, atol=1e-5)


def test_dba_with_k_zero_only_normalises() -> None:
    db = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    assert np.allclose(rerank.dba(db, 0, 1.0), [[0.6, 0.8], [0.0, 1.0]])


def test_neighbour_average_checks_shapes() -> None:
    with pytest.raises(ValueError, match="N x K x D"):
        rerank.neighbour_average(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 1)), 1.0)
