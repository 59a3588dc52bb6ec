"""Local features for geometric verification of instance matches (SIFT or ORB via OpenCV).

Extracted once per image (at ingest) and stored; at query time the query's features are matched
against each candidate's with Lowe's ratio test, and a RANSAC homography counts the matches
that agree on one geometric transformation. Many inliers means the same object or scene,
however the global descriptors rank it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image

FeatureKind = Literal["sift", "orb"]
# RANSAC needs 4 correspondences for a homography; fewer matches cannot be verified.
_MIN_MATCHES = 4


class LocalFeatureError(ValueError):
    """Stored local features cannot be read."""


@dataclass(frozen=True, slots=True)
class LocalFeatureConfig:
    """How features are extracted and matched."""

    kind: FeatureKind = "sift"
    max_features: int = 1000
    max_side: int = 640
    ratio: float = 0.8
    ransac_px: float = 5.0


@dataclass(frozen=True, slots=True)
class LocalFeatures:
    """Keypoint positions (N x 2, in the scaled image) and their descriptors (N x L)."""

    kind: FeatureKind
    points: NDArray[np.float32]
    descriptors: NDArray[Any]

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def to_bytes(self) -> bytes:
        """The stored form (npz). SIFT descriptors are stored as bytes: OpenCV computes them
        as whole numbers in 0..255, so this is lossless and a quarter of the float size."""
        buf = io.BytesIO()
        descriptors = self.descriptors
        if self.kind == "sift":
            descriptors = np.clip(np.rint(descriptors), 0, 255).astype(np.uint8)
        np.savez(buf, kind=np.array(self.kind), points=self.points, descriptors=descriptors)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalFeatures:
        """Read the stored form."""
        try:
            with np.load(io.BytesIO(data)) as z:
                kind = str(z["kind"])
                if kind not in ("sift", "orb"):
                    raise LocalFeatureError(f"unknown local feature kind {kind!r}")
                descriptors = np.asarray(z["descriptors"])
                if kind == "sift":
                    descriptors = descriptors.astype(np.float32)
                return cls(kind, np.asarray(z["points"], dtype=np.float32),  # type: ignore[arg-type]
                           descriptors)
        except (OSError, ValueError, KeyError) as exc:
            raise LocalFeatureError(f"not a local feature file: {exc}") from exc


def _detector(config: LocalFeatureConfig) -> object:
    import cv2

    if config.kind == "sift":
        return cv2.SIFT_create(nfeatures=config.max_features)  # type: ignore[attr-defined]
    return cv2.ORB_create(nfeatures=config.max_features)  # type: ignore[attr-defined]


def extract(image: Image.Image, config: LocalFeatureConfig) -> LocalFeatures:
    """Local features of an RGB image, scaled first so its longer side is `max_side` at most."""
    import cv2

    gray = np.asarray(image.convert("L"))
    h, w = gray.shape
    scale = config.max_side / max(h, w)
    if scale < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                          interpolation=cv2.INTER_AREA)
    try:
        keypoints, descriptors = _detector(config).detectAndCompute(gray, None)  # type: ignore[attr-defined]
    except cv2.error as exc:
        # OpenCV refuses some degenerate inputs (ORB on a tiny image): no features, not a crash.
        raise LocalFeatureError(f"cannot extract {config.kind} features: {exc}") from exc
    width = 128 if config.kind == "sift" else 32
    if descriptors is None or not keypoints:
        dtype = np.float32 if config.kind == "sift" else np.uint8
        return LocalFeatures(config.kind, np.zeros((0, 2), np.float32), np.zeros((0, width), dtype))
    points = np.asarray([k.pt for k in keypoints], dtype=np.float32)
    dtype = np.float32 if config.kind == "sift" else np.uint8
    return LocalFeatures(config.kind, points, np.asarray(descriptors, dtype=dtype))


def features_of(data: bytes, max_pixels: int, config: LocalFeatureConfig) -> LocalFeatures:
    """Local features of an encoded image, decoded the one way ingest, search and evaluation all
    use: a JPEG at the smallest DCT scale that keeps `max_side` pixels (cheap for camera photos,
    and never coarser than the features need). Raises ImageError or LocalFeatureError."""
    from lookalike.embedder.transforms import decode_image

    return extract(decode_image(data, max_pixels, config.max_side), config)


def inliers(query: LocalFeatures, candidate: LocalFeatures, config: LocalFeatureConfig) -> int:
    """Ratio-test matches of `query` in `candidate` consistent with one RANSAC homography."""
    import cv2

    if query.kind != candidate.kind:
        raise LocalFeatureError(f"cannot match {query.kind} features with {candidate.kind}")
    if len(query) < _MIN_MATCHES or len(candidate) < 2:
        return 0
    norm = cv2.NORM_L2 if query.kind == "sift" else cv2.NORM_HAMMING
    matches = cv2.BFMatcher(norm).knnMatch(query.descriptors, candidate.descriptors, k=2)
    passed = [pair[0] for pair in matches
              if len(pair) == 2 and pair[0].distance < config.ratio * pair[1].distance]
    # One match per candidate keypoint (the closest): many query keypoints landing on one
    # candidate keypoint would otherwise let RANSAC fit a degenerate homography that calls
    # them all inliers, and unrelated images would verify.
    best: dict[int, Any] = {}
    for m in passed:
        if m.trainIdx not in best or m.distance < best[m.trainIdx].distance:
            best[m.trainIdx] = m
    good = list(best.values())
    if len(good) < _MIN_MATCHES:
        return 0
    src = query.points[[m.queryIdx for m in good]]
    dst = candidate.points[[m.trainIdx for m in good]]
    _, mask = cv2.findHomography(src, dst, cv2.RANSAC, config.ransac_px)
    return 0 if mask is None else int(mask.sum())


def verified_order(scores: Sequence[float], inlier_counts: Sequence[int],
                   min_inliers: int) -> list[int]:
    """Positions of candidates re-ranked: verified ones (>= `min_inliers`) first by inlier
    count, then the rest in their original (score) order."""
    if len(scores) != len(inlier_counts):
        raise ValueError("one inlier count per candidate is needed")
    verified = [i for i, n in enumerate(inlier_counts) if n >= min_inliers]
    verified.sort(key=lambda i: (-inlier_counts[i], -scores[i]))
    rest = [i for i, n in enumerate(inlier_counts) if n < min_inliers]
    return verified + rest
