"""The lookalike.v1 messages mapped to and from the client's values (values.py), in one place."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from lookalike.embedder.spec import EmbedderSpec
from lookalike.services.client import values
from lookalike.services.gen.lookalike.v1 import lookalike_pb2 as pb
from lookalike.services.job_summaries import (
    BadFile,
    EvalRow,
    EvalSummary,
    IngestSummary,
    ModelInfo,
    TrainEpoch,
    TrainSummary,
)


def hit(h: pb.Hit) -> values.Hit:
    """A stored image or search result."""
    return values.Hit(
        id=h.id, score=h.score, label=h.label, source=h.source, sha256=h.sha256, width=h.width,
        height=h.height, tags=tuple(h.tags), thumbnail=h.thumbnail, thumbnail_url=h.thumbnail_url,
        image_url=h.image_url, blob_key=h.blob_key,
        meta=json.loads(h.meta_json) if h.meta_json else {}, ingested_at=h.ingested_at,
        inliers=h.inliers if h.HasField("inliers") else None, image=h.image)


def job(j: pb.Job) -> values.Job:
    """A job with the summary of its kind."""
    ingest = None
    if j.HasField("ingest"):
        i = j.ingest
        ingest = IngestSummary(
            seen=i.seen, added=i.added, already_stored=i.already_stored, duplicates=i.duplicates,
            failed=tuple(BadFile(f.path, f.reason) for f in i.failed), seconds=i.seconds,
        )
    evaluation = None
    if j.HasField("evaluation"):
        e = j.evaluation
        evaluation = EvalSummary(
            dataset=e.dataset, kind=e.kind, images=e.images, queries=e.queries,
            rows=tuple(EvalRow(config=r.config, levers=r.levers, scores=dict(r.scores),
                               pk_curve=tuple(r.pk_curve), per_class_ap=dict(r.per_class_ap))
                       for r in e.rows),
        )
    return values.Job(
        id=j.id, kind=j.kind, state=j.state, source=j.source, done=j.done, total=j.total,
        rate_per_s=j.rate_per_s, eta_s=j.eta_s, message=j.message, started_at=j.started_at,
        finished_at=j.finished_at, ingest=ingest, evaluation=evaluation,
        training=training(j.training) if j.HasField("training") else None)


def _optional(message: Any, name: str) -> float | None:
    return float(getattr(message, name)) if message.HasField(name) else None


def training(t: pb.TrainSummary) -> TrainSummary:
    """A training job's summary (scores it did not reach are None)."""
    return TrainSummary(
        dataset=t.dataset, classes=t.classes, images=t.images, backbone=t.backbone, loss=t.loss,
        bits=t.bits, epochs_planned=t.epochs_planned,
        epochs=tuple(TrainEpoch(epoch=e.epoch, train_loss=e.train_loss, val_map=e.val_map,
                                seconds=e.seconds) for e in t.epochs),
        best_epoch=t.best_epoch, stopped_early=t.stopped_early,
        pretrained_map=_optional(t, "pretrained_map"), finetuned_map=_optional(t, "finetuned_map"),
        hashed_map=_optional(t, "hashed_map"), float_map=_optional(t, "float_map"),
        comparison=dict(t.comparison), version=t.version, seconds=t.seconds,
    )


def model(m: pb.ModelInfo) -> ModelInfo:
    """A registered model version."""
    return ModelInfo(version=m.version, created_at=m.created_at, backbone=m.backbone,
                     weights_id=m.weights_id, loss=m.loss, bits=m.bits, metrics=dict(m.metrics),
                     trained_on=m.trained_on, size_bytes=m.size_bytes, serving=m.serving)


def collection(c: pb.CollectionSummary) -> values.CollectionSummary:
    """A physical collection on the server's Milvus."""
    return values.CollectionSummary(
        name=c.name, aliases=tuple(c.aliases), count=c.count,
        model=spec(c.model) if c.HasField("model") else None, index_type=c.index_type,
        index_params=dict(c.index_params), serving=c.serving,
    )


def spec(m: pb.ModelSpec) -> EmbedderSpec:
    """The model spec the message carries."""
    # The message's fields are the spec's fields, by name; a repeated field becomes a tuple.
    # A server before spec version 3 sends no scales: it embedded at one scale, 1.0.
    values = {f.name: getattr(m, f.name) for f in fields(EmbedderSpec)}
    return EmbedderSpec(**{**values, "scales": tuple(m.scales) or (1.0,)})


def search_response(r: pb.SearchResponse) -> values.SearchResponse:
    """Hits best first and the timings."""
    return values.SearchResponse(hits=[hit(h) for h in r.hits], took_ms=r.took_ms,
                                 collection=r.collection, embed_ms=r.embed_ms,
                                 queue_ms=r.queue_ms)


def search_request(q: values.SearchQuery) -> pb.SearchRequest:
    """The request of one query; ValueError unless it gives exactly one of image, image_id,
    vector."""
    given = sum(x is not None for x in (q.image, q.image_id, q.vector))
    if given != 1:
        raise ValueError("pass exactly one of image, image_id, vector")
    request = pb.SearchRequest(top_k=q.top_k, filter=q.filter_expr,
                               include_thumbnails=q.include_thumbnails, ids_only=q.ids_only,
                               qe_n=q.qe_n, verify=q.verify, mode=q.mode, ef=q.ef,
                               nprobe=q.nprobe, rerank_factor=q.rerank_factor,
                               route_top_n=q.route_top_n, labels=list(q.labels),
                               tags=list(q.tags))
    if q.image is not None:
        request.image = q.image
    elif q.image_id is not None:
        request.id = q.image_id
    else:
        assert q.vector is not None
        request.vector.values.extend(np.asarray(q.vector, dtype=np.float32).reshape(-1).tolist())
    if q.min_score is not None:
        request.min_score = q.min_score
    return request


def batch_results(response: pb.BatchSearchResponse) -> list[values.BatchSearchResult]:
    """One response or error per query, in order."""
    return [
        values.BatchSearchResult(response=search_response(r.response))
        if r.WhichOneof("result") == "response"
        else values.BatchSearchResult(response=None, error_code=r.error.code,
                                      error=r.error.message)
        for r in response.results
    ]


def embed_response(response: pb.EmbedResponse) -> values.EmbedResponse:
    """One embedding or error per image, in order, and the model's spec."""
    return values.EmbedResponse(
        results=[
            values.EmbedResult(vector=np.asarray(r.embedding.values, dtype=np.float32),
                               category=r.category)
            if r.WhichOneof("result") == "embedding"
            else values.EmbedResult(vector=None, error=f"{r.error.code}: {r.error.message}")
            for r in response.results
        ],
        model=spec(response.model),
    )


def upsert_request(items: Sequence[values.UpsertItem]) -> pb.UpsertRequest:
    """The images and their metadata (as JSON)."""
    return pb.UpsertRequest(items=[
        pb.UpsertItem(image=i.image, label=i.label, tags=list(i.tags),
                      meta_json=json.dumps(i.meta) if i.meta else "", source=i.source)
        for i in items
    ])


def upsert_results(response: pb.UpsertResponse) -> list[values.UpsertResult]:
    """What became of each image, in order."""
    return [
        values.UpsertResult(image=hit(r.image), created=r.created)
        if r.WhichOneof("result") == "image"
        else values.UpsertResult(image=None, error=f"{r.error.code}: {r.error.message}")
        for r in response.results
    ]


def get_response(response: pb.GetResponse) -> values.GetResponse:
    """The stored images and the ids not stored."""
    return values.GetResponse(images=[hit(h) for h in response.images],
                              missing_ids=list(response.missing_ids))


def page(response: pb.ListResponse) -> values.Page:
    """One page of stored images and the count of all that match."""
    return values.Page(images=[hit(h) for h in response.images], total=response.total)


def stats(r: pb.StatsResponse) -> values.Stats:
    """The collection's size, index and model."""
    return values.Stats(collection=r.collection, physical_collection=r.physical_collection,
                        count=r.count, index_type=r.index_type,
                        index_params=dict(r.index_params), metric_type=r.metric_type,
                        model=spec(r.model))


def rebuild_result(r: pb.RebuildIndexResponse) -> values.RebuildResult:
    """The new index and how long it took."""
    return values.RebuildResult(index_type=r.index_type, index_params=dict(r.index_params),
                                seconds=r.seconds)


def drop_result(r: pb.DropCollectionResponse) -> values.DropResult:
    """What the drop removed."""
    return values.DropResult(dropped_images=r.dropped_images, recreated=r.recreated)
