"""AdminService: list, re-index and drop the Milvus collections (operator actions)."""

from __future__ import annotations

import threading
import time

import grpc

from lookalike.core.errors import ConfigError
from lookalike.core.milvus.admin import drop_collection, list_collections
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.services.gen.lookalike.v1 import lookalike_pb2 as pb
from lookalike.services.gen.lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from lookalike.services.search import SearchEngine
from lookalike.services.servicers import spec_message_from_dict


def _params(params: dict[str, object]) -> dict[str, str]:
    return {k: str(v) for k, v in params.items()}


class AdminServicer(pb_grpc.AdminServiceServicer):
    """ListCollections, RebuildIndex, DropCollection; the destructive two one at a time."""

    def __init__(self, engine: SearchEngine) -> None:
        self._engine = engine
        self._lock = threading.Lock()

    def _store(self) -> MilvusVectorStore:
        store = self._engine.store
        if not isinstance(store, MilvusVectorStore):
            raise ConfigError("this server's vector store is not a Milvus collection")
        return store

    def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.ServicerContext
    ) -> pb.ListCollectionsResponse:
        return pb.ListCollectionsResponse(collections=[
            pb.CollectionSummary(
                name=c.name, aliases=list(c.aliases), count=c.count,
                model=spec_message_from_dict(c.spec), index_type=c.index_type,
                index_params=_params(c.index_params), serving=c.serving,
            )
            for c in list_collections(self._store())
        ])

    def RebuildIndex(
        self, request: pb.RebuildIndexRequest, context: grpc.ServicerContext
    ) -> pb.RebuildIndexResponse:
        store = self._store()
        with self._lock:
            started = time.perf_counter()
            layout = store.rebuild_index(request.index_type, dict(request.params))
            seconds = time.perf_counter() - started
        return pb.RebuildIndexResponse(index_type=layout.index_type,
                                       index_params=_params(layout.index_params), seconds=seconds)

    def DropCollection(
        self, request: pb.DropCollectionRequest, context: grpc.ServicerContext
    ) -> pb.DropCollectionResponse:
        with self._lock:
            outcome = drop_collection(self._store(), request.name, request.confirm)
        return pb.DropCollectionResponse(dropped_images=outcome.dropped_images,
                                         recreated=outcome.recreated)
