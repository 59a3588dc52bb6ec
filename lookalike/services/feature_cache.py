"""Stored images' local features kept in memory between searches, by content hash.

A verified search reads up to `verify_top_n` feature blobs (about 65 KB each); popular images
come back in many searches, and a blob store round trip per candidate would be most of what
verification costs on S3. Features are content-addressed, so an entry never goes stale: a
deleted image's entry is simply never asked for again and ages out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from lookalike.embedder.local_features import LocalFeatures


def _size(features: LocalFeatures) -> int:
    return int(features.points.nbytes + features.descriptors.nbytes)


class FeatureCache:
    """Least recently used features dropped once the entries pass `max_bytes` (0: keeps none)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, LocalFeatures] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        """Bytes of the features held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, sha256: str) -> LocalFeatures | None:
        """The features of this image, if held (and now the most recently used)."""
        with self._lock:
            found = self._entries.get(sha256)
            if found is not None:
                self._entries.move_to_end(sha256)
            return found

    def put(self, sha256: str, features: LocalFeatures) -> None:
        """Hold the features of this image, dropping the least recently used past the bound."""
        size = _size(features)
        if size > self.max_bytes:
            return
        with self._lock:
            if (old := self._entries.pop(sha256, None)) is not None:
                self._bytes -= _size(old)
            self._entries[sha256] = features
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= _size(dropped)
