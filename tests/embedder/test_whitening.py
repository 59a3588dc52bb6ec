"""PCA whitening: what it does to the descriptors it was learned on, and its artefact."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.embedder.whitening import PCAWhitening, WhiteningError, learn_pca_whitening


def _descriptors(n: int = 400, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Anisotropic: a few directions dominate, as in CNN descriptors.
    x = rng.normal(size=(n, d)) * np.linspace(5.0, 0.2, d)
    out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def test_output_is_unit_norm_with_the_asked_dimension() -> None:
    x = _descriptors()
    w = learn_pca_whitening(x, dim=16)
    out = w.apply(x)
    assert out.shape == (400, 16)
    assert w.dim == 16
    assert w.input_dim == 32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_full_whitening_decorrelates_with_equal_variances() -> None:
    x = _descriptors()
    w = learn_pca_whitening(x, dim=32, power=0.5)
    projected = (x - w.mean) @ w.projection
    cov = np.cov(projected, rowvar=False)
    assert np.allclose(cov, np.eye(32), atol=1e-3)


def test_power_zero_is_a_pure_rotation_that_keeps_cosines() -> None:
    x = _descriptors(d=8)
    w = learn_pca_whitening(x, dim=8, power=0.0)
    centred = x - w.mean
    rotated = centred @ w.projection
    assert np.allclose(rotated @ rotated.T, centred @ centred.T, atol=1e-4)


def test_round_trip_keeps_the_id() -> None:
    w = learn_pca_whitening(_descriptors(), dim=8)
    again = PCAWhitening.from_bytes(w.to_bytes())
    assert again.id == w.id
    assert again.id.startswith("pcaw8-")
    assert np.array_equal(again.projection, w.projection)


def test_clear_errors() -> None:
    with pytest.raises(WhiteningError, match="at most 9 components"):
        learn_pca_whitening(_descriptors(n=10), dim=16)
    with pytest.raises(WhiteningError, match="at least 2"):
        learn_pca_whitening(np.ones((1, 4)))
    with pytest.raises(WhiteningError, match="expects N x 32"):
        learn_pca_whitening(_descriptors(), dim=4).apply(np.ones((2, 5)))
    with pytest.raises(WhiteningError, match="not a whitening artefact"):
        PCAWhitening.from_bytes(b"junk")
