"""Roll a collection out to a registered model version, with no downtime.

The version's weights are fetched from the model registry (once, checked against their SHA-256)
and the collection is re-indexed with its backbone, weights and GeM exponent by `reindex`: the
old collection serves until the new one is complete, then the alias moves in one step. When the
version carries a learned hash layer (an ItqHash artefact, see `itq_from_linear`), the hash is
stored under its `hash_key` and every image's code is written into the new collection before the
swap, so `hash_rerank` search uses the learned codes from the first query it answers. Milvus Lite
has no binary vectors: there the codes are skipped and the report says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import ConfigError
from lookalike.core.milvus.vector_index import is_lite
from lookalike.core.model_registry import ModelRegistry, ModelVersion
from lookalike.core.settings import ModelSettings, Settings
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.embedder.hashing import HashingError, ItqHash
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.model_config import embedder_config
from lookalike.ingestion.retry import RetryPolicy
from lookalike.maintenance.hash_codes import write_codes
from lookalike.maintenance.reindex import ReindexReport, ReindexStep, reindex

LITE_SKIPPED = ("Milvus Lite has no binary vectors: the learned hash codes were not written "
                "(hash_rerank search needs a Milvus server; float search uses the new model)")

# Sent (images re-indexed so far, images to re-index) as the copy and the catch-up go.
RolloutProgress = Callable[[int, int], None]


@dataclass(slots=True)
class RolloutReport:
    """What a roll-out did: the re-index (`reindex`), the model settings that now embed like
    the served collection (`model`), and the learned hash's codes: `hash_id` and the codes
    written, or why they were not (`codes_skipped`)."""

    version: str
    model: ModelSettings
    reindex: ReindexReport
    hash_id: str = ""
    codes: int = 0
    codes_skipped: str = ""

    @property
    def swapped(self) -> bool:
        """Whether the collection now serves the version."""
        return self.reindex.swapped

    def environment(self) -> dict[str, str]:
        """The settings, as environment variables, that make queries and ingests embed with the
        version (a server must run with them once the collection serves it)."""
        return {
            "LOOKALIKE_MODEL__BACKBONE": self.model.backbone,
            "LOOKALIKE_MODEL__WEIGHTS": self.model.weights,
            "LOOKALIKE_MODEL__GEM_P": f"{self.model.gem_p:g}",
            "LOOKALIKE_MODEL__POOLING": self.model.pooling,
            "LOOKALIKE_MODEL__IMAGE_SIZE": str(self.model.image_size),
        }

    def __str__(self) -> str:
        done = self.reindex
        served = (f"now serves {done.current}" if done.swapped
                  else f"still serves {done.previous}")
        text = (f"{self.version}: {done.rows}/{done.total} images re-indexed in "
                f"{done.seconds:.1f} s, {len(done.failed)} left out; the collection {served}")
        if self.hash_id and not self.codes_skipped:
            text += f"; {self.codes} learned hash codes written ({self.hash_id})"
        elif self.codes_skipped:
            text += f"; {self.codes_skipped}"
        return text


def version_model(settings: ModelSettings, model: ModelVersion, weights: Path) -> ModelSettings:
    """`settings` with the version's backbone, weights file, pooling, GeM exponent and input
    size; the rest (device, threads, test-time augmentation, ...) kept."""
    spec = model.spec
    return settings.model_copy(update={
        "backbone": str(spec["backbone"]), "weights": str(weights),
        "pooling": str(spec.get("pooling", "gem")),
        "gem_p": float(spec.get("gem_p", settings.gem_p)),
        "image_size": int(spec.get("input_size", settings.image_size)),
    })


def _embedder(model: ModelSettings, cache_dir: Path) -> Embedder:
    """The in-process embedder for these model settings (unwhitened: a fine-tuned model's
    descriptors are served as trained)."""
    return Embedder(embedder_config(model, cache_dir=cache_dir))


def _learned_hash(registry: ModelRegistry, model: ModelVersion) -> ItqHash | None:
    data = registry.hash_artefact(model.version)
    if data is None:
        return None
    try:
        return ItqHash.from_bytes(data)
    except HashingError as exc:
        raise ConfigError(f"model {model.version}'s hash artefact is unusable: {exc}") from exc


def roll_out(
    settings: Settings,
    store: MilvusVectorStore,
    blobs: BlobStore,
    version: str,
    *,
    progress: RolloutProgress | None = None,
    allow_missing: bool = False,
    on_model: Callable[[Embedder], None] | None = None,
) -> RolloutReport:
    """Re-index `store` with the registered model `version` while it serves, then serve it.

    The registry lives in `blobs`, next to the originals re-indexed. An image whose original is
    missing or unreadable keeps the old collection serving unless `allow_missing` (see
    `reindex`). `on_model` gets the version's embedder before the re-index starts. Raises
    ModelNotFound for an unknown version, RegistryCorrupt when its artefacts
    do not match their digests, ConfigError when the collection already serves it or its hash
    does not fit its descriptors.
    """
    registry = ModelRegistry(blobs)
    model = registry.get(version)
    itq = _learned_hash(registry, model)
    weights = registry.weights_file(model.version, settings.cache_dir)
    model_settings = version_model(settings.model, model, weights)
    embedder = _embedder(model_settings, settings.cache_dir)
    if itq is not None and itq.input_dim != embedder.spec.dim:
        raise ConfigError(
            f"model {model.version}'s hash codes {itq.input_dim}-d descriptors, but it embeds "
            f"{embedder.spec.dim}-d ones here (semantic_weight joins the class posterior: "
            "set it to 0)"
        )
    if on_model is not None:
        # Before the alias moves: a running server stages the model to follow the collection.
        on_model(embedder)
    skipped = LITE_SKIPPED if itq is not None and is_lite(store.settings) else ""
    codes = 0

    def write_learned_codes(target: MilvusVectorStore) -> None:
        nonlocal codes
        if itq is not None and not skipped:
            codes = write_codes(target, blobs, itq)

    def step(_: ReindexStep, report: ReindexReport) -> None:
        if progress is not None:
            progress(report.rows, report.total)

    ingest = settings.ingest
    done = reindex(
        store, embedder, blobs, batch_size=embedder.batch_size,
        workers=ingest.decode_workers, allow_missing=allow_missing,
        retry=RetryPolicy(ingest.retry_initial_s, ingest.retry_max_s, ingest.retry_deadline_s),
        progress=step, prepare=write_learned_codes,
    )
    if done.swapped and itq is not None and not skipped:
        store.use_encoder(itq)
    return RolloutReport(
        version=model.version, model=model_settings, reindex=done,
        hash_id=itq.id if itq is not None else "", codes=codes, codes_skipped=skipped,
    )

