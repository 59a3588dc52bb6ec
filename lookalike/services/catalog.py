"""The catalog as domain operations: upsert images with metadata, delete, get, describe.

Write order as everywhere: original and thumbnail to the blob store first, then the vector, so a
stored vector never points at a missing blob; delete removes the vector first, then the blobs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from lookalike.core.errors import InvalidArgument, LookalikeError, NotFound
from lookalike.core.ids import content_id
from lookalike.core.schemas import ImageMeta, ImageRecord, JsonDict, image_key, thumb_key
from lookalike.core.vector_store import MAX_TOP_K, CollectionInfo
from lookalike.embedder.errors import EmbedderError, ImageError
from lookalike.embedder.local_features import LocalFeatureError, features_of
from lookalike.embedder.transforms import content_type, decode, image_extension, thumbnail_jpeg
from lookalike.services.search import SearchEngine

MAX_TAGS = 64
MAX_TAG_CHARS = 128
MAX_LABEL_CHARS = 512
MAX_SOURCE_CHARS = 4096
# Milvus keeps a JSON field of at most 64 KiB.
MAX_META_BYTES = 65_536
DEFAULT_PAGE = 50
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class NewImage:
    """An encoded image and the metadata to store with it."""

    image: bytes
    label: str = ""
    tags: tuple[str, ...] = ()
    meta: JsonDict = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True, slots=True)
class UpsertOutcome:
    """What became of one image: stored (new or replaced), or why not."""

    image: ImageMeta | None = None
    created: bool = False
    error: LookalikeError | EmbedderError | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of stored images in id order, and how many match in all."""

    images: list[ImageMeta]
    total: int


@dataclass(frozen=True, slots=True)
class _Prepared:
    meta: ImageMeta
    image: bytes
    thumbnail: bytes
    features: bytes = b""


def parse_meta(raw: str) -> JsonDict:
    """A JSON object from its text ("" is {}); InvalidArgument otherwise."""
    if not raw.strip():
        return {}
    if (size := len(raw.encode())) > MAX_META_BYTES:
        raise InvalidArgument(f"meta_json is {size:,} bytes: at most {MAX_META_BYTES:,}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"meta_json is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidArgument("meta_json nests too deeply") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"meta_json must be a JSON object, got {type(value).__name__}")
    return value


def _check_fields(item: NewImage) -> None:
    if len(item.label) > MAX_LABEL_CHARS:
        raise InvalidArgument(f"label is longer than {MAX_LABEL_CHARS} characters")
    if len(item.source) > MAX_SOURCE_CHARS:
        raise InvalidArgument(f"source is longer than {MAX_SOURCE_CHARS} characters")
    if len(item.tags) > MAX_TAGS or any(len(t) > MAX_TAG_CHARS for t in item.tags):
        raise InvalidArgument(f"at most {MAX_TAGS} tags of at most {MAX_TAG_CHARS} characters each")


class Catalog:
    """Upsert, delete, get and describe the images of the engine's collection."""

    def __init__(self, engine: SearchEngine, *, thumbnail_px: int, max_pixels: int) -> None:
        self.engine = engine
        self.thumbnail_px = thumbnail_px
        self.max_pixels = max_pixels

    def _prepare(self, item: NewImage) -> _Prepared:
        _check_fields(item)
        # Only the thumbnail and the original size are needed here: a reduced-scale decode does.
        decoded = decode(item.image, self.max_pixels, draft_px=self.thumbnail_px)
        image_id, sha = content_id(item.image)
        meta = ImageMeta(
            id=image_id, sha256=sha, blob_key=image_key(sha, image_extension(item.image)),
            source=item.source, label=item.label, tags=item.tags, meta=item.meta,
            width=decoded.width, height=decoded.height, ingested_at=int(time.time()),
        )
        return _Prepared(meta, item.image, thumbnail_jpeg(decoded.image, self.thumbnail_px),
                         self._features(item.image))

    def _features(self, image: bytes) -> bytes:
        """Local features for verification, as ingest stores them; empty when it is off."""
        rerank = self.engine.reranking
        if not rerank.verify:
            return b""
        try:
            return features_of(image, self.max_pixels, rerank.local_features).to_bytes()
        except (LocalFeatureError, ImageError):
            return b""

    def upsert(self, items: Sequence[NewImage]) -> list[UpsertOutcome]:
        """One outcome per item, in order; an image already stored gets its metadata replaced."""
        prepared: list[_Prepared | LookalikeError | EmbedderError] = []
        for item in items:
            try:
                prepared.append(self._prepare(item))
            except (LookalikeError, ImageError) as exc:
                prepared.append(exc)
        good = [p for p in prepared if isinstance(p, _Prepared)]
        outcomes = iter(self.engine.embedder.embed_bytes([p.image for p in good]))
        records: dict[int, ImageRecord] = {}
        failed: dict[int, EmbedderError] = {}
        for p in good:
            outcome = next(outcomes)
            if outcome.error is not None:
                failed[p.meta.id] = outcome.error
            else:
                assert outcome.vector is not None
                records[p.meta.id] = ImageRecord(meta=p.meta, embedding=outcome.vector,
                                                 category=outcome.category)
        existing = self.engine.store.existing_ids(list(records))
        blobs = self.engine.blobs
        for p in good:
            if p.meta.id in records and records[p.meta.id].meta is p.meta:
                blobs.put(p.meta.blob_key, p.image,
                          content_type(p.meta.blob_key.rsplit(".", 1)[-1]))
                blobs.put(thumb_key(p.meta.sha256), p.thumbnail, "image/jpeg")
                if p.features:
                    blobs.put(p.meta.features_key, p.features, "application/octet-stream")
        if existing:
            self.engine.store.delete(sorted(existing))
        self.engine.store.insert(list(records.values()))
        out: list[UpsertOutcome] = []
        for entry in prepared:
            if not isinstance(entry, _Prepared):
                out.append(UpsertOutcome(error=entry))
            elif entry.meta.id in failed:
                out.append(UpsertOutcome(error=failed[entry.meta.id]))
            else:
                out.append(UpsertOutcome(image=records[entry.meta.id].meta,
                                         created=entry.meta.id not in existing))
        return out

    def delete(self, ids: Sequence[int] = (), filter_expr: str = "") -> list[int]:
        """Delete the given ids, or those matching `filter_expr`; the ids that were stored."""
        if bool(ids) == bool(filter_expr.strip()):
            raise InvalidArgument("delete needs exactly one of: ids, filter")
        wanted = list(ids) if ids else self.engine.store.ids_matching(filter_expr, MAX_TOP_K)
        stored = [m for m in self.engine.store.get(wanted) if m is not None]
        self.engine.store.delete([m.id for m in stored])
        for meta in stored:
            self.engine.blobs.delete(meta.blob_key)
            self.engine.blobs.delete(meta.thumb_key)
            self.engine.blobs.delete(meta.features_key)
        return [m.id for m in stored]

    def get(self, ids: Sequence[int]) -> list[ImageMeta | None]:
        """Metadata per id, in order; None where it is not stored."""
        return self.engine.store.get(list(ids))

    def page(self, filter_expr: str = "", offset: int = 0, limit: int = 0) -> Page:
        """Stored images matching `filter_expr` in id order, `limit` (0: DEFAULT_PAGE, at most
        MAX_PAGE) after the first `offset`, and how many match."""
        size = limit or DEFAULT_PAGE
        if not 1 <= size <= MAX_PAGE:
            raise InvalidArgument(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        if offset + size > MAX_TOP_K:
            raise InvalidArgument(
                f"offset + limit must be at most {MAX_TOP_K}, got {offset + size}: "
                "narrow the listing with a filter (labels, tags, ingested_at ...)"
            )
        store = self.engine.store
        return Page(images=store.page(filter_expr, offset, size),
                    total=store.count_matching(filter_expr))

    def label_counts(self, filter_expr: str = "") -> dict[str, int]:
        """Images per label ("" for unlabelled) among those matching `filter_expr`."""
        return self.engine.store.label_counts(filter_expr)

    def original(self, image: ImageMeta) -> bytes:
        """The stored original of `image`; empty where its blob is gone."""
        try:
            return self.engine.blobs.get(image.blob_key)
        except NotFound:
            return b""

    def stats(self) -> CollectionInfo:
        """Name, size, index and model spec of the collection."""
        return self.engine.store.describe()
