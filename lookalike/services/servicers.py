"""gRPC servicers: translate between lookalike.v1 messages and the search engine."""

from __future__ import annotations

import grpc

from lookalike.core.schemas import SearchHit
from lookalike.embedder.errors import ImageTooLarge
from lookalike.embedder.spec import EmbedderSpec
from lookalike.services.gen.lookalike.v1 import lookalike_pb2 as pb
from lookalike.services.gen.lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from lookalike.services.search import Query, SearchEngine


def spec_message(spec: EmbedderSpec) -> pb.ModelSpec:
    """A ModelSpec message from the embedder's spec."""
    return pb.ModelSpec(
        backbone=spec.backbone, weights=spec.weights, pooling=spec.pooling, gem_p=spec.gem_p,
        input_size=spec.input_size, resize=spec.resize, whitening=spec.whitening, dim=spec.dim,
        version=spec.version,
    )


class EmbedServicer(pb_grpc.EmbedServiceServicer):
    """Embed: a batch of images -> one embedding or error per image, in order."""

    def __init__(self, engine: SearchEngine) -> None:
        self._engine = engine

    def Embed(self, request: pb.EmbedRequest, context: grpc.ServicerContext) -> pb.EmbedResponse:
        results = []
        for outcome in self._engine.embedder.embed_bytes(list(request.images)):
            if outcome.vector is not None:
                results.append(pb.EmbedResult(embedding=pb.Embedding(values=outcome.vector)))
            else:
                code = "too_large" if isinstance(outcome.error, ImageTooLarge) else "decode"
                results.append(pb.EmbedResult(error=pb.ItemError(code=code, message=str(outcome.error))))
        return pb.EmbedResponse(results=results, model=spec_message(self._engine.embedder.spec))


class SearchServicer(pb_grpc.SearchServiceServicer):
    """Search by image bytes or by stored id."""

    def __init__(self, engine: SearchEngine) -> None:
        self._engine = engine

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        which = request.WhichOneof("query")
        query = Query(image=request.image) if which == "image" else Query(
            image_id=request.id if which == "id" else None
        )
        if request.ids_only:
            ranked = self._engine.rank(query, int(request.top_k), request.filter)
            return pb.SearchResponse(
                hits=[pb.Hit(id=r.id, score=r.score) for r in ranked.ranked],
                took_ms=ranked.took_ms,
                collection=ranked.collection,
            )
        result = self._engine.search(query, int(request.top_k), request.filter)
        return pb.SearchResponse(
            hits=[self._hit(h, request.include_thumbnails) for h in result.hits],
            took_ms=result.took_ms,
            collection=result.collection,
        )

    def _hit(self, hit: SearchHit, with_thumbnail: bool) -> pb.Hit:
        blobs = self._engine.hit_blobs(hit, with_thumbnail)
        image = hit.image
        return pb.Hit(
            id=image.id, score=hit.score, label=image.label, source=image.source,
            sha256=image.sha256, blob_key=image.blob_key, width=image.width, height=image.height,
            tags=list(image.tags), thumbnail=blobs.thumbnail, thumbnail_url=blobs.thumbnail_url,
            image_url=blobs.image_url,
        )
