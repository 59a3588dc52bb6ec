"""Geometric verification of many candidates at once: one matrix product per round of
candidates instead of one brute-force matcher per pair.

SIFT descriptors are compared as RootSIFT (Arandjelovic & Zisserman, CVPR 2012: L1-normalised,
then square-rooted, so the dot product is the Hellinger kernel and unit vectors' squared distance
is 2 - 2 x dot). A query's keypoints are scored against every keypoint of a round's candidates in
one product, each candidate's two nearest neighbours per query keypoint give Lowe's ratio test,
and only candidates with at least `min_inliers` tentative matches go to the robust fit
(OpenCV's USAC MAGSAC++ where it has it, else RANSAC): inliers never outnumber tentative
matches, so the others could not verify anyway. Rounds follow the global ranking, 10 candidates
first and twice as many each round after; with `confident_inliers` set, a round that verifies
one candidate with that many inliers ends the search (the global ranking was good enough).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lookalike.embedder.local_features import (
    LocalFeatureConfig,
    LocalFeatureError,
    LocalFeatures,
    inliers,
)

F32 = NDArray[np.float32]
# A homography needs 4 correspondences.
_MIN_FIT = 4
FIRST_ROUND = 10
# Candidates scored in one product at most: bounds the score tensor (query x round x keypoints)
# to about 32 MB at 500 keypoints a side.
MAX_ROUND = 32


@dataclass(frozen=True, slots=True)
class VerifyPolicy:
    """When a candidate counts as verified, and when verification may stop early.

    `confident_inliers` 0 verifies every candidate it is given; above 0, the first round that
    verifies a candidate with at least that many inliers is the last.
    """

    min_inliers: int = 12
    confident_inliers: int = 0

    def __post_init__(self) -> None:
        if self.min_inliers < _MIN_FIT:
            raise ValueError(f"min_inliers must be at least {_MIN_FIT}, not {self.min_inliers}")
        if self.confident_inliers < 0:
            raise ValueError("confident_inliers must be 0 (off) or positive")


def root_sift(descriptors: NDArray[np.generic]) -> F32:
    """RootSIFT of SIFT descriptors (N x 128): unit L2 norm, non-negative."""
    d = np.asarray(descriptors, dtype=np.float32)
    d = d / np.maximum(d.sum(axis=1, keepdims=True), np.float32(1e-7))
    rooted: F32 = np.sqrt(d)
    return rooted


def rounds(n: int) -> Iterator[range]:
    """Positions 0..n-1 in rounds of 10, 20, 32, 32, ...: the best-ranked candidates first."""
    start, size = 0, FIRST_ROUND
    while start < n:
        yield range(start, min(n, start + size))
        start += size
        size = min(2 * size, MAX_ROUND)


def count_inliers(
    query: LocalFeatures, candidates: Sequence[LocalFeatures | None], config: LocalFeatureConfig,
    policy: VerifyPolicy,
) -> list[int]:
    """One inlier count per candidate, in order (best global score first).

    0 for a candidate without features, one with fewer tentative matches than
    `policy.min_inliers`, and one never reached because an earlier round was confident.
    """
    counts = [0] * len(candidates)
    if len(query) < _MIN_FIT:
        return counts
    for kind in {c.kind for c in candidates if c is not None} - {query.kind}:
        raise LocalFeatureError(f"cannot match {query.kind} features with {kind}")
    matcher = _SiftRound(query, config, policy) if query.kind == "sift" else None
    for positions in rounds(len(candidates)):
        present = [i for i in positions if (c := candidates[i]) is not None and len(c) >= 2]
        if matcher is not None:
            found = matcher.counts([candidates[i] for i in present])  # type: ignore[misc]
        else:
            found = [inliers(query, candidates[i], config) for i in present]  # type: ignore[arg-type]
        for i, n in zip(present, found, strict=True):
            counts[i] = n
        if policy.confident_inliers and max(found, default=0) >= policy.confident_inliers:
            break
    return counts


class _SiftRound:
    """Scores one query's RootSIFT keypoints against rounds of candidates."""

    def __init__(self, query: LocalFeatures, config: LocalFeatureConfig,
                 policy: VerifyPolicy) -> None:
        self.points = query.points
        self.descriptors = root_sift(query.descriptors)
        self.config = config
        self.policy = policy

    def counts(self, candidates: Sequence[LocalFeatures]) -> list[int]:
        """Inliers of each candidate (0 below `min_inliers` tentative matches)."""
        if not candidates:
            return []
        width = max(len(c) for c in candidates)
        stacked = np.zeros((len(candidates), width, self.descriptors.shape[1]), np.float32)
        for k, c in enumerate(candidates):
            stacked[k, :len(c)] = root_sift(c.descriptors)
        scores = (self.descriptors @ stacked.reshape(-1, stacked.shape[2]).T).reshape(
            len(self.descriptors), len(candidates), width)
        # Padding rows score 0, which no real RootSIFT pair scores below: never a false nearest.
        nearest = scores.argmax(axis=2)
        best = np.take_along_axis(scores, nearest[..., None], axis=2)[..., 0]
        np.put_along_axis(scores, nearest[..., None], -np.inf, axis=2)
        second = scores.max(axis=2)
        ratio_sq = np.float32(self.config.ratio ** 2)
        passed = (1.0 - best) < ratio_sq * (1.0 - second)
        tentative = passed.sum(axis=0)
        return [
            self._fit(c, np.flatnonzero(passed[:, k]), nearest[:, k], best[:, k])
            if tentative[k] >= self.policy.min_inliers else 0
            for k, c in enumerate(candidates)
        ]

    def _fit(self, candidate: LocalFeatures, query_idx: NDArray[np.intp],
             nearest: NDArray[np.intp], similarity: F32) -> int:
        """Inliers of one robust homography over the tentative matches, kept one per candidate
        keypoint (its most similar query keypoint): many query keypoints landing on one
        candidate keypoint would let the fit call a degenerate cluster inliers."""
        import cv2

        train_idx = nearest[query_idx]
        order = np.lexsort((-similarity[query_idx], train_idx))
        train_sorted = train_idx[order]
        first = np.r_[True, train_sorted[1:] != train_sorted[:-1]]
        query_idx, train_idx = query_idx[order][first], train_sorted[first]
        if len(query_idx) < self.policy.min_inliers:
            return 0
        method = getattr(cv2, "USAC_MAGSAC", cv2.RANSAC)
        _, mask = cv2.findHomography(self.points[query_idx], candidate.points[train_idx], method,
                                     self.config.ransac_px, maxIters=2000, confidence=0.995)
        return 0 if mask is None else int(mask.sum())
