"""Rows of a main collection: our records as Milvus rows and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lookalike.core.errors import ConfigError
from lookalike.core.milvus.companions import MAX_CATEGORY_LEN
from lookalike.core.schemas import ImageMeta, ImageRecord

META_FIELDS = (
    "id", "sha256", "blob_key", "source", "label", "tags", "meta", "width", "height",
    "ingested_at",
)


def meta_from_entity(entity: Mapping[str, Any]) -> ImageMeta:
    """The metadata of a row read with (at least) META_FIELDS."""
    return ImageMeta(
        id=int(entity["id"]),
        sha256=str(entity["sha256"]),
        blob_key=str(entity["blob_key"]),
        source=str(entity["source"]),
        label=str(entity["label"]),
        tags=tuple(str(t) for t in (entity.get("tags") or ())),
        meta=dict(entity.get("meta") or {}),
        width=int(entity["width"]),
        height=int(entity["height"]),
        ingested_at=int(entity["ingested_at"]),
    )


def main_row(meta: ImageMeta, vector: NDArray[np.float32]) -> dict[str, Any]:
    """A main-collection row without its optional fields (category, raw)."""
    return {
        "id": meta.id, "sha256": meta.sha256, "blob_key": meta.blob_key, "source": meta.source,
        "label": meta.label, "tags": list(meta.tags), "meta": meta.meta, "width": meta.width,
        "height": meta.height, "ingested_at": meta.ingested_at,
        "embedding": np.asarray(vector, dtype=np.float32).tolist(),
    }


def category_of(record: ImageRecord, partition_by: str) -> str:
    """The partition-key value of an image: its predicted class or its label, cut to what the
    field holds."""
    if partition_by != "predicted":
        return record.meta.label[:MAX_CATEGORY_LEN]
    if not record.category:
        raise ConfigError(
            f"image {record.meta.source or record.meta.id} has no predicted category, and the "
            "collection is partitioned by predicted class: embed with a backbone that has an "
            "ImageNet classifier, or partition by label"
        )
    return record.category[:MAX_CATEGORY_LEN]
