"""What the server accepts as a job request: the kinds of job, and the checks a training or
roll-out request passes before any work starts (each refusal an InvalidArgument naming what is
wrong). Sources and folders are checked against the job roots by `core.paths.JobRoots`."""

from __future__ import annotations

from dataclasses import dataclass

from lookalike.core.errors import InvalidArgument
from lookalike.embedder.hashing import HASH_BITS
from lookalike.embedder.losses import DEFAULT_LOSS, LOSSES

INGEST, EVALUATE, TRAIN, ROLLOUT = "ingest", "evaluate", "train", "rollout"
# The learned hash layer is served as an ITQ artefact, so its bits are one of HASH_BITS; 48 is
# the latent layer of Lin et al. (CVPRW 2015).
DEFAULT_BITS = 48
# A training job asking for more epochs is refused: on a CPU server it would run for days.
MAX_EPOCHS = 200


@dataclass(frozen=True, slots=True)
class TrainParams:
    """A training job's request, checked: a folder inside the job roots, a known loss, the hash
    code's bits, at most this many epochs (0: the runner's default), a backbone ("": the
    served model's)."""

    folder: str
    loss: str
    bits: int
    epochs: int
    backbone: str


def train_params(folder: str, loss: str, bits: int, epochs: int, backbone: str) -> TrainParams:
    """A training request checked (unset loss: hash, unset bits: 48); InvalidArgument naming
    what is wrong."""
    loss = loss.strip() or DEFAULT_LOSS
    if loss not in LOSSES:
        raise InvalidArgument(f"unknown loss {loss!r}: choose one of {', '.join(LOSSES)}")
    bits = bits or DEFAULT_BITS
    if bits not in HASH_BITS:
        raise InvalidArgument(f"the hash code has {', '.join(map(str, HASH_BITS))} bits "
                              f"(0: {DEFAULT_BITS}), not {bits}")
    if not 0 <= epochs <= MAX_EPOCHS:
        raise InvalidArgument(f"epochs must lie between 1 and {MAX_EPOCHS} (or be 0 for the "
                              f"default), got {epochs}")
    return TrainParams(folder=folder, loss=loss, bits=bits, epochs=epochs,
                       backbone=backbone.strip())


def rollout_version(version: str, confirm: bool) -> str:
    """The model version a roll-out request names, stripped; InvalidArgument when it names none
    or is not confirmed."""
    version = version.strip()
    if not version:
        raise InvalidArgument("give the model version to roll out (ListModels names them)")
    if not confirm:
        raise InvalidArgument(
            f"rolling out {version} rebuilds the served collection with that model and then "
            "serves it: confirm to go ahead"
        )
    return version


def rollout_cancel_refusal(version: str) -> str:
    """Why a roll-out cannot be cancelled once it runs."""
    return (f"the roll-out to {version} cannot be stopped part way; the current collection "
            "serves until the new one is complete, and stays for a rollback after the swap")
