"""Content-hash identities: the same bytes always get the same id."""

from __future__ import annotations

import hashlib


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def id_from_sha256(digest_hex: str) -> int:
    """The first 63 bits of a hex SHA-256 as a non-negative INT64 primary key."""
    if len(digest_hex) != 64:
        raise ValueError(f"expected a 64-character hex sha256, got {len(digest_hex)} characters")
    return int(digest_hex[:16], 16) >> 1


def content_id(data: bytes) -> tuple[int, str]:
    """(id, sha256) of `data`."""
    digest = sha256_hex(data)
    return id_from_sha256(digest), digest
