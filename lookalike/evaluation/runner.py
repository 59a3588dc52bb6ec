"""Run an evaluation: ingest through the pipeline, query through a real gRPC server, score."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from lookalike.core.blob_store import BlobStore
from lookalike.core.ids import content_id
from lookalike.core.metrics import RankingScores, score_rankings
from lookalike.core.paths import read_exact
from lookalike.core.settings import ServerSettings
from lookalike.core.vector_store import MAX_TOP_K, VectorStore, spec_fingerprint
from lookalike.embedder.runtime import Embedder
from lookalike.evaluation.datasets import EvalDataset, EvalQuery
from lookalike.ingestion.pipeline import IngestPipeline, IngestReport
from lookalike.services.client import LookalikeClient
from lookalike.services.search import SearchEngine
from lookalike.services.server import start_server

# Queries in flight at once: the server and Milvus overlap one query's I/O with another's work.
QUERY_THREADS = 4


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Scores of one dataset under one model, with what it took."""

    dataset: str
    kind: str
    protocol: str
    images: int
    scores: RankingScores
    backbone: str
    ingest: IngestReport
    search_seconds: float

    def as_json(self) -> dict[str, Any]:
        """The keys `make eval` and the issues ask for."""
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "kind": self.kind,
            "protocol": self.protocol,
            "images": self.images,
            "queries": self.scores.queries,
            "p@1": round(self.scores.p_at_1, 4),
            "p@5": round(self.scores.p_at_5, 4),
            "p@10": round(self.scores.p_at_10, 4),
            "map": round(self.scores.mean_ap, 4),
            "backbone": self.backbone,
            "ingest_images_per_s": round(self.ingest.images_per_s, 2),
            "queries_per_s": round(self.scores.queries / self.search_seconds, 2)
            if self.search_seconds else 0.0,
            "failed_files": len(self.ingest.failed),
        }
        if self.kind == "instance":
            out["top1"] = round(self.scores.p_at_1, 4)
        return out


def eval_collection_name(dataset: str, spec: dict[str, Any]) -> str:
    """A collection per (dataset, model), so re-running an evaluation re-embeds nothing."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", dataset).strip("_").lower() or "dataset"
    return f"eval_{slug}_{spec_fingerprint(spec)[:8]}"


def evaluate(
    dataset: EvalDataset,
    embedder: Embedder,
    store: VectorStore,
    blobs: BlobStore,
    pipeline: IngestPipeline,
    *,
    progress: bool = True,
) -> EvalResult:
    """Ingest the dataset's database, run every query through the gRPC API, score the rankings."""
    report = pipeline.run(dataset.database, total=len(dataset.database), progress=progress)
    stored = store.count()
    id_of = {item.source: content_id(item.read())[0] for item in dataset.database}
    source_of = {image_id: source for source, image_id in id_of.items()}
    engine = SearchEngine(embedder, store, blobs, max_top_k=MAX_TOP_K, presign_expiry_s=60)
    server = start_server(engine, ServerSettings(host="127.0.0.1", port=0, max_message_mb=256))
    started = time.perf_counter()
    try:
        with LookalikeClient(server.address, timeout_s=300.0, max_message_mb=256) as client:

            def ranking(query: EvalQuery) -> list[bool]:
                # Full rankings: every stored image but the query itself.
                if query.in_database:
                    response = client.search(image_id=id_of[str(query.path.absolute())],
                                             top_k=min(stored - 1, MAX_TOP_K), ids_only=True)
                else:
                    response = client.search(image=read_exact(query.path),
                                             top_k=min(stored, MAX_TOP_K),
                                             ids_only=True)
                sources = (source_of.get(hit.id, "") for hit in response.hits)
                # Junk is removed from the ranking before scoring (Oxford and Paris protocol).
                return [s in query.relevant for s in sources if s not in query.junk]

            with ThreadPoolExecutor(QUERY_THREADS) as pool:
                rankings = list(tqdm(pool.map(ranking, dataset.queries), total=len(dataset.queries),
                                     unit="query", disable=not progress))
    finally:
        server.stop(grace_s=1.0)
    n_relevant = [len(q.relevant - q.junk) for q in dataset.queries]
    return EvalResult(
        dataset=dataset.name, kind=dataset.kind, protocol=dataset.protocol, images=stored,
        scores=score_rankings(rankings, n_relevant), backbone=embedder.spec.backbone,
        ingest=report, search_seconds=time.perf_counter() - started,
    )
