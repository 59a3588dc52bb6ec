"""Content-hash ids."""

from __future__ import annotations

import pytest

from lookalike.core.ids import content_id, id_from_sha256, sha256_hex


def test_same_bytes_same_id_and_ids_fit_int64() -> None:
    """Equal bytes give equal ids; ids are non-negative and below 2**63."""
    a, digest = content_id(b"lookalike")
    b, _ = content_id(b"lookalike")
    c, _ = content_id(b"lookalike!")
    assert a == b != c
    assert digest == sha256_hex(b"lookalike")
    assert 0 <= a < 2**63


def test_id_is_the_first_63_bits_of_the_digest() -> None:
    """The id keeps the top 63 bits of the hash."""
    assert id_from_sha256("f" * 64) == 2**63 - 1
    assert id_from_sha256("0" * 64) == 0
    with pytest.raises(ValueError, match="64-character"):
        id_from_sha256("abc")
