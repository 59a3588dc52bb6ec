"""`lookalike whiten`: learn PCA whitening on a collection and serve it whitened.

The whitening is learned on the raw descriptors (the `raw` field where the collection keeps one
for DBA, else `embedding`) and stored in the blob store under its content id. Every row is then
copied, whitened, into a new physical collection for the whitened model spec (DBA recomputed
there on the whitened descriptors), and the alias is pointed at it in one step, so searches
never see a half-copied collection. The old collection is kept for a rollback. Rows written to
the old collection while this runs are not copied: run it while nothing ingests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import ConfigError
from lookalike.core.schemas import ImageRecord
from lookalike.core.vector_store import MilvusVectorStore, VectorField
from lookalike.embedder.whitening import PCAWhitening, WhiteningError, learn_pca_whitening
from lookalike.maintenance.artefacts import load_artefact, sample_vectors
from lookalike.maintenance.dba import apply_dba_all
from lookalike.maintenance.reindex import serve_version

WHITENING_PREFIX = "models/whitening"
MAX_SAMPLES = 100_000
BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class WhitenResult:
    """What `whiten_collection` did: the whitening, the rows copied, the old and new collections."""

    whitening: PCAWhitening
    rows: int
    previous: str
    current: str


def whitening_key(whitening_id: str) -> str:
    """Blob key of a whitening artefact."""
    return f"{WHITENING_PREFIX}/{whitening_id}.npz"


def load_whitening(blobs: BlobStore, whitening_id: str) -> PCAWhitening:
    """The whitening `whitening_id` from the blob store; ConfigError naming the key if unusable."""
    return load_artefact(
        blobs, whitening_key(whitening_id), whitening_id, PCAWhitening.from_bytes, WhiteningError,
        "whitening", "restore that artefact, or point the collection's alias back at its "
        "unwhitened collection",
    )


def _raw_field(store: MilvusVectorStore) -> VectorField:
    return "raw" if store.has_raw() else "embedding"


def sample_raw(
    store: MilvusVectorStore, max_samples: int = MAX_SAMPLES, batch_size: int = BATCH_SIZE
) -> NDArray[np.float32]:
    """Up to `max_samples` raw descriptors, evenly spread over the collection in id order."""
    return sample_vectors(store, _raw_field(store), max_samples, batch_size)


def whiten_collection(
    store: MilvusVectorStore,
    blobs: BlobStore,
    *,
    dim: int = 0,
    power: float = 0.5,
    max_samples: int = MAX_SAMPLES,
    batch_size: int = BATCH_SIZE,
) -> WhitenResult:
    """Learn whitening on `store`'s raw descriptors, copy it whitened, and serve the copy.

    `dim` 0 keeps as many dimensions as the sample supports (see `learn_pca_whitening`).
    """
    spec = store.stored_spec()
    current = str(spec.get("whitening", "none"))
    if current != "none":
        raise ConfigError(
            f"collection {store.name!r} is already whitened ({current}): whitening is learned "
            "on raw descriptors, so point its alias back at the unwhitened collection, or "
            "re-index it, before learning another"
        )
    field = _raw_field(store)
    try:
        whitening = learn_pca_whitening(sample_raw(store, max_samples, batch_size), dim, power)
    except WhiteningError as exc:
        raise ConfigError(f"cannot learn whitening on {store.name!r}: {exc}") from exc
    blobs.put(whitening_key(whitening.id), whitening.to_bytes(), "application/octet-stream")
    previous = store.live_collection()
    dba = store.dba_params()
    target = store.create_version(
        {**spec, "whitening": whitening.id, "dim": whitening.dim}, whitening.dim, dba
    )
    rows = 0
    for records in store.iter_records(field, batch_size):
        whitened = whitening.apply(np.stack([r.embedding for r in records]))
        target.insert([ImageRecord(meta=r.meta, embedding=w, category=r.category)
                       for r, w in zip(records, whitened, strict=True)])
        rows += len(records)
    if dba is not None:
        apply_dba_all(target, dba.k, dba.alpha)
    serve_version(store, target, rows, previous)
    return WhitenResult(whitening=whitening, rows=rows, previous=previous, current=target.name)
