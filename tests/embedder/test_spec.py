"""The model spec: JSON-able, deterministic, versioned, and the JPEG draft size it implies."""

from __future__ import annotations

import json
from typing import Any

from lookalike.embedder.spec import SPEC_VERSION, EmbedderSpec, draft_size, tta_sizes


def _spec(**changes: Any) -> EmbedderSpec:
    base: dict[str, Any] = {
        "backbone": "efficientnet_lite0", "weights": "sha256:0123", "pooling": "gem", "gem_p": 1.0,
        "input_size": 224, "resize": "squash", "whitening": "none", "dim": 1280,
        "decode_px": 256,
    }
    return EmbedderSpec(**{**base, **changes})


def test_to_dict_is_json_able_deterministic_and_versioned() -> None:
    """Scales become a list; the same spec always gives the same JSON; the version is 3."""
    spec = _spec(scales=(1.0, 0.7071067811865476), flip=True)
    first = json.dumps(spec.to_dict())
    assert first == json.dumps(_spec(scales=(1.0, 0.7071067811865476), flip=True).to_dict())
    loaded = json.loads(first)
    assert loaded == spec.to_dict()
    assert loaded["scales"] == [1.0, 0.7071067811865476]
    assert loaded["flip"] is True
    assert loaded["version"] == SPEC_VERSION == 3
    assert EmbedderSpec(**{**loaded, "scales": tuple(loaded["scales"])}) == spec


def test_default_spec_is_one_scale_without_flip() -> None:
    """A spec without TTA says so, and differs from one with TTA."""
    plain = _spec()
    assert plain.to_dict()["scales"] == [1.0]
    assert plain.to_dict()["flip"] is False
    assert plain != _spec(flip=True)
    assert plain.to_dict() != _spec(scales=(1.0, 0.5)).to_dict()


def test_draft_size_covers_the_largest_test_time_input() -> None:
    """JPEGs are drafted no smaller than the largest TTA input, and not at all with decode_px 0."""
    assert tta_sizes(224, (1.0, 0.75, 1.5)) == (224, 168, 336)
    assert draft_size(256, 224, (1.0,)) == 256
    assert draft_size(256, 224, (1.0, 1.5)) == 336
    assert draft_size(0, 224, (1.0, 1.5)) == 0
    assert _spec(scales=(1.0, 2.0)).draft_px() == 448
