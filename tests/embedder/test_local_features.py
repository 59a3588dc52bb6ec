"""Local features and geometric verification on photographs that ship with scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from lookalike.embedder.local_features import (
    LocalFeatureConfig,
    LocalFeatureError,
    LocalFeatures,
    extract,
    inliers,
    verified_order,
)

CONFIG = LocalFeatureConfig()
MIN_INLIERS = 12


def _photo(name: str) -> Image.Image:
    array = getattr(data, name)()
    return Image.fromarray(array).convert("RGB")


def _rotated_crop(image: Image.Image, degrees: float = 15.0) -> Image.Image:
    w, h = image.size
    return image.rotate(degrees, expand=True).crop((w // 6, h // 6, w, h))


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "text"])
def test_a_rotated_cropped_copy_verifies(name: str) -> None:
    original = extract(_photo(name), CONFIG)
    copy = extract(_rotated_crop(_photo(name)), CONFIG)
    assert inliers(copy, original, CONFIG) >= 3 * MIN_INLIERS


@pytest.mark.parametrize(("query", "other"), [("coins", "cell"), ("brick", "rocket"),
                                              ("astronaut", "coffee"), ("text", "chelsea")])
def test_unrelated_images_do_not_verify(query: str, other: str) -> None:
    """Many query keypoints matching one candidate keypoint must not make a degenerate
    homography full of 'inliers'."""
    q = extract(_rotated_crop(_photo(query)), CONFIG)
    assert inliers(q, extract(_photo(other), CONFIG), CONFIG) < MIN_INLIERS


def test_round_trip_and_errors() -> None:
    features = extract(_photo("camera"), LocalFeatureConfig(kind="orb", max_features=200))
    again = LocalFeatures.from_bytes(features.to_bytes())
    assert again.kind == "orb"
    assert np.array_equal(again.descriptors, features.descriptors)
    assert len(again) == len(features) > 0
    with pytest.raises(LocalFeatureError, match="not a local feature file"):
        LocalFeatures.from_bytes(b"nope")
    with pytest.raises(LocalFeatureError, match="cannot match"):
        inliers(features, extract(_photo("camera"), CONFIG), CONFIG)


def test_blank_and_tiny_images_give_no_features_or_a_clear_error() -> None:
    assert len(extract(Image.new("RGB", (64, 64), "white"), CONFIG)) == 0
    try:
        tiny = extract(Image.new("RGB", (1, 1)), LocalFeatureConfig(kind="orb"))
    except LocalFeatureError:
        return
    assert len(tiny) == 0


def test_verified_order_puts_verified_first() -> None:
    assert verified_order([0.9, 0.8, 0.7, 0.6], [0, 50, 3, 20], 12) == [1, 3, 0, 2]
    with pytest.raises(ValueError, match="one inlier count"):
        verified_order([0.9], [], 12)
