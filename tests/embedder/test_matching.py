"""Verification of many candidates at once: RootSIFT, the rounds, the tentative-match cut and
the early stop, on photographs that ship with scikit-image."""

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
)
from lookalike.embedder.matching import VerifyPolicy, count_inliers, root_sift, rounds

CONFIG = LocalFeatureConfig()
POLICY = VerifyPolicy(min_inliers=12)
PHOTOS = ("astronaut", "chelsea", "coffee", "text", "coins", "brick", "rocket", "camera",
          "cell", "moon", "page", "horse")


def _photo(name: str) -> Image.Image:
    array = getattr(data, name)()
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    return Image.fromarray(array).convert("RGB")


def _rotated_crop(image: Image.Image, degrees: float = 15.0) -> Image.Image:
    w, h = image.size
    return image.rotate(degrees, expand=True).crop((w // 6, h // 6, w, h))


@pytest.fixture(scope="module")
def database() -> list[LocalFeatures]:
    """The features of a dozen unrelated photographs."""
    return [extract(_photo(name), CONFIG) for name in PHOTOS]


def test_root_sift_is_unit_length_and_keeps_the_nearest_neighbour() -> None:
    """RootSIFT rows have unit norm, so dot products rank as Hellinger distances do."""
    sift = extract(_photo("astronaut"), CONFIG).descriptors
    rooted = root_sift(sift)
    assert rooted.dtype == np.float32
    assert np.allclose(np.linalg.norm(rooted, axis=1), 1.0, atol=1e-5)
    assert (rooted >= 0).all()
    assert root_sift(np.zeros((2, 128), np.uint8)).tolist() == np.zeros((2, 128)).tolist()


def test_rounds_grow_from_ten_to_the_cap() -> None:
    """Candidates are matched 10, 20, then 32 at a time, every position exactly once."""
    sizes = [len(r) for r in rounds(100)]
    assert sizes == [10, 20, 32, 32, 6]
    assert [i for r in rounds(100) for i in r] == list(range(100))
    assert list(rounds(0)) == []


@pytest.mark.parametrize("position", [0, 3, 13, 17])
def test_the_true_match_verifies_wherever_it_is_ranked(
    database: list[LocalFeatures], position: int
) -> None:
    """One count per candidate in order; only the rotated crop's original verifies, at any rank
    and across the rounds."""
    name = PHOTOS[position % len(PHOTOS)]
    query = extract(_rotated_crop(_photo(name)), CONFIG)
    candidates: list[LocalFeatures | None] = list(database)
    candidates += [None] * (20 - len(candidates))
    target = PHOTOS.index(name)
    candidates[target], candidates[position] = candidates[position], candidates[target]
    counts = count_inliers(query, candidates, CONFIG, POLICY)
    assert len(counts) == len(candidates)
    assert counts[position] >= 3 * POLICY.min_inliers
    assert all(n < POLICY.min_inliers for i, n in enumerate(counts) if i != position)


def test_batched_counts_agree_with_the_pairwise_matcher(database: list[LocalFeatures]) -> None:
    """The batched matcher verifies the pairs the one-pair matcher verifies, and no others."""
    query = extract(_rotated_crop(_photo("coffee")), CONFIG)
    batched = count_inliers(query, list(database), CONFIG, POLICY)
    pairwise = [inliers(query, c, CONFIG) for c in database]
    assert [n >= POLICY.min_inliers for n in batched] == [n >= POLICY.min_inliers for n in pairwise]
    target = PHOTOS.index("coffee")
    assert abs(batched[target] - pairwise[target]) <= 0.5 * pairwise[target]


def test_a_confident_round_stops_the_search(database: list[LocalFeatures]) -> None:
    """With confident_inliers set, the candidates after the round that found a confident match
    are not matched (0), and the match keeps its count."""
    query = extract(_rotated_crop(_photo("astronaut")), CONFIG)
    candidates: list[LocalFeatures | None] = [database[0], *([database[1]] * 40)]
    everything = count_inliers(query, candidates, CONFIG, POLICY)
    early = count_inliers(query, candidates, CONFIG,
                          VerifyPolicy(min_inliers=12, confident_inliers=20))
    assert early[0] == everything[0] >= 20
    assert early[10:] == [0] * 31


def test_no_features_no_candidates_and_other_kinds() -> None:
    """An empty query or candidate counts 0; features of another kind are a clear error."""
    empty = LocalFeatures("sift", np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    photo = extract(_photo("camera"), CONFIG)
    assert count_inliers(empty, [photo], CONFIG, POLICY) == [0]
    assert count_inliers(photo, [empty, None], CONFIG, POLICY) == [0, 0]
    assert count_inliers(photo, [], CONFIG, POLICY) == []
    orb = extract(_photo("camera"), LocalFeatureConfig(kind="orb", max_features=200))
    with pytest.raises(LocalFeatureError, match="cannot match"):
        count_inliers(photo, [orb], CONFIG, POLICY)


def test_orb_features_are_matched_pair_by_pair() -> None:
    """ORB (binary) keeps the pairwise matcher, under the same rounds and policy."""
    orb = LocalFeatureConfig(kind="orb", max_features=500)
    query = extract(_rotated_crop(_photo("astronaut")), orb)
    counts = count_inliers(query, [extract(_photo("coins"), orb), extract(_photo("astronaut"), orb)],
                           orb, POLICY)
    assert counts[1] >= POLICY.min_inliers > counts[0]


def test_policy_bounds() -> None:
    """A policy below a homography's 4 points, or a negative early stop, is refused."""
    with pytest.raises(ValueError, match="at least 4"):
        VerifyPolicy(min_inliers=3)
    with pytest.raises(ValueError, match="confident_inliers"):
        VerifyPolicy(confident_inliers=-1)
