"""On-disk caches of evaluation descriptors and local features, keyed by what produced them.

An ablation runs many configurations over the same images; those that share an embedding
(backbone, pooling, TTA) share its descriptors, and the re-ranking levers run on the cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lookalike.embedder.local_features import LocalFeatures


def files_fingerprint(paths: Sequence[Path]) -> str:
    """Changes when any file is added, removed, resized or touched."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.absolute()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def cache_key(what: dict[str, Any], paths: Sequence[Path]) -> str:
    """A file-name-safe key for `what` computed over `paths`."""
    payload = json.dumps(what, sort_keys=True) + files_fingerprint(paths)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def cached_array(
    path: Path, compute: Callable[[], NDArray[np.float32]]
) -> NDArray[np.float32]:
    """The array stored at `path`, or `compute()` stored there first."""
    if path.is_file():
        return np.asarray(np.load(path), dtype=np.float32)
    array = np.asarray(compute(), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)
    return array


def cached_features(
    path: Path, compute: Callable[[], list[LocalFeatures]]
) -> list[LocalFeatures]:
    """Local features stored at `path` (one blob per image, as at ingest), or computed first."""
    if path.is_file():
        with np.load(path) as z:
            return [LocalFeatures.from_bytes(z[f"f{i}"].tobytes()) for i in range(len(z.files))]
    features = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    arrays: dict[str, Any] = {f"f{i}": np.frombuffer(feat.to_bytes(), dtype=np.uint8)
                              for i, feat in enumerate(features)}
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)
    return features
