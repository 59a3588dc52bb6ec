"""The embedder runtime: one L2-normalised result per input, in order, with per-item errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lookalike.embedder.backbones import Backbone, build_backbone
from lookalike.embedder.errors import ImageDecodeError
from lookalike.embedder.model import RetrievalNet, SemanticUnsupported
from lookalike.embedder.runtime import Embedder, category_names
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



def _skimage_jpeg(name: str) -> bytes:
    import skimage.data

    return encode(Image.fromarray(getattr(skimage.data, name)()).convert("RGB"))


def test_predicted_categories_are_the_classifiers_top_1_from_the_same_pass(
    embedder: Embedder,
) -> None:
    """Each outcome carries the backbone's ImageNet top-1 class; computing it leaves the
    descriptor as the plain network gives it, and a bad image still fails alone."""
    cat, coffee = _skimage_jpeg("chelsea"), _skimage_jpeg("coffee")
    outcomes = embedder.embed_bytes([cat, b"junk", coffee])
    assert embedder.predicts_categories
    assert outcomes[0].category in {"Egyptian cat", "tabby", "tiger cat"}
    assert outcomes[1].category == ""
    assert outcomes[1].error is not None
    assert outcomes[2].category in {"espresso", "cup", "coffee mug"}
    images = [embedder.decode(cat), embedder.decode(coffee)]
    vectors, categories = embedder.embed_images_with_categories(images)
    assert categories == [outcomes[0].category, outcomes[2].category]
    np.testing.assert_array_equal(vectors, embedder.embed_images(images))

    backbone = build_backbone("efficientnet_lite0", None, 224)
    plain = RetrievalNet(backbone, "gem", 1.0).eval()
    joined = RetrievalNet(backbone, "gem", 1.0, logits=True).eval()
    assert backbone.head is not None
    pixels = embedder.pixels(images)
    with torch.inference_mode():
        both = joined(pixels)
        assert both.shape == (2, 1280 + 1000)
        np.testing.assert_array_equal(both[:, :1280].numpy(), plain(pixels).numpy())
        # The ImageNet head on average-pooled features, as the family's classifier is run.
        logits = backbone.head(backbone.features(pixels).mean(dim=(2, 3)))
    np.testing.assert_allclose(both[:, 1280:].numpy(), logits.numpy(), atol=1e-4)
    assert category_names(1000)[int(logits[0].argmax())] == outcomes[0].category


def test_category_names_are_imagenets_or_numbered() -> None:
    names = category_names(1000)
    assert (names[0], names[285], names[967]) == ("tench", "Egyptian cat", "espresso")
    assert category_names(3) == ("class_0", "class_1", "class_2")


def test_logits_need_a_classifier() -> None:
    """A backbone without a classifier on pooled features cannot predict a category."""
    features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU())
    headless = Backbone(name="tiny", features=features, channels=8, input_size=32,
                        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), weights_id="none")
    with pytest.raises(SemanticUnsupported, match="cannot predict image categories"):
        RetrievalNet(headless, "gem", 1.0, logits=True)
