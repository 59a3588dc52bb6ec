"""`lookalike bench codes-floats` on a real Milvus server, small: every layout it times answers
with the ids, and the two float copies are the vectors written, bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.codes_floats import LAYOUTS, LIMIT, create, fill, searcher, unit_vectors

pytestmark = pytest.mark.milvus_server


def test_each_layout_answers_and_the_float_copies_are_exact(server_client: Any) -> None:
    x = unit_vectors(300)
    query = np.packbits(x[:1] > 0, axis=1)
    answers = {}
    for layout in LAYOUTS:
        create(server_client, f"bench_codes_{layout}", layout)
        fill(server_client, f"bench_codes_{layout}", layout, x)
        ((ids, floats),) = searcher(server_client, f"bench_codes_{layout}", layout)(query)
        assert len(ids) == LIMIT
        assert ids[0] == 0  # its own code, at Hamming distance 0
        answers[layout] = floats
        if layout != "none":
            assert floats is not None
            assert np.array_equal(floats, x[ids])
    assert answers["none"] is None
