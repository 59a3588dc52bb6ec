"""Companion collections' pure parts: the float copy kept beside the hash codes."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.core.milvus.companions import (
    MAX_VARCHAR_LEN,
    can_keep_floats,
    decode_floats,
    encode_floats,
    floats_length,
)


@pytest.mark.parametrize("dim", [1, 2, 3, 64, 256, 2048])
def test_floats_round_trip_bit_for_bit(dim: int) -> None:
    rng = np.random.default_rng(dim)
    vector = rng.standard_normal(dim).astype(np.float32)
    vector[0] = np.float32(1e-38)  # subnormal-adjacent values survive too
    text = encode_floats(vector)
    assert len(text) == floats_length(dim)
    back = decode_floats(text)
    assert back.dtype == np.float32
    assert back.shape == (dim,)
    assert back.tobytes() == vector.tobytes()


def test_only_descriptors_that_fit_a_varchar_are_kept() -> None:
    assert can_keep_floats(2048)
    largest = max(d for d in range(1, 20_000) if floats_length(d) <= MAX_VARCHAR_LEN)
    assert can_keep_floats(largest)
    assert not can_keep_floats(largest + 1)
    assert not can_keep_floats(0)
