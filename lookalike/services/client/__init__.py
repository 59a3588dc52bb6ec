"""A typed client of the lookalike.v1 API; the UI and CLI reach the platform only through it.

connection.py holds the client and its configuration, values.py the plain values it hands back
and takes, mapping.py the messages mapped to and from them, errors.py the error a call raises.
Every name is importable from here, as before the split.
"""

from lookalike.services.client.connection import ClientConfig as ClientConfig
from lookalike.services.client.connection import LookalikeClient as LookalikeClient
from lookalike.services.client.connection import client_config_from_env as client_config_from_env
from lookalike.services.client.errors import ClientError as ClientError
from lookalike.services.client.values import JOB_STATES_FINISHED as JOB_STATES_FINISHED
from lookalike.services.client.values import SEARCH_PROFILES as SEARCH_PROFILES
from lookalike.services.client.values import TRAINING_LOSS_HELP as TRAINING_LOSS_HELP
from lookalike.services.client.values import TRAINING_LOSSES as TRAINING_LOSSES
from lookalike.services.client.values import BatchSearchResult as BatchSearchResult
from lookalike.services.client.values import CollectionSummary as CollectionSummary
from lookalike.services.client.values import DropResult as DropResult
from lookalike.services.client.values import EmbedResponse as EmbedResponse
from lookalike.services.client.values import EmbedResult as EmbedResult
from lookalike.services.client.values import GetResponse as GetResponse
from lookalike.services.client.values import Hit as Hit
from lookalike.services.client.values import Job as Job
from lookalike.services.client.values import Page as Page
from lookalike.services.client.values import RebuildResult as RebuildResult
from lookalike.services.client.values import SearchQuery as SearchQuery
from lookalike.services.client.values import SearchResponse as SearchResponse
from lookalike.services.client.values import Stats as Stats
from lookalike.services.client.values import UpsertItem as UpsertItem
from lookalike.services.client.values import UpsertResult as UpsertResult
from lookalike.services.job_summaries import BadFile as BadFile
from lookalike.services.job_summaries import EvalRow as EvalRow
from lookalike.services.job_summaries import EvalSummary as EvalSummary
from lookalike.services.job_summaries import IngestSummary as IngestSummary
from lookalike.services.job_summaries import ModelInfo as ModelInfo
from lookalike.services.job_summaries import TrainEpoch as TrainEpoch
from lookalike.services.job_summaries import TrainSummary as TrainSummary
