"""`lookalike hash`: learn ITQ binary codes on a collection and keep a code per image.

ITQ is learned on a sample of the collection's descriptors (as served: whitened where the
collection is), stored in the blob store under its content id, and every image's code is written
into the collection's codes companion; from then on ingest, upsert and delete keep the codes in
step, and search mode `hash_rerank` uses them. Milvus Lite has no binary vectors: server only.
"""

from __future__ import annotations

from dataclasses import dataclass

from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import ConfigError
from lookalike.core.milvus.vector_index import check_supported
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.embedder.hashing import HashingError, ItqHash, learn_itq
from lookalike.maintenance.artefacts import load_artefact, sample_vectors

HASHING_PREFIX = "models/hashing"
MAX_SAMPLES = 100_000
# Rows per read: a 2.3 server refuses replies over 64 MB (5,000 x 2,048 floats and more).
BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class HashResult:
    """What `hash_collection` did: the hash learned, on how many samples, codes written."""

    itq: ItqHash
    samples: int
    codes: int


def hash_key(hash_id: str) -> str:
    """Blob key of a hash artefact."""
    return f"{HASHING_PREFIX}/{hash_id}.npz"


def load_hash(blobs: BlobStore, hash_id: str) -> ItqHash:
    """The hash `hash_id` from the blob store; ConfigError naming the key when unusable."""
    return load_artefact(blobs, hash_key(hash_id), hash_id, ItqHash.from_bytes, HashingError,
                         "hash", "restore that artefact, or run `lookalike hash` again")


def attach_hash(store: MilvusVectorStore, blobs: BlobStore) -> None:
    """Give `store` the encoder of its codes, if it keeps any."""
    info = store.hash_info()
    if info is not None:
        store.use_encoder(load_hash(blobs, info.encoder_id))


def hash_collection(
    store: MilvusVectorStore, blobs: BlobStore, bits: int, *, max_samples: int = MAX_SAMPLES,
    iterations: int = 50, seed: int = 0,
) -> HashResult:
    """Learn ITQ with `bits` bits on up to `max_samples` of the collection's descriptors (evenly
    spread), store it, and write every image's code; `seed` starts ITQ's rotation."""
    check_supported(store.settings, "binary hash codes (BINARY_VECTOR)")
    sample = sample_vectors(store, "embedding", max_samples, BATCH_SIZE)
    if not len(sample):
        raise ConfigError(f"collection {store.name!r} is empty: ingest images before hashing")
    try:
        itq = learn_itq(sample, bits, iterations=iterations, seed=seed)
    except HashingError as exc:
        raise ConfigError(f"cannot learn hash codes on {store.name!r}: {exc}") from exc
    return HashResult(itq=itq, samples=len(sample), codes=write_codes(store, blobs, itq))


def write_codes(store: MilvusVectorStore, blobs: BlobStore, itq: ItqHash) -> int:
    """Store the hash `itq` (learned here, or a fine-tuned model's hash layer) under its key and
    write every image's code with it; the codes written. Server only."""
    check_supported(store.settings, "binary hash codes (BINARY_VECTOR)")
    blobs.put(hash_key(itq.id), itq.to_bytes(), "application/octet-stream")
    return store.build_codes(itq, BATCH_SIZE)
