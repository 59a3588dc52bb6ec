"""Test-time augmentation and the whitening hook of the embedder runtime."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from PIL import Image, ImageOps

from lookalike.embedder import functional as LF
from lookalike.embedder.backbones import Backbone, InputSizeUnsupported, build_backbone
from lookalike.embedder.errors import ImageDecodeError
from lookalike.embedder.model import RetrievalNet
from lookalike.embedder.runtime import Embedder, EmbedderConfig, check_tta
from lookalike.embedder.transforms import to_batch
from lookalike.embedder.whitening import WhiteningError, learn_pca_whitening
from tests.conftest import encode, gradient_image


def lite0(**options: Any) -> Embedder:
    """A loaded CPU efficientnet_lite0 embedder with these config options, on torch: these
    tests compare with the bare torch network bit for bit (tests/embedder/test_engines.py holds
    ONNX Runtime to it)."""
    embedder = Embedder(EmbedderConfig(backbone="efficientnet_lite0", device="cpu", threads=2,
                                       engine="torch", **options))
    embedder.load()
    return embedder


@pytest.fixture(scope="module")
def plain() -> Embedder:
    """One pass, no flip, no whitening."""
    return lite0()


@pytest.fixture(scope="module")
def flipped() -> Embedder:
    """Each image also embedded mirrored."""
    return lite0(flip=True)


@pytest.fixture(scope="module")
def net() -> tuple[RetrievalNet, Backbone]:
    """The bare network the embedders run, for computing expected descriptors by hand."""
    backbone = build_backbone("efficientnet_lite0")
    return RetrievalNet(backbone, "gem", 1.0).eval(), backbone


def _forward(net: tuple[RetrievalNet, Backbone], images: Sequence[Image.Image], size: int,
             flip: bool = False) -> torch.Tensor:
    model, backbone = net
    batch = to_batch(images, size, "squash", backbone.mean, backbone.std)
    with torch.inference_mode():
        out: torch.Tensor = model(batch.flip(-1) if flip else batch)
    return out


def _cosine(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    return float(a @ b)


def test_one_scale_without_flip_is_the_plain_path_exactly(
    plain: Embedder, net: tuple[RetrievalNet, Backbone]
) -> None:
    """scales=(1.0,) and no flip give bit-identical descriptors to one forward pass."""
    images = [gradient_image(90 + 7 * s, 60, seed=s) for s in range(5)]
    expected = _forward(net, images, 224).numpy()
    np.testing.assert_array_equal(plain.embed_images(images), expected)
    assert plain.spec.scales == (1.0,)
    assert plain.spec.flip is False


def test_flip_makes_a_mirrored_image_match_the_original(plain: Embedder, flipped: Embedder) -> None:
    """With flip, an image and its mirror image get (nearly) the same descriptor."""
    image = gradient_image(96, 64, seed=3)
    mirror = ImageOps.mirror(image)
    with_flip = flipped.embed_images([image, mirror])
    without = plain.embed_images([image, mirror])
    assert _cosine(with_flip[0], with_flip[1]) > 0.9999
    assert _cosine(without[0], without[1]) < _cosine(with_flip[0], with_flip[1])
    assert flipped.spec.flip is True


def test_scales_and_flip_sum_normalised_passes(net: tuple[RetrievalNet, Backbone]) -> None:
    """Each scale resizes to round(size * s), each pass is L2N; their sum is re-normalised."""
    embedder = lite0(scales=(1.0, 0.75, 1.25), flip=True, batch_size=2)
    images = [gradient_image(80, 120, seed=s) for s in range(3)]
    passes = [_forward(net, images, size, flip) for size in (224, 168, 280) for flip in (False, True)]
    expected = LF.l2n(torch.stack(passes).sum(dim=0)).numpy()
    got = embedder.embed_images(images)
    assert got.shape == (3, 1280)
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert embedder.spec.scales == (1.0, 0.75, 1.25)
    assert embedder.spec.to_dict()["scales"] == [1.0, 0.75, 1.25]


def test_tta_keeps_one_result_per_input_in_order() -> None:
    """Mixed sizes, formats and bad inputs across batches: each good input as if embedded alone."""
    embedder = lite0(scales=(1.0, 0.5), flip=True, batch_size=2)
    good = [encode(gradient_image(100, 60, seed=1)), encode(gradient_image(40, 90, seed=2), "PNG"),
            encode(gradient_image(300, 200, seed=3)), encode(gradient_image(64, 64, seed=4), "WEBP")]
    outcomes = embedder.embed_bytes([good[0], b"not an image", good[1], b"", good[2], good[3]])
    assert [o.ok for o in outcomes] == [True, False, True, False, True, True]
    assert isinstance(outcomes[1].error, ImageDecodeError)
    vectors = [o.vector for o in outcomes if o.vector is not None]
    for data, vector in zip(good, vectors, strict=True):
        alone = embedder.embed_bytes([data])[0].vector
        assert alone is not None
        np.testing.assert_allclose(vector, alone, atol=1e-5)


@pytest.mark.parametrize("scales", [(), (0.0,), (2.5,), (1.0, -0.5), (float("nan"),)])
def test_bad_scales_are_refused(scales: tuple[float, ...]) -> None:
    """Scales must be a non-empty tuple of factors in (0, 2]."""
    with pytest.raises(ValueError, match="scales must"):
        EmbedderConfig(scales=scales)


def test_unknown_pooling_is_refused_with_the_known_ones() -> None:
    """A pooling name nobody knows fails when the config is made."""
    with pytest.raises(ValueError, match="known: gem, mac, spoc, rmac"):
        EmbedderConfig(pooling="avg")


def test_a_scale_too_small_for_the_backbone_is_refused() -> None:
    """A scale that leaves fewer than 32 px is a clear error at load."""
    with pytest.raises(InputSizeUnsupported, match="22 px, below the 32 px"):
        lite0(scales=(1.0, 0.1))


def test_fixed_size_backbones_take_scale_one_only() -> None:
    """A backbone whose input size is fixed accepts flip but no other scale."""
    fixed = Backbone(name="vit_like", features=torch.nn.Identity(), channels=8, input_size=224,
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), weights_id="none", fixed_size=224)
    assert check_tta(fixed, 224, (1.0,)) == (224,)
    with pytest.raises(InputSizeUnsupported, match=r"test-time scales must be \[1.0\]"):
        check_tta(fixed, 224, (1.0, 0.75))


def test_vit_refuses_tta_scales(vit_weights: Path) -> None:
    """A ViT embedder with scales other than 1.0 fails clearly at load."""
    config = EmbedderConfig(backbone="vit_b_16", weights=vit_weights, device="cpu", flip=True,
                            scales=(1.0, 0.75))
    with pytest.raises(InputSizeUnsupported, match="'vit_b_16' takes 224 px inputs only"):
        Embedder(config).load()


def test_whitening_sets_the_spec_and_whitens_the_final_descriptors(flipped: Embedder) -> None:
    """With whitening the spec names it and its dim; outputs are its unit-norm N x d vectors."""
    rng = np.random.default_rng(0)
    whitening = learn_pca_whitening(rng.random((200, 1280), dtype=np.float32), dim=64)
    embedder = lite0(flip=True, whitening=whitening)
    assert embedder.spec.whitening == whitening.id
    assert embedder.spec.dim == 64
    assert flipped.spec.whitening == "none"
    assert flipped.spec.dim == 1280
    images = [gradient_image(seed=s) for s in range(3)]
    vectors = embedder.embed_images(images)
    assert vectors.shape == (3, 64)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, whitening.apply(flipped.embed_images(images)), atol=1e-5)
    assert embedder.embed_images([]).shape == (0, 64)


def test_whitening_of_another_dimension_is_refused_at_load() -> None:
    """A whitening learned on descriptors of another size is a clear error when loading."""
    whitening = learn_pca_whitening(np.random.default_rng(0).random((50, 16)), dim=8)
    with pytest.raises(WhiteningError, match="learned on 16-dimensional descriptors"):
        lite0(whitening=whitening)
