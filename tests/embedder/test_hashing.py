"""ITQ hashing: code layout, determinism, quantisation loss, near-duplicate recall, and its artefact."""

from __future__ import annotations

import io
from itertools import pairwise

import numpy as np
import pytest

from lookalike.embedder.errors import EmbedderError
from lookalike.embedder.hashing import (
    HASH_BITS,
    HashingError,
    ItqHash,
    hamming_distances,
    itq_from_linear,
    learn_itq,
)


def _l2n(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def _clustered(
    n: int = 200, d: int = 128, clusters: int = 20, spread: float = 0.5, seed: int = 0
) -> np.ndarray:
    """n unit vectors, row i in cluster i % clusters, around gaussian centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    return _l2n(centres[np.arange(n) % clusters] + spread * rng.normal(size=(n, d)))


def _near_duplicates(x: np.ndarray, noise: float, seed: int = 1) -> np.ndarray:
    """Each row plus a random perturbation of norm `noise`, renormalised."""
    rng = np.random.default_rng(seed)
    return _l2n(x + noise * _l2n(rng.normal(size=x.shape)))


def _quantisation_loss(h: ItqHash, x: np.ndarray, rotation: np.ndarray) -> float:
    """||sign(V R) - V R||^2 with V the centred PCA projection of x."""
    vr = (x - h.mean) @ h.projection @ rotation
    return float(((np.where(vr >= 0, 1.0, -1.0) - vr) ** 2).sum())


@pytest.mark.parametrize("bits", HASH_BITS)
def test_codes_have_one_row_of_bits_over_8_bytes_per_input(bits: int) -> None:
    x = _clustered(n=300, d=256)
    h = learn_itq(x, bits, iterations=10)
    codes = h.encode(x[:7])
    assert codes.shape == (7, bits // 8)
    assert codes.dtype == np.uint8
    assert (h.bits, h.input_dim, h.code_bytes) == (bits, 256, bits // 8)
    assert h.id.startswith(f"itq{bits}-")
    assert h.encode(np.empty((0, 256), dtype=np.float32)).shape == (0, bits // 8)


def test_bit_i_is_the_sign_of_component_i() -> None:
    x = _clustered()
    h = learn_itq(x, 64)
    assert np.array_equal(np.unpackbits(h.encode(x), axis=1), (h.project(x) > 0).astype(np.uint8))


def test_learning_and_encoding_are_deterministic() -> None:
    x = _clustered()
    a, b = learn_itq(x, 64, seed=3), learn_itq(x, 64, seed=3)
    assert a.id == b.id
    assert np.array_equal(a.rotation, b.rotation)
    assert np.array_equal(a.encode(x), a.encode(x))
    assert learn_itq(x, 64, seed=4).id != a.id


def test_round_trip_keeps_the_codes_and_the_id() -> None:
    x = _clustered()
    h = learn_itq(x, 128)
    again = ItqHash.from_bytes(h.to_bytes())
    assert again.id == h.id
    assert np.array_equal(again.encode(x), h.encode(x))


def test_rotation_is_orthogonal() -> None:
    h = learn_itq(_clustered(), 128)
    assert np.allclose(h.rotation @ h.rotation.T, np.eye(128), atol=1e-5)


def test_itq_loses_less_than_its_random_start_and_than_plain_pca_signs() -> None:
    x = _clustered(n=400, d=128)
    h = learn_itq(x, 64)
    start = learn_itq(x, 64, iterations=0)
    steps = [learn_itq(x, 64, iterations=k) for k in (0, 1, 5, 20)]
    losses = [_quantisation_loss(step, x, step.rotation) for step in steps]
    itq = _quantisation_loss(h, x, h.rotation)
    assert itq < 0.98 * _quantisation_loss(start, x, start.rotation)
    assert itq < 0.95 * _quantisation_loss(h, x, np.eye(64, dtype=np.float32))
    # Each ITQ step minimises the loss over the codes, then over the rotation: it never goes up.
    assert all(later <= earlier * (1 + 1e-5) for earlier, later in pairwise(losses))


def test_near_duplicates_are_closer_than_unrelated_vectors() -> None:
    x = _clustered()
    h = learn_itq(x, 128)
    distances = hamming_distances(h.encode(_near_duplicates(x, noise=0.3)), h.encode(x))
    to_original = np.diag(distances)
    other_cluster = (np.arange(200)[:, None] % 20) != (np.arange(200)[None, :] % 20)
    to_unrelated = np.where(other_cluster, distances, np.iinfo(np.int64).max).min(axis=1)
    assert (to_original < to_unrelated).all()
    assert to_original.mean() < 0.1 * distances[other_cluster].mean()


def test_hamming_top1_of_a_noisy_copy_is_its_original() -> None:
    x = _clustered()
    h = learn_itq(x, 128)
    distances = hamming_distances(h.encode(_near_duplicates(x, noise=0.3)), h.encode(x))
    to_others = np.where(np.eye(200, dtype=bool), np.iinfo(np.int64).max, distances).min(axis=1)
    # Strictly closer than every other vector: a tie does not count as a hit.
    assert (np.diag(distances) < to_others).mean() >= 0.95


def test_hamming_distances_count_differing_bits() -> None:
    a = np.array([[0b00000000, 0b11111111]], dtype=np.uint8)
    b = np.array([[0b00000000, 0b11111111], [0b10000001, 0b11110000], [255, 0]], dtype=np.uint8)
    assert hamming_distances(a, b).tolist() == [[0, 6, 16]]
    assert hamming_distances(a, b[:0]).shape == (1, 0)


def test_learning_refuses_what_it_cannot_learn_from() -> None:
    x = _clustered(d=128)
    assert issubclass(HashingError, EmbedderError)
    with pytest.raises(HashingError, match=r"bits must be one of \(48, 64, 128, 256\), got 100"):
        learn_itq(x, 100)
    with pytest.raises(HashingError, match="256 bits from descriptors of dimension 128"):
        learn_itq(x, 256)
    with pytest.raises(HashingError, match="at least 128 descriptors to learn 128 bits, got 100"):
        learn_itq(x[:100], 128)
    nan = x.copy()
    nan[3, 5] = np.nan
    with pytest.raises(HashingError, match="NaN or infinite"):
        learn_itq(nan, 64)


def test_encoding_refuses_bad_descriptors() -> None:
    x = _clustered()
    h = learn_itq(x, 64)
    with pytest.raises(HashingError, match="expects N x 128 descriptors, got \\(2, 127\\)"):
        h.encode(x[:2, :127])
    with pytest.raises(HashingError, match="expects N x 128"):
        h.encode(x[0])
    bad = x[:4].copy()
    bad[1, 0] = np.inf
    bad[2, 7] = np.nan
    with pytest.raises(HashingError, match="2 of 4 descriptors contain NaN or infinite"):
        h.encode(bad)
    with pytest.raises(HashingError, match="uint8 code matrices"):
        hamming_distances(h.encode(x), h.encode(x).astype(np.int64))


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    return buf.getvalue()


def test_loading_refuses_malformed_artefacts() -> None:
    h = learn_itq(_clustered(), 64)
    good: dict[str, np.ndarray] = {
        "format_version": np.array(1, dtype=np.int64),
        "mean": h.mean,
        "projection": h.projection,
        "rotation": h.rotation,
    }
    with pytest.raises(HashingError, match="not an ITQ artefact"):
        ItqHash.from_bytes(b"junk")
    with pytest.raises(HashingError, match="not an ITQ artefact"):
        ItqHash.from_bytes(h.to_bytes()[:100])
    with pytest.raises(HashingError, match="rotation"):
        ItqHash.from_bytes(_npz(**{k: v for k, v in good.items() if k != "rotation"}))
    with pytest.raises(HashingError, match="format version 2"):
        ItqHash.from_bytes(_npz(**{**good, "format_version": np.array(2, dtype=np.int64)}))
    with pytest.raises(HashingError, match="rotation must be 64 x 64"):
        ItqHash.from_bytes(_npz(**{**good, "rotation": h.rotation[:32, :32]}))
    with pytest.raises(HashingError, match="mean must have shape \\(128,\\)"):
        ItqHash.from_bytes(_npz(**{**good, "mean": h.mean[:10]}))


def test_a_linear_hash_layer_is_an_itq_hash_with_the_same_codes() -> None:
    """sigmoid(W x + b) > 0.5 bit for bit, for the 48 bits of a learned latent layer."""
    rng = np.random.default_rng(5)
    x = _clustered(n=500, d=96)
    w = rng.normal(size=(48, 96)).astype(np.float32)
    b = rng.normal(scale=0.3, size=48).astype(np.float32)
    h = itq_from_linear(w, b)
    expected = 1.0 / (1.0 + np.exp(-(x.astype(np.float64) @ w.T + b))) > 0.5
    assert h.bits == 48
    assert np.array_equal(np.unpackbits(h.encode(x), axis=1).astype(bool), expected)
    assert ItqHash.from_bytes(h.to_bytes()).id == h.id


def test_a_rank_deficient_linear_hash_layer_is_rejected() -> None:
    w = np.ones((48, 96), dtype=np.float32)
    with pytest.raises(HashingError, match="full row rank"):
        itq_from_linear(w, np.zeros(48, dtype=np.float32))
