"""The embedder runtime: one L2-normalised result per input, in order, with per-item errors."""

from __future__ import annotations

import numpy as np

from lookalike.embedder.errors import ImageDecodeError
from lookalike.embedder.runtime import Embedder
from tests.conftest import encode, gradient_image


def test_one_result_per_input_in_order_with_per_item_errors(embedder: Embedder) -> None:
    """A bad image fails alone; the good ones keep their positions."""
    good = [encode(gradient_image(seed=s)) for s in range(3)]
    outcomes = embedder.embed_bytes([good[0], b"not an image", good[1], b"", good[2]])
    assert [o.ok for o in outcomes] == [True, False, True, False, True]
    assert isinstance(outcomes[1].error, ImageDecodeError)
    alone = embedder.embed_bytes([good[1]])[0]
    assert alone.vector is not None
    assert outcomes[2].vector is not None
    np.testing.assert_allclose(outcomes[2].vector, alone.vector, atol=1e-5)


def test_descriptors_are_unit_norm_float32(embedder: Embedder) -> None:
    """Descriptors are N x D float32 with unit L2 norm, D from the spec."""
    images = [gradient_image(seed=s) for s in range(40)]  # more than one batch
    vectors = embedder.embed_images(images)
    assert vectors.shape == (40, embedder.spec.dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_spec_describes_the_model(embedder: Embedder) -> None:
    """The spec names backbone, weights hash, pooling, input size, dimension and TTA."""
    spec = embedder.spec.to_dict()
    assert spec["backbone"] == "efficientnet_lite0"
    assert spec["weights"].startswith("sha256:")
    assert spec["pooling"] == "gem"
    assert spec["dim"] == 1280
    assert spec["input_size"] == 224
    assert spec["whitening"] == "none"
    assert (spec["scales"], spec["flip"], spec["version"]) == ([1.0], False, 3)
