"""JobService: background ingest, evaluation, training and roll-out jobs the server runs for
its clients.

The composition root hands the server `JobRunners` (runners.py): one starter per kind of job. A
starter checks its request and refuses it with a typed error (so the caller hears at once), or
returns the work to run; the `JobRegistry` (registry.py) runs that work in a background thread,
one job per kind at a time, and keeps the last finished jobs for clients to look at. Work
reports its progress and summary through a `JobContext` and polls it for cancellation. Sources
(and the labelled folders training reads) must lie inside the server's job roots
(`server.job_roots`); a roll-out names a model version of the registry instead, which the
runners also list. policy.py holds the request checks, proto.py the messages, servicer.py the
RPCs. Every name is importable from here, as before the split.
"""

from lookalike.services.job_summaries import BadFile as BadFile
from lookalike.services.job_summaries import EvalRow as EvalRow
from lookalike.services.job_summaries import EvalSummary as EvalSummary
from lookalike.services.job_summaries import IngestSummary as IngestSummary
from lookalike.services.job_summaries import ModelInfo as ModelInfo
from lookalike.services.job_summaries import TrainEpoch as TrainEpoch
from lookalike.services.job_summaries import TrainSummary as TrainSummary
from lookalike.services.jobs.policy import DEFAULT_BITS as DEFAULT_BITS
from lookalike.services.jobs.policy import EVALUATE as EVALUATE
from lookalike.services.jobs.policy import INGEST as INGEST
from lookalike.services.jobs.policy import MAX_EPOCHS as MAX_EPOCHS
from lookalike.services.jobs.policy import ROLLOUT as ROLLOUT
from lookalike.services.jobs.policy import TRAIN as TRAIN
from lookalike.services.jobs.policy import TrainParams as TrainParams
from lookalike.services.jobs.policy import train_params as train_params
from lookalike.services.jobs.registry import ACTIVE as ACTIVE
from lookalike.services.jobs.registry import CANCELLED as CANCELLED
from lookalike.services.jobs.registry import FAILED as FAILED
from lookalike.services.jobs.registry import KEEP_FINISHED as KEEP_FINISHED
from lookalike.services.jobs.registry import QUEUED as QUEUED
from lookalike.services.jobs.registry import RUNNING as RUNNING
from lookalike.services.jobs.registry import SUCCEEDED as SUCCEEDED
from lookalike.services.jobs.registry import JobBusy as JobBusy
from lookalike.services.jobs.registry import JobCancelled as JobCancelled
from lookalike.services.jobs.registry import JobContext as JobContext
from lookalike.services.jobs.registry import JobRegistry as JobRegistry
from lookalike.services.jobs.registry import JobSnapshot as JobSnapshot
from lookalike.services.jobs.registry import JobWork as JobWork
from lookalike.services.jobs.registry import Summary as Summary
from lookalike.services.jobs.runners import EvalStarter as EvalStarter
from lookalike.services.jobs.runners import IngestStarter as IngestStarter
from lookalike.services.jobs.runners import JobRunners as JobRunners
from lookalike.services.jobs.runners import ModelLister as ModelLister
from lookalike.services.jobs.runners import RollOutStarter as RollOutStarter
from lookalike.services.jobs.runners import TrainStarter as TrainStarter
from lookalike.services.jobs.servicer import JobServicer as JobServicer
