"""The training losses by name, with a line on each: the one list the trainer, the server's
job checks, the CLI and the UI (through the client) all read. Imports no torch, so a page or a
command that only names them stays light."""

from __future__ import annotations

LOSS_HELP = {
    "hash": "a classification head over a sigmoid hash layer: learns the binary codes too",
    "triplet": "triplet loss with the hardest positives and negatives of each batch",
    "arcface": "additive angular margin: classes pulled apart on the sphere",
}
LOSSES = tuple(LOSS_HELP)
DEFAULT_LOSS = "hash"
