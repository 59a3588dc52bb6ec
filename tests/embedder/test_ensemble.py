"""An ensemble of backbones (`a+b`): each member at its own input size, descriptors joined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lookalike.embedder.backbones import build_backbone, ensemble_members
from lookalike.embedder.errors import ImageDecodeError, UnknownBackbone, WeightsUnavailable
from lookalike.embedder.runtime import Embedder, EmbedderConfig
from tests.conftest import encode, gradient_image

# Members of different input sizes (240 and 224 px), both with ImageNet classifiers.
ENSEMBLE = "efficientnet_lite1+mobilenet_v2"


def _loaded(backbone: str, flip: bool) -> Embedder:
    embedder = Embedder(EmbedderConfig(backbone=backbone, flip=flip, warmup=False))
    embedder.load()
    return embedder


@pytest.mark.parametrize("flip", [False, True])
def test_the_descriptor_is_each_members_own_descriptor_joined(flip: bool) -> None:
    """Each member embeds the image exactly as it would alone (its own size, its own test-time
    passes); the ensemble's descriptor is their concatenation normalised, its logits their mean,
    and a bad image still fails alone."""
    ensemble = _loaded(ENSEMBLE, flip)
    members = [_loaded(name, flip) for name in ENSEMBLE.split("+")]
    blobs = [encode(gradient_image(width=120 + 8 * s, height=80, seed=s)) for s in range(3)]

    outcomes = ensemble.embed_bytes([blobs[0], b"not an image", blobs[1], blobs[2]])
    assert [o.ok for o in outcomes] == [True, False, True, True]
    assert isinstance(outcomes[1].error, ImageDecodeError)

    images = [ensemble.decode(data) for data in blobs]
    parts = [member.embed_images_with_logits(images) for member in members]
    joined = np.concatenate([vectors for vectors, _ in parts], axis=1)
    expected = joined / np.linalg.norm(joined, axis=1, keepdims=True)
    mean_logits = np.mean([logits for _, logits in parts], axis=0)
    vectors, logits = ensemble.embed_images_with_logits(images)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(logits, mean_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.stack([o.vector for o in outcomes if o.vector is not None]),
                               expected, atol=1e-5)
    assert [o.category for o in outcomes if o.ok] == ensemble.categories_of(mean_logits)

    spec = ensemble.spec
    assert spec.backbone == ENSEMBLE
    assert spec.dim == 1280 + 1280
    assert spec.weights == "+".join(m.spec.weights for m in members)
    # The largest member's size: JPEGs are decoded for it.
    assert spec.input_size == 240
    assert ensemble.members == ("efficientnet_lite1", "mobilenet_v2")


def test_the_forward_of_each_member_takes_its_own_input() -> None:
    """`pixels` and `forward` address one member, as `bench embed` times them."""
    ensemble = _loaded(ENSEMBLE, flip=False)
    images = [gradient_image(seed=4)]
    shapes = [tuple(ensemble.pixels(images, member=i).shape) for i in range(2)]
    assert shapes == [(1, 3, 240, 240), (1, 3, 224, 224)]
    out = ensemble.forward(ensemble.pixels(images, member=1), member=1)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 1280 + 1000)


def test_bad_ensembles_are_refused_with_the_reason(tmp_path: Path) -> None:
    """An unknown member is named, a member twice is refused, a weights file (one model) does
    not fit an ensemble, and the single-backbone builder points to the embedder."""
    with pytest.raises(UnknownBackbone, match=r"unknown member\(s\) \['resnet5000'\]"):
        ensemble_members("efficientnet_lite0+resnet5000")
    with pytest.raises(UnknownBackbone, match="twice"):
        ensemble_members("mobilenet_v2+mobilenet_v2")
    with pytest.raises(UnknownBackbone, match="unknown backbone 'nope'"):
        ensemble_members("nope")
    assert ensemble_members("mobilenet_v2") == ("mobilenet_v2",)
    with pytest.raises(UnknownBackbone, match="only the embedder runs ensembles"):
        build_backbone(ENSEMBLE)
    weights = tmp_path / "w.pt"
    torch.save({}, weights)
    with pytest.raises(WeightsUnavailable, match="ensemble of 2"):
        Embedder(EmbedderConfig(backbone=ENSEMBLE, weights=weights)).load()
