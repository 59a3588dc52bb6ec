"""The server's job runners, wired from the settings and the served components (composition
root: JobService itself knows nothing of ingestion, evaluation, training or the registry)."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lookalike.app.compose import (
    clean_interrupted_writes,
    dba_from,
    local_features_from,
    model_batch_size,
    pipeline_from,
    verify_policy_from,
)
from lookalike.app.ingest import count_when_cheap, ingest_items
from lookalike.app.rollout import RolloutReport, roll_out
from lookalike.app.training import HELDOUT, TrainHooks, train_and_register
from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import ConfigError, InvalidArgument, LookalikeError, ModelSpecMismatch
from lookalike.core.model_registry import ModelRegistry, ModelVersion
from lookalike.core.settings import Settings
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.embedder.backbones import ENSEMBLE_JOIN, OFFLINE, known_backbones
from lookalike.embedder.runtime import Embedder
from lookalike.embedder.training import EpochLog, TrainConfig
from lookalike.evaluation.configs import ablation, preset
from lookalike.evaluation.datasets import load_dataset
from lookalike.evaluation.suite import ConfigResult, EvalEnv, iter_evaluate
from lookalike.ingestion.pipeline import IngestReport
from lookalike.ingestion.sources import LIST_SUFFIXES, open_source
from lookalike.maintenance.dba import dba_for
from lookalike.services.jobs import (
    BadFile,
    EvalRow,
    EvalSummary,
    IngestSummary,
    JobContext,
    JobRunners,
    JobWork,
    ModelInfo,
    TrainEpoch,
    TrainParams,
    TrainSummary,
)
from lookalike.services.model_switch import ModelSwitch
from lookalike.services.search import QueryEmbedder
from lookalike.training.data import LabelledImages, labelled_images, split_by_image
from lookalike.training.run import TrainOptions, TrainOutcome

# ListModels' names for the comparison's mAPs (the UI's versions table reads them), and where
# they sit in the comparison.
PRETRAINED_MAP, FINETUNED_MAP, HASHED_MAP, FLOAT_MAP = (
    "pretrained_map", "finetuned_map", "hashed_map", "float_map")
HEADLINE = {PRETRAINED_MAP: "pretrained.map", FINETUNED_MAP: "finetuned.map",
            HASHED_MAP: "hash.hash_rerank_map@k", FLOAT_MAP: "hash.float_map@k"}


def eval_env_from(
    settings: Settings, *, ann: bool, latency_queries: int = 0, progress: bool = True,
    on_embedded: Callable[[int], None] | None = None,
) -> EvalEnv:
    """How `lookalike eval` and evaluation jobs embed, cache and verify, from the settings."""
    retrieval = settings.retrieval
    return EvalEnv(
        cache_dir=settings.cache_dir, milvus=settings.milvus,
        local=local_features_from(retrieval), verify=verify_policy_from(retrieval),
        batch_size=model_batch_size(settings), threads=settings.model.threads,
        engine=settings.model.engine,
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


def _serves_other_model(store: MilvusVectorStore, model: Embedder) -> bool:
    live = store.live_spec()
    return bool(live) and live != model.spec.to_dict()


def _require_served_model(store: MilvusVectorStore, model: Embedder) -> None:
    """Refuse to ingest once the collection serves another model's vectors (a roll-out or
    re-index moved its alias): this server's vectors would not compare with the stored ones."""
    if _serves_other_model(store, model):
        live = store.live_spec()
        raise ModelSpecMismatch(
            f"collection {store.name!r} now serves vectors of another model "
            f"({live.get('backbone')}, weights {live.get('weights')}), but this server embeds "
            f"with {model.spec.backbone} ({model.spec.weights}): restart it with that "
            "collection's model settings, then ingest"
        )


def _ingest_starter(
    settings: Settings, embedder: QueryEmbedder, store: MilvusVectorStore, blobs: BlobStore,
    switch: ModelSwitch | None,
) -> Callable[[str], JobWork]:
    def start(source: str) -> JobWork:
        if not isinstance(embedder, Embedder):
            raise ConfigError(
                f"this server embeds through the remote EmbedService at "
                f"{settings.embed_service.address}, so it runs no ingest jobs: run "
                f"`lookalike ingest {source}` where the model runs"
            )
        # After a roll-out this server staged, ingests embed with the model now served.
        model = (switch.model_for(store.live_spec()) if switch is not None else None) or embedder
        _require_served_model(store, model)
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
            # What killed ingests (jobs or CLI runs) of this store left behind goes first.
            cleaned = clean_interrupted_writes(settings, blobs)
            job.report("listing the source")
            total, listed = count_when_cheap(source, items)
            job.progress(0, total)
            job.report(f"ingesting into {store.name!r}")

            def on_batch(report: IngestReport) -> None:
                job.progress(report.seen, total)
                job.report(_ingest_message(report), ingest_summary(report))

            def stop() -> bool:
                # A roll-out that swaps the collection meanwhile stops the ingest too (below).
                return job.cancelled or _serves_other_model(store, model)

            outcome = ingest_items(
                pipeline_from(settings, model, store, blobs), store, listed, total=total,
                dba=dba, index_wait_s=settings.ingest.index_wait_s, progress=False,
                on_batch=on_batch, cancelled=stop,
            )
            report = outcome.report
            job.report(summary=ingest_summary(report))
            _require_served_model(store, model)
            job.progress(report.seen, total)
            message = _ingest_message(report)
            if outcome.dba is not None and report.added:
                message += f"; DBA recomputed {outcome.dba_updated} embeddings"
            if cleaned:
                message += f"; {cleaned}"
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
            dataset = load_dataset(Path(folder), confine=True)
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


def min_images_per_class(options: TrainOptions) -> int:
    """The fewest images a class needs under `options`: half held out for the comparison, and
    of the rest, enough for 2 validation images (mAP needs another relevant image) and one to
    train on (the same splits as training, one class at a time)."""
    n = 2
    while True:
        heldout = len(split_by_image(["c"] * n, 0.5, options.train.seed)[1])
        pool = n - heldout
        validation = len(split_by_image(["c"] * pool, options.val_fraction, options.train.seed)[1])
        if heldout >= 2 and validation >= 2 and pool > validation:
            return n
        n += 1


def _training_set(folder: str, options: TrainOptions) -> LabelledImages:
    """The labelled images training would read; InvalidArgument when they cannot train."""
    try:
        dataset = labelled_images(Path(folder), confine=True)
    except ConfigError as exc:
        raise InvalidArgument(str(exc)) from exc
    if len(dataset.classes) < 2:
        raise InvalidArgument(f"{folder} holds {len(dataset.classes)} class: training needs "
                              "images of at least 2 classes")
    least = min_images_per_class(options)
    small = sorted((n, c) for c in dataset.classes if (n := dataset.labels.count(c)) < least)
    if small:
        n, name = small[0]
        raise InvalidArgument(
            f"class {name!r} of {folder} has {n} images ({len(small)} of "
            f"{len(dataset.classes)} classes have fewer than {least}): half of each class is "
            f"held out for the comparison and {options.val_fraction:.0%} of the rest validates "
            f"each epoch, so each class needs at least {least}")
    return dataset


def _flat_numbers(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a (nested) report, by dotted name; flags and text left out."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat_numbers(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
                value):
            out[name] = float(value)
    return out


def _train_epoch(log: EpochLog) -> TrainEpoch:
    return TrainEpoch(epoch=log.epoch, train_loss=log.train_loss, val_map=log.val_map,
                      seconds=log.seconds)


def _epoch_message(log: EpochLog, planned: int) -> str:
    if log.epoch == 0:
        return (f"validation mAP before training: {log.val_map:.3f}; training {planned} "
                "epochs at most")
    return (f"epoch {log.epoch}/{planned}: training loss {log.train_loss:.4f}, validation mAP "
            f"{log.val_map:.3f}")


def _train_starter(
    settings: Settings, registry: ModelRegistry
) -> Callable[[TrainParams], JobWork]:
    def start(params: TrainParams) -> JobWork:
        backbone = params.backbone or settings.model.backbone
        if ENSEMBLE_JOIN in backbone:
            raise InvalidArgument(f"{backbone!r} is an ensemble; fine-tuning takes one backbone: "
                                  f"pick one of {', '.join(backbone.split(ENSEMBLE_JOIN))}")
        if backbone not in known_backbones():
            raise InvalidArgument(f"unknown backbone {backbone!r}; these need no download: "
                                  f"{', '.join(OFFLINE)}")
        # Protocol half: the other half of each class stays out of training, so the comparison
        # with the current model is measured on images neither model has seen. The same
        # backbone as the served one starts from the served weights.
        options = TrainOptions(train=TrainConfig(loss=params.loss, bits=params.bits,
                                                 epochs=params.epochs or TrainConfig().epochs),
                               backbone=backbone,
                               weights=(Path(settings.model.weights) if settings.model.weights
                                        and backbone == settings.model.backbone else None),
                               protocol="half")
        dataset = _training_set(params.folder, options)

        def work(job: JobContext) -> None:
            started = time.monotonic()
            summary = TrainSummary(
                dataset=dataset.name, classes=len(dataset.classes), images=len(dataset.paths),
                backbone=backbone, loss=options.train.loss, bits=options.train.bits,
                epochs_planned=options.train.epochs)
            job.progress(0, options.train.epochs, f"loading {len(dataset.paths)} images and "
                                            f"{backbone}")
            job.report(summary=summary)

            def on_epoch(log: EpochLog) -> None:
                nonlocal summary
                summary = replace(summary, epochs=(*summary.epochs, _train_epoch(log)),
                                  seconds=time.monotonic() - started)
                job.progress(log.epoch, options.train.epochs, _epoch_message(log, options.train.epochs))
                job.report(summary=summary)

            def on_trained(outcome: TrainOutcome) -> None:
                nonlocal summary
                job.raise_if_cancelled()
                ran = int(outcome.metrics.get("epochs_run", len(summary.epochs)))
                summary = replace(summary, best_epoch=int(outcome.metrics.get("best_epoch", 0)),
                                  stopped_early=bool(outcome.metrics.get("stopped_early")))
                job.progress(ran, ran if summary.stopped_early else options.train.epochs,
                             "comparing with the pretrained model on the held-out half")
                job.report(summary=summary)

            def on_compared(report: Mapping[str, Any]) -> None:
                nonlocal summary
                job.raise_if_cancelled()
                summary = _compared(summary, report)
                job.report("registering the trained model", summary)

            cache = settings.cache_dir
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="train-", dir=cache) as out:
                run = train_and_register(
                    settings, dataset, options, out_dir=Path(out), registry=registry,
                    hooks=TrainHooks(on_epoch=on_epoch, on_trained=on_trained,
                                     on_compared=on_compared, cancelled=lambda: job.cancelled))
            version = run.version
            assert version is not None  # a registry was given
            summary = replace(summary, version=version.version,
                              seconds=time.monotonic() - started)
            job.report(f"registered as {version.version}: {_comparison_text(summary)}", summary)

        return work

    return start


def headline(report: Mapping[str, Any]) -> dict[str, float]:
    """The mAPs of a `compare_on_heldout` report by short name: before and after fine-tuning,
    and of the learned codes (Hamming, re-ranked in float) next to float search."""
    numbers = _flat_numbers(report)
    return {short: numbers[name] for short, name in HEADLINE.items() if name in numbers}


def _compared(summary: TrainSummary, report: Mapping[str, Any]) -> TrainSummary:
    """`summary` with the held-out comparison of `compare_on_heldout`."""
    maps = headline(report)
    return replace(summary, pretrained_map=maps.get(PRETRAINED_MAP),
                   finetuned_map=maps.get(FINETUNED_MAP), hashed_map=maps.get(HASHED_MAP),
                   float_map=maps.get(FLOAT_MAP), comparison=_flat_numbers(report))


def _comparison_text(summary: TrainSummary) -> str:
    before, after = summary.pretrained_map, summary.finetuned_map
    if before is None or after is None:
        return "not compared"
    return (f"held-out mAP {before:.3f} before fine-tuning, {after:.3f} after "
            f"({100 * (after - before):+.1f} points)")


def trained_on_text(spec: Mapping[str, Any]) -> str:
    """What a registered version was trained on, in words ("" when its spec does not say)."""
    trained_on = spec.get("trained_on")
    if not isinstance(trained_on, Mapping):
        return ""
    classes = trained_on.get("classes")
    count = len(classes) if isinstance(classes, Sequence) and not isinstance(classes, str) \
        else classes
    parts = [f"{count} classes" if count is not None else "",
             f"{trained_on['images']} images" if "images" in trained_on else ""]
    details = ", ".join(p for p in parts if p)
    name = str(trained_on.get("dataset", "?"))
    return f"{name} ({details})" if details else name


def _serves(live: Mapping[str, Any], model: ModelVersion) -> bool:
    """Whether a collection of model spec `live` holds the vectors of `model` (the spec names
    its weights by their id)."""
    return bool(live) and live.get("backbone") == model.spec.get("backbone") and live.get(
        "weights") == model.weights_id


def _model_info(version: ModelVersion, live: Mapping[str, Any]) -> ModelInfo:
    spec = version.spec
    return ModelInfo(
        version=version.version, created_at=int(version.created_at),
        backbone=str(spec.get("backbone", "")), weights_id=version.weights_id,
        loss=str(spec.get("loss", "")), bits=int(spec.get("bits", 0) or 0),
        metrics={**_flat_numbers({k: v for k, v in version.metrics.items() if k != HELDOUT}),
                 **headline(version.metrics.get(HELDOUT) or {})},
        trained_on=trained_on_text(spec), size_bytes=version.size_bytes,
        serving=_serves(live, version),
    )


def _models_lister(
    store: MilvusVectorStore, registry: ModelRegistry
) -> Callable[[], list[ModelInfo]]:
    def models() -> list[ModelInfo]:
        live = store.live_spec()
        return [_model_info(v, live) for v in registry.list()]

    return models


def _rollout_message(collection: str, report: RolloutReport, followed: bool) -> str:
    restart = " ".join(f"{name}={value}" for name, value in report.environment().items())
    if followed:
        return (f"rolled {collection!r} out to {report}. This server embeds with it now; "
                f"restart any other server of this collection with {restart} (until then they "
                "refuse image queries and ingests)")
    return (f"rolled {collection!r} out to {report}. Restart the servers with {restart}: until "
            "then they still embed with the previous model, so they refuse image queries and "
            "ingests")


def _rollout_starter(
    settings: Settings, store: MilvusVectorStore, blobs: BlobStore, registry: ModelRegistry,
    switch: ModelSwitch | None,
) -> Callable[[str], JobWork]:
    def start(version: str) -> JobWork:
        model = registry.get(version)
        if _serves(store.live_spec(), model):
            raise InvalidArgument(f"{store.name!r} already serves {model.version}: nothing to "
                                  "roll out")

        def work(job: JobContext) -> None:
            job.report(f"re-indexing {store.name!r} with {model.version} "
                       f"({model.spec.get('backbone', '?')}) while it keeps serving")
            report = roll_out(settings, store, blobs, model.version,
                              progress=lambda done, total: job.progress(done, total),
                              on_model=switch.stage if switch is not None else None)
            job.progress(report.reindex.rows, report.reindex.rows)
            if not report.swapped:
                raise LookalikeError(
                    f"{len(report.reindex.failed)} images could not be re-indexed (their "
                    f"originals are missing or unreadable), so {store.name!r} still serves "
                    f"{report.reindex.previous}; restore their blobs and roll out again, or run "
                    f"`lookalike reindex --model {model.version} --allow-missing`")
            job.report(_rollout_message(store.name, report, followed=switch is not None))

        return work

    return start


def job_runners_from(
    settings: Settings, embedder: QueryEmbedder, store: MilvusVectorStore, blobs: BlobStore,
    switch: ModelSwitch | None = None,
) -> JobRunners:
    """Ingest jobs into the served collection with the served (in-process) embedder, evaluation
    and training jobs on labelled folders (a trained model goes to the registry in `blobs`),
    and roll-outs of the served collection to a registered model; a remote embedder refuses
    ingest jobs. With `switch` (the engine's follower, in-process embedders only) a roll-out
    stages its model there, so this server follows the collection without a restart."""
    registry = ModelRegistry(blobs)
    if not isinstance(embedder, Embedder):
        switch = None
    return JobRunners(ingest=_ingest_starter(settings, embedder, store, blobs, switch),
                      evaluate=_eval_starter(settings),
                      train=_train_starter(settings, registry),
                      rollout=_rollout_starter(settings, store, blobs, registry, switch),
                      models=_models_lister(store, registry))
