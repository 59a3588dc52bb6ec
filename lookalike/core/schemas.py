"""Records as they are stored and found."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ImageMeta:
    """Everything stored about one image except its vector."""

    id: int
    sha256: str
    blob_key: str
    source: str
    label: str = ""
    tags: tuple[str, ...] = ()
    meta: JsonDict = field(default_factory=dict)
    width: int = 0
    height: int = 0
    ingested_at: int = 0

    @property
    def thumb_key(self) -> str:
        """Key of the JPEG thumbnail in the blob store."""
        return thumb_key(self.sha256)

    @property
    def features_key(self) -> str:
        """Key of the local features (for geometric verification) in the blob store."""
        return features_key(self.sha256)


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image ready for the vector store: its metadata and L2-normalised embedding.

    `category` is the embedder's predicted class, the partition key of a collection partitioned
    by prediction ("" when the backbone has no classifier)."""

    meta: ImageMeta
    embedding: NDArray[np.float32]
    category: str = ""


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result: a stored image and its cosine similarity to the query.

    `inliers` is set when the search was geometrically verified: local feature matches with the
    query that agree on one transformation (the score stays the descriptor similarity).
    """

    image: ImageMeta
    score: float
    inliers: int | None = None


@dataclass(frozen=True, slots=True)
class ScoredId:
    """A search result reduced to the stored id, its similarity and (if verified) its inliers."""

    id: int
    score: float
    inliers: int | None = None


def image_key(sha256: str, ext: str) -> str:
    """Content-addressed key of an original image."""
    return f"images/{sha256}.{ext.lstrip('.').lower()}"


def thumb_key(sha256: str) -> str:
    """Content-addressed key of a thumbnail."""
    return f"thumbs/{sha256}.jpg"


def features_key(sha256: str) -> str:
    """Content-addressed key of an image's local features (npz)."""
    return f"features/{sha256}.npz"
