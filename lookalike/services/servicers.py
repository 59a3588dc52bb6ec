"""gRPC servicers: translate between lookalike.v1 messages and the search engine and catalog."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from lookalike.core.errors import InvalidArgument, LookalikeError
from lookalike.core.filters import build_filter
from lookalike.core.milvus.vector_index import SearchParams
from lookalike.core.schemas import ImageMeta, SearchHit
from lookalike.embedder.errors import EmbedderError, ImageTooLarge
from lookalike.embedder.spec import EmbedderSpec
from lookalike.services.catalog import Catalog, NewImage, parse_meta
from lookalike.services.gen.lookalike.v1 import lookalike_pb2 as pb
from lookalike.services.gen.lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from lookalike.services.interceptors import status_for
from lookalike.services.search import Query, RankResult, SearchEngine, SearchOptions, SearchResult


def spec_message(spec: EmbedderSpec) -> pb.ModelSpec:
    """A ModelSpec message from the embedder's spec."""
    return spec_message_from_dict(spec.to_dict())


def spec_message_from_dict(spec: Mapping[str, Any]) -> pb.ModelSpec:
    """A ModelSpec message from a stored spec; the message's fields are the spec's, by name."""
    known = pb.ModelSpec.DESCRIPTOR.fields_by_name
    return pb.ModelSpec(**{k: v for k, v in spec.items() if k in known})


def _item_error(exc: LookalikeError | EmbedderError) -> pb.ItemError:
    return pb.ItemError(code=status_for(exc).name, message=str(exc))


def _image_message(engine: SearchEngine, image: ImageMeta, score: float,
                   with_thumbnail: bool, inliers: int | None = None,
                   original: bytes = b"") -> pb.Hit:
    blobs = engine.hit_blobs(SearchHit(image=image, score=score), with_thumbnail)
    return pb.Hit(
        id=image.id, score=score, label=image.label, source=image.source,
        sha256=image.sha256, blob_key=image.blob_key, width=image.width, height=image.height,
        tags=list(image.tags), thumbnail=blobs.thumbnail, thumbnail_url=blobs.thumbnail_url,
        image_url=blobs.image_url, meta_json=json.dumps(image.meta) if image.meta else "",
        ingested_at=image.ingested_at, inliers=inliers, image=original,
    )


class EmbedServicer(pb_grpc.EmbedServiceServicer):
    """Embed: a batch of images -> one embedding or error per image, in order."""

    def __init__(self, engine: SearchEngine) -> None:
        self._engine = engine

    def Embed(self, request: pb.EmbedRequest, context: grpc.ServicerContext) -> pb.EmbedResponse:
        results = []
        for outcome in self._engine.embedder.embed_bytes(list(request.images)):
            if outcome.vector is not None:
                results.append(pb.EmbedResult(embedding=pb.Embedding(values=outcome.vector),
                                              category=outcome.category))
            else:
                code = "too_large" if isinstance(outcome.error, ImageTooLarge) else "decode"
                results.append(pb.EmbedResult(error=pb.ItemError(code=code, message=str(outcome.error))))
        return pb.EmbedResponse(results=results, model=spec_message(self._engine.embedder.spec))


def _query(request: pb.SearchRequest) -> Query:
    match request.WhichOneof("query"):
        case "image":
            return Query(image=request.image)
        case "id":
            return Query(image_id=request.id)
        case "vector":
            return Query(vector=np.asarray(request.vector.values, dtype=np.float32))
    raise InvalidArgument("a query needs exactly one of: image bytes, stored image id, vector")


def _filter(expression: str, labels: Sequence[str], tags: Sequence[str]) -> str:
    """The request's filter ANDed with any of its labels and all of its tags."""
    return build_filter(labels=labels, tags=tags, expression=expression)


def _options(request: pb.SearchRequest, max_top_k: int) -> SearchOptions:
    """The request's options, checked here once: the engine below trusts them."""
    return SearchOptions.checked(
        max_top_k=max_top_k,
        top_k=int(request.top_k),
        filter_expr=_filter(request.filter, request.labels, request.tags),
        min_score=request.min_score if request.HasField("min_score") else None,
        ids_only=request.ids_only,
        qe_n=request.qe_n if request.HasField("qe_n") else None,
        verify=request.verify if request.HasField("verify") else None,
        params=SearchParams(
            mode=request.mode if request.HasField("mode") else None,  # type: ignore[arg-type]
            ef=request.ef if request.HasField("ef") else None,
            nprobe=request.nprobe if request.HasField("nprobe") else None,
            rerank_factor=request.rerank_factor if request.HasField("rerank_factor") else None,
            route_top_n=request.route_top_n if request.HasField("route_top_n") else None,
        ),
    )


class SearchServicer(pb_grpc.SearchServiceServicer):
    """Search by image bytes, stored id or raw vector; one query or a batch."""

    def __init__(self, engine: SearchEngine) -> None:
        self._engine = engine

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        return self._response(self._engine.run(_query(request), _options(request, self._engine.max_top_k)),
                              request.include_thumbnails)

    def BatchSearch(
        self, request: pb.BatchSearchRequest, context: grpc.ServicerContext
    ) -> pb.BatchSearchResponse:
        queries: list[tuple[Query | LookalikeError, SearchOptions]] = []
        for r in request.requests:
            try:
                queries.append((_query(r), _options(r, self._engine.max_top_k)))
            except LookalikeError as exc:
                queries.append((exc, SearchOptions()))
        results = []
        for r, outcome in zip(request.requests, self._engine.run_many(queries), strict=True):
            if isinstance(outcome, SearchResult | RankResult):
                results.append(pb.BatchSearchResult(
                    response=self._response(outcome, r.include_thumbnails)))
            else:
                results.append(pb.BatchSearchResult(error=_item_error(outcome)))
        return pb.BatchSearchResponse(results=results)

    def _response(self, result: SearchResult | RankResult, with_thumbnails: bool) -> pb.SearchResponse:
        if isinstance(result, RankResult):
            hits = [pb.Hit(id=r.id, score=r.score, inliers=r.inliers) for r in result.ranked]
        else:
            hits = [_image_message(self._engine, h.image, h.score, with_thumbnails, h.inliers)
                    for h in result.hits]
        return pb.SearchResponse(hits=hits, took_ms=result.took_ms, collection=result.collection,
                                 embed_ms=result.embed_ms, queue_ms=result.queue_ms)


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    """Upsert, Delete, Get, Stats, List and CountLabels over the collection."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def Upsert(self, request: pb.UpsertRequest, context: grpc.ServicerContext) -> pb.UpsertResponse:
        items: list[NewImage | LookalikeError] = []
        for i in request.items:
            try:
                items.append(NewImage(image=i.image, label=i.label, tags=tuple(i.tags),
                                      meta=parse_meta(i.meta_json), source=i.source))
            except LookalikeError as exc:
                items.append(exc)
        stored = iter(self._catalog.upsert([i for i in items if isinstance(i, NewImage)]))
        results = []
        for item in items:
            if isinstance(item, LookalikeError):
                results.append(pb.UpsertResult(error=_item_error(item)))
                continue
            outcome = next(stored)
            if outcome.error is not None:
                results.append(pb.UpsertResult(error=_item_error(outcome.error)))
            else:
                assert outcome.image is not None
                results.append(pb.UpsertResult(
                    image=_image_message(self._catalog.engine, outcome.image, 0.0, False),
                    created=outcome.created,
                ))
        return pb.UpsertResponse(results=results)

    def Delete(self, request: pb.DeleteRequest, context: grpc.ServicerContext) -> pb.DeleteResponse:
        deleted = self._catalog.delete(list(request.ids), request.filter)
        return pb.DeleteResponse(deleted=len(deleted), ids=deleted)

    def Get(self, request: pb.GetRequest, context: grpc.ServicerContext) -> pb.GetResponse:
        ids = list(request.ids)
        found = self._catalog.get(ids)
        return pb.GetResponse(
            images=[_image_message(self._catalog.engine, m, 0.0, request.include_thumbnails,
                                   original=(self._catalog.original(m)
                                             if request.include_originals else b""))
                    for m in found if m is not None],
            missing_ids=[i for i, m in zip(ids, found, strict=True) if m is None],
        )

    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsResponse:
        info = self._catalog.stats()
        spec = info.spec
        return pb.StatsResponse(
            collection=info.name, physical_collection=info.physical_name, count=info.count,
            index_type=info.index_type,
            index_params={k: str(v) for k, v in info.index_params.items()},
            metric_type=info.metric_type,
            model=spec_message_from_dict(spec),
        )

    def List(self, request: pb.ListRequest, context: grpc.ServicerContext) -> pb.ListResponse:
        page = self._catalog.page(_filter(request.filter, request.labels, request.tags),
                                  int(request.offset), int(request.limit))
        return pb.ListResponse(
            images=[_image_message(self._catalog.engine, m, 0.0, request.include_thumbnails)
                    for m in page.images],
            total=page.total,
        )

    def CountLabels(
        self, request: pb.CountLabelsRequest, context: grpc.ServicerContext
    ) -> pb.CountLabelsResponse:
        return pb.CountLabelsResponse(counts=self._catalog.label_counts(request.filter))
