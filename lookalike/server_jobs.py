"""The server's job runners, wired from the settings and the served components (composition
root: JobService itself knows nothing of ingestion or evaluation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from lookalike.compose import dba_from, local_features_from, pipeline_from
from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import ConfigError, InvalidArgument
from lookalike.core.settings import Settings
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.embedder.runtime import Embedder
from lookalike.evaluation.configs import ablation, preset
from lookalike.evaluation.datasets import load_dataset
from lookalike.evaluation.suite import ConfigResult, EvalEnv, iter_evaluate
from lookalike.ingestion.dba import dba_for
from lookalike.ingestion.pipeline import IngestReport
from lookalike.ingestion.run import count_when_cheap, ingest_items
from lookalike.ingestion.sources import LIST_SUFFIXES, open_source
from lookalike.services.jobs import (
    BadFile,
    EvalRow,
    EvalSummary,
    IngestSummary,
    JobContext,
    JobRunners,
    JobWork,
)
from lookalike.services.search import QueryEmbedder


def eval_env_from(
    settings: Settings, *, ann: bool, latency_queries: int = 0, progress: bool = True,
    on_embedded: Callable[[int], None] | None = None,
) -> EvalEnv:
    """How `lookalike eval` and evaluation jobs embed, cache and verify, from the settings."""
    retrieval = settings.retrieval
    return EvalEnv(
        cache_dir=settings.cache_dir, milvus=settings.milvus,
        local=local_features_from(retrieval), min_inliers=retrieval.min_inliers,
        batch_size=settings.model.batch_size, threads=settings.model.threads,
        decode_px=settings.model.decode_px, max_pixels=settings.model.max_pixels,
        ann=ann, latency_queries=latency_queries, progress=progress, on_embedded=on_embedded,
    )


def ingest_summary(report: IngestReport) -> IngestSummary:
    """An ingest report as JobService shows it: every bad file with its reason."""
    return IngestSummary(
        seen=report.seen, added=report.added, already_stored=report.already_stored,
        duplicates=report.duplicates,
        failed=tuple(BadFile(f.source, f.reason) for f in report.failed),
        seconds=report.seconds,
    )


def _ingest_message(report: IngestReport) -> str:
    return (f"{report.seen} files: {report.added} added, {report.already_stored} already stored, "
            f"{report.duplicates} duplicates, {len(report.failed)} failed")


def _ingest_starter(
    settings: Settings, embedder: QueryEmbedder, store: MilvusVectorStore, blobs: BlobStore
) -> Callable[[str], JobWork]:
    def start(source: str) -> JobWork:
        if not isinstance(embedder, Embedder):
            raise ConfigError(
                f"this server embeds through the remote EmbedService at "
                f"{settings.embed_service.address}, so it runs no ingest jobs: run "
                f"`lookalike ingest {source}` where the model runs"
            )
        model = embedder
        path = Path(source)
        if not source.startswith("s3://") and path.is_file() and (
                path.suffix.lower() in LIST_SUFFIXES):
            # A list names any path or URL, which would slip past the job roots.
            raise InvalidArgument(f"{source} is a list file: jobs ingest folders, tar shards and "
                                  "s3:// prefixes; run `lookalike ingest` for lists")
        dba = dba_for(store, dba_from(settings))
        try:
            items = open_source(source, settings.blobs, settings.ingest.fetch_timeout_s)
        except ConfigError as exc:
            raise InvalidArgument(str(exc)) from exc

        def work(job: JobContext) -> None:
            job.report("listing the source")
            total, listed = count_when_cheap(source, items)
            job.progress(0, total)
            job.report(f"ingesting into {store.name!r}")

            def on_batch(report: IngestReport) -> None:
                job.progress(report.seen, total)
                job.report(_ingest_message(report), ingest_summary(report))

            outcome = ingest_items(
                pipeline_from(settings, model, store, blobs), store, listed, total=total,
                dba=dba, progress=False, on_batch=on_batch, cancelled=lambda: job.cancelled,
            )
            report = outcome.report
            job.progress(report.seen, total)
            message = _ingest_message(report)
            if outcome.dba is not None and report.added:
                message += f"; DBA recomputed {outcome.dba_updated} embeddings"
            job.report(message, ingest_summary(report))

        return work

    return start


def _eval_row(result: ConfigResult) -> EvalRow:
    return EvalRow(config=result.config.name, levers=result.config.levers(),
                   scores=dict(result.scores), pk_curve=tuple(result.pk_curve),
                   per_class_ap=dict(result.per_class_ap))


def _eval_starter(settings: Settings) -> Callable[[str, Sequence[str], bool], JobWork]:
    def start(folder: str, names: Sequence[str], with_ablation: bool) -> JobWork:
        try:
            dataset = load_dataset(Path(folder))
            configs = (ablation(dataset.kind) if with_ablation
                       else [preset(name, dataset.kind) for name in (names or ["baseline"])])
        except ConfigError as exc:
            raise InvalidArgument(str(exc)) from exc
        per_config = len(dataset.database) + sum(not q.in_database for q in dataset.queries)
        total = per_config * len(configs)

        def work(job: JobContext) -> None:
            done = 0
            rows: list[EvalRow] = []

            def summary() -> EvalSummary:
                return EvalSummary(dataset=dataset.name, kind=dataset.kind,
                                   images=len(dataset.database), queries=len(dataset.queries),
                                   rows=tuple(rows))

            def on_embedded(count: int) -> None:
                nonlocal done
                job.raise_if_cancelled()
                done += count
                job.progress(min(done, total), total)

            # UI evaluations skip the ANN recall check: it needs a temporary Milvus collection.
            env = eval_env_from(settings, ann=False, progress=False, on_embedded=on_embedded)
            job.report(f"evaluating {len(configs)} configurations on {dataset.name} "
                       f"({len(dataset.database)} images)", summary())
            for n, result in enumerate(iter_evaluate(dataset, configs, env), 1):
                rows.append(_eval_row(result))
                # Configurations sharing cached descriptors embed nothing: count them as done.
                done = per_config * n
                job.progress(done, total)
                job.report(f"{n}/{len(configs)} configurations measured", summary())
                job.raise_if_cancelled()

        return work

    return start


def job_runners_from(
    settings: Settings, embedder: QueryEmbedder, store: MilvusVectorStore, blobs: BlobStore
) -> JobRunners:
    """Ingest jobs into the served collection with the served (in-process) embedder, and
    evaluation jobs on labelled folders; a remote embedder refuses ingest jobs."""
    return JobRunners(ingest=_ingest_starter(settings, embedder, store, blobs),
                      evaluate=_eval_starter(settings))
