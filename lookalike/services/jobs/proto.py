"""Jobs as lookalike.v1 messages: a registry snapshot with the summary of its kind, and a
registered model version."""

from __future__ import annotations

from lookalike.services.gen.lookalike.v1 import lookalike_pb2 as pb
from lookalike.services.job_summaries import EvalSummary, IngestSummary, ModelInfo, TrainSummary
from lookalike.services.jobs.registry import JobSnapshot, Summary


def job_pb(job: JobSnapshot) -> pb.Job:
    """The job message of a snapshot (times in whole seconds)."""
    out = pb.Job(
        id=job.id, kind=job.kind, state=job.state, source=job.source, done=job.done,
        total=job.total, rate_per_s=job.rate_per_s, eta_s=job.eta_s, message=job.message,
        started_at=int(job.started_at), finished_at=int(job.finished_at),
    )
    _summary_pb(out, job.summary)
    return out


def _summary_pb(out: pb.Job, summary: Summary | None) -> None:
    """Put the summary of its kind into `out`."""
    if isinstance(summary, IngestSummary):
        out.ingest.CopyFrom(pb.IngestSummary(
            seen=summary.seen, added=summary.added, already_stored=summary.already_stored,
            duplicates=summary.duplicates, seconds=summary.seconds,
            failed=[pb.BadFile(path=f.path, reason=f.reason) for f in summary.failed],
        ))
    elif isinstance(summary, EvalSummary):
        out.evaluation.CopyFrom(pb.EvalSummary(
            dataset=summary.dataset, kind=summary.kind, images=summary.images,
            queries=summary.queries,
            rows=[pb.EvalRow(config=r.config, levers=r.levers, scores=r.scores,
                             pk_curve=list(r.pk_curve), per_class_ap=r.per_class_ap)
                  for r in summary.rows],
        ))
    elif isinstance(summary, TrainSummary):
        out.training.CopyFrom(pb.TrainSummary(
            dataset=summary.dataset, classes=summary.classes, images=summary.images,
            backbone=summary.backbone, loss=summary.loss, bits=summary.bits,
            epochs_planned=summary.epochs_planned,
            epochs=[pb.TrainEpoch(epoch=e.epoch, train_loss=e.train_loss, val_map=e.val_map,
                                  seconds=e.seconds) for e in summary.epochs],
            best_epoch=summary.best_epoch, stopped_early=summary.stopped_early,
            pretrained_map=summary.pretrained_map, finetuned_map=summary.finetuned_map,
            hashed_map=summary.hashed_map, float_map=summary.float_map,
            comparison=summary.comparison, version=summary.version, seconds=summary.seconds,
        ))


def model_pb(model: ModelInfo) -> pb.ModelInfo:
    """A registered model version as a message."""
    return pb.ModelInfo(
        version=model.version, created_at=model.created_at, backbone=model.backbone,
        weights_id=model.weights_id, loss=model.loss, bits=model.bits, metrics=model.metrics,
        trained_on=model.trained_on, size_bytes=model.size_bytes, serving=model.serving,
    )
