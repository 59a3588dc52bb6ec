"""The bad-input corpus through the gRPC API of a real server with a configured pixel limit:
each bad file gets its own error naming the limit, each good file its embedding and hits."""

from __future__ import annotations

import re
from pathlib import Path

import grpc

from lookalike.app.compose import blobs_from, embedder_from, engine_from, store_from
from lookalike.core.settings import ServerSettings, Settings
from lookalike.services.client import ClientError, LookalikeClient, UpsertItem
from lookalike.services.server import start_server
from tests.bad_images import MAX_PIXELS, write_corpus
from tests.conftest import TEST_MODEL


def test_bad_input_corpus_through_embed_upsert_and_search(tmp_path: Path) -> None:
    """Embed gives each bad file its error kind and reason (bombs: size and configured limit)
    and each good one a vector; Upsert stores the good ones; Search by image answers the good
    ones with themselves first and each bad one with INVALID_ARGUMENT and the same reason."""
    corpus = write_corpus(tmp_path / "corpus")
    settings = Settings(data_dir=tmp_path / "data",
                        model=TEST_MODEL.model_copy(update={"max_pixels": MAX_PIXELS}))
    embedder = embedder_from(settings)
    store = store_from(settings, embedder)
    engine = engine_from(settings, embedder, store, blobs_from(settings))
    running = start_server(engine, ServerSettings(host="127.0.0.1", port=0),
                           max_pixels=settings.model.max_pixels)
    names = sorted([*corpus.good, *corpus.bad])
    images = [(corpus.root / name).read_bytes() for name in names]
    try:
        with LookalikeClient(running.address, timeout_s=60) as client:
            embedded = client.embed(images)
            stored = client.upsert([UpsertItem(image=data, source=name)
                                    for name, data in zip(names, images, strict=True)])
            searched: dict[str, int | ClientError] = {}
            for name, data in zip(names, images, strict=True):
                try:
                    searched[name] = client.search(image=data, top_k=1).hits[0].id
                except ClientError as exc:
                    searched[name] = exc
    finally:
        running.stop(grace_s=1.0)
    for name, result, upserted in zip(names, embedded, stored, strict=True):
        refusal = corpus.bad.get(name)
        if refusal is None:
            assert result.vector is not None, name
            assert result.error == "", name
            assert upserted.image is not None, name
            assert upserted.created, name
            assert (upserted.image.width, upserted.image.height) == corpus.good[name], name
            assert searched[name] == upserted.image.id, name
            continue
        assert result.vector is None, name
        assert re.fullmatch(f"{refusal.kind}: {refusal.reason}", result.error), (name, result)
        assert upserted.image is None, name
        assert re.fullmatch(f"INVALID_ARGUMENT: {refusal.reason}", upserted.error), name
        failure = searched[name]
        assert isinstance(failure, ClientError), name
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, name
        assert re.fullmatch(f"query image: {refusal.reason}", failure.message), name
