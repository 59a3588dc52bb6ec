"""Model artefacts learned on a collection (whitening, hash codes) kept in the blob store under
their content id, and read back with a clear error when missing or unusable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import ConfigError, NotFound


class Artefact(Protocol):
    """Something learned and stored under its content id."""

    @property
    def id(self) -> str:
        """Its content id."""
        ...


A = TypeVar("A", bound=Artefact)


def load_artefact(
    blobs: BlobStore, key: str, artefact_id: str, parse: Callable[[bytes], A],
    parse_error: type[Exception], kind: str, missing_hint: str,
) -> A:
    """The artefact `artefact_id` stored at `key`; ConfigError naming the key when it is missing
    (with `missing_hint`), unreadable, or holds another artefact."""
    try:
        artefact = parse(blobs.get(key))
    except NotFound:
        raise ConfigError(
            f"the collection uses {kind} {artefact_id}, but the blob store has no {key!r}: "
            f"{missing_hint}"
        ) from None
    except parse_error as exc:
        raise ConfigError(f"blob {key!r} is not a {kind} artefact: {exc}") from exc
    if artefact.id != artefact_id:
        raise ConfigError(f"blob {key!r} holds {kind} {artefact.id}, not {artefact_id}")
    return artefact
