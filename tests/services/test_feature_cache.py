"""The in-memory features of stored images: bounded in bytes, least recently used out first."""

from __future__ import annotations

import numpy as np

from lookalike.embedder.local_features import LocalFeatures
from lookalike.services.feature_cache import FeatureCache


def _features(n: int) -> LocalFeatures:
    # n keypoints: 8 bytes of position and 128 of descriptor each.
    return LocalFeatures("sift", np.zeros((n, 2), np.float32), np.zeros((n, 128), np.uint8))


def test_the_least_recently_used_go_first_past_the_bound() -> None:
    """Past max_bytes the entry used longest ago is dropped; a read counts as a use."""
    cache = FeatureCache(max_bytes=3 * 136 * 10)
    for key in "abc":
        cache.put(key, _features(10))
    assert cache.get("a") is not None
    cache.put("d", _features(10))
    assert cache.get("b") is None
    assert [k for k in "acd" if cache.get(k) is not None] == ["a", "c", "d"]
    assert cache.size_bytes == 3 * 136 * 10
    assert len(cache) == 3


def test_replacing_an_entry_keeps_the_count_and_oversized_ones_are_not_held() -> None:
    """A second put of one key replaces it; features larger than the bound are never held, and
    a cache of 0 bytes holds nothing."""
    cache = FeatureCache(max_bytes=136 * 10)
    cache.put("a", _features(5))
    cache.put("a", _features(10))
    assert cache.size_bytes == 136 * 10
    cache.put("big", _features(11))
    assert cache.get("big") is None
    assert cache.get("a") is not None
    off = FeatureCache(0)
    off.put("a", _features(1))
    assert off.get("a") is None
