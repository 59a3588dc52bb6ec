"""Models a roll-out is about to serve, staged so a running server follows the collection's
alias to them instead of refusing queries until it restarts.

A roll-out builds the new model's embedder before it re-indexes; staged here, it is loaded and
wrapped like the served one (dynamic batching) ahead of time. The search engine switches to it
when it sees the collection's live model spec change, so image queries keep answering across
the swap, and ingest jobs started afterwards embed with it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from lookalike.embedder.runtime import Embedder
from lookalike.services.search import QueryEmbedder

# The served model and the one being rolled out; an older staged one is dropped.
KEEP_STAGED = 2


def spec_key(spec: Mapping[str, Any]) -> str:
    """One string per model spec (a collection's live spec, or an embedder's)."""
    return json.dumps(dict(spec), sort_keys=True)


def _unwrapped(embedder: QueryEmbedder) -> QueryEmbedder:
    return embedder


class ModelSwitch:
    """Embedders staged by roll-outs, by model spec, each also in its served (wrapped) form."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, Embedder] = {}
        self._served: dict[str, QueryEmbedder] = {}
        self._wrap: Callable[[QueryEmbedder], QueryEmbedder] = _unwrapped

    def wrap_with(self, wrap: Callable[[QueryEmbedder], QueryEmbedder]) -> None:
        """How a staged model is served (the server's batching); set once, before staging."""
        with self._lock:
            self._wrap = wrap

    def stage(self, model: Embedder) -> None:
        """Load `model` and keep it, ready for when the collection serves its spec."""
        model.load()
        served = self._wrap(model)
        key = spec_key(model.spec.to_dict())
        with self._lock:
            self._models.pop(key, None)
            self._served.pop(key, None)
            self._models[key] = model
            self._served[key] = served
            while len(self._models) > KEEP_STAGED:
                oldest = next(iter(self._models))
                del self._models[oldest]
                del self._served[oldest]

    def model_for(self, spec: Mapping[str, Any]) -> Embedder | None:
        """The staged in-process model that embeds like `spec`, if any."""
        with self._lock:
            return self._models.get(spec_key(spec))

    def served_for(self, spec: Mapping[str, Any]) -> QueryEmbedder | None:
        """The staged model for `spec` as the server serves it (batched), if any."""
        with self._lock:
            return self._served.get(spec_key(spec))
