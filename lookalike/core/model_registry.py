"""The model registry: trained models as numbered versions (v1, v2, ...) in the blob store.

Each version lives under `models/registry/<version>/`:

- `claim`: the random token of the registration that took the id. Claims are taken in order
  and never removed, so version ids stay contiguous and are never reused, not even after the
  latest version is deleted;
- its artefacts, `<name>-<token>.<ext>` (weights.pt, curves.png, curves.json, hash.npz): the
  token in the name keeps two registrations that raced for one id from writing the same keys;
- `manifest.json`, written LAST: spec, metrics, the artefacts' keys and SHA-256 digests. A
  version is listed only once its manifest exists, so a half-written one (a crash, an upload in
  progress) never is.

A claim is taken with the store's create-if-absent (`BlobStore.create`), atomic on the local
store. On S3 it is check-then-put, so two registrations may pick the same free id there: each
reads its token back, and again just before writing its manifest; the one whose token was
overwritten removes its artefacts and takes the next id. What remains on S3 is the window
between that last read and the manifest's write, milliseconds against the seconds a weights
upload takes. Bytes and JSON only: this module needs no torch.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookalike.core.blob_store import BlobStore, write_file
from lookalike.core.errors import ConfigError, InvalidArgument, NotFound, StoreUnavailable

REGISTRY_PREFIX = "models/registry"
MANIFEST = "manifest.json"
CLAIM = "claim"
FORMAT_VERSION = 1
# A registration that keeps losing its id to concurrent ones gives up after this many tries.
CLAIM_ATTEMPTS = 8
# Artefact name -> (file name, content type). `weights` is required, the rest optional.
ARTEFACTS: dict[str, tuple[str, str]] = {
    "weights": ("weights.pt", "application/octet-stream"),
    "curves_png": ("curves.png", "image/png"),
    "curves_json": ("curves.json", "application/json"),
    "hash": ("hash.npz", "application/octet-stream"),
}
_VERSION = re.compile(r"v[1-9][0-9]*")


class ModelNotFound(NotFound):
    """A model version the registry does not hold; `known` lists those it does."""

    def __init__(self, version: str, known: list[str]) -> None:
        held = f"known versions: {', '.join(known)}" if known else "the registry holds none"
        super().__init__(f"model version {version!r} not found; {held}")
        self.version = version
        self.known = known


class RegistryCorrupt(ConfigError):
    """A registry manifest or artefact that is unreadable, missing or not what was recorded."""


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One registered model: its spec (what it is and was trained on), metrics, and its
    artefacts' blob keys (`files`) and SHA-256 digests (`sha256`) by name."""

    version: str
    created_at: float
    spec: dict[str, Any]
    metrics: dict[str, Any]
    files: dict[str, str]
    size_bytes: int
    sha256: dict[str, str] = field(default_factory=dict)

    @property
    def weights_id(self) -> str:
        """The weights id a collection built with this model records in its spec (the
        backbone loader's `sha256:<16 hex>` of the weights file)."""
        return f"sha256:{self.sha256['weights'][:16]}"

    @property
    def has_hash(self) -> bool:
        """Whether it carries a learned hash layer (an ItqHash artefact)."""
        return "hash" in self.files

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON content."""
        return {
            "format": FORMAT_VERSION, "version": self.version, "created_at": self.created_at,
            "spec": self.spec, "metrics": self.metrics, "files": self.files,
            "sha256": self.sha256, "size_bytes": self.size_bytes,
        }


def version_prefix(version: str) -> str:
    """The blob key prefix of a version's artefacts."""
    return f"{REGISTRY_PREFIX}/{version}"


def is_version(name: str) -> bool:
    """Whether `name` is a version id (v1, v2, ...); no backbone is named like one."""
    return _VERSION.fullmatch(name) is not None


def check_version(version: str) -> str:
    """`version` if it is a version id (v1, v2, ...); InvalidArgument otherwise."""
    if not is_version(version):
        raise InvalidArgument(f"{version!r} is not a model version (v1, v2, ...)")
    return version


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _jsonable(value: object) -> object:
    """numpy scalars and arrays (metrics often are) as plain JSON values."""
    for method in ("item", "tolist"):
        if callable(convert := getattr(value, method, None)):
            return convert()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _parse_manifest(raw: bytes, key: str) -> ModelVersion:
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise ValueError(f"not a format-{FORMAT_VERSION} manifest")
        files = {str(k): str(v) for k, v in dict(data["files"]).items()}
        sha256 = {str(k): str(v) for k, v in dict(data["sha256"]).items()}
        if "weights" not in files or set(files) != set(sha256):
            raise ValueError("its files and digests do not match, or it names no weights")
        return ModelVersion(
            version=check_version(str(data["version"])), created_at=float(data["created_at"]),
            spec=dict(data["spec"]), metrics=dict(data["metrics"]), files=files,
            size_bytes=int(data["size_bytes"]), sha256=sha256,
        )
    except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
        raise RegistryCorrupt(
            f"model manifest {key!r} is unreadable ({exc}); delete that version "
            "(`lookalike models delete VERSION --yes`) or restore the blob"
        ) from exc


class ModelRegistry:
    """Trained models as numbered versions in a blob store (local directory or S3)."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def register(
        self,
        weights: bytes,
        spec: Mapping[str, Any],
        metrics: Mapping[str, Any],
        curves_png: bytes | None = None,
        curves_json: bytes | None = None,
        hash_artefact: bytes | None = None,
    ) -> ModelVersion:
        """Store a trained model as the next version and return it.

        `weights` is the state dict file the backbone loader reads; `spec` must name its
        `backbone`, and a `weights_id` in it must be the one of these bytes.
        """
        if not weights:
            raise InvalidArgument("cannot register a model without weights")
        if not isinstance(spec.get("backbone"), str) or not spec["backbone"]:
            raise InvalidArgument("a model's spec must name its backbone")
        weights_id = f"sha256:{_sha256(weights)[:16]}"
        if spec.get("weights_id", weights_id) != weights_id:
            raise InvalidArgument(
                f"the spec's weights_id {spec['weights_id']} is not the one of the weights given "
                f"({weights_id})"
            )
        try:
            spec_json = json.loads(json.dumps(dict(spec), default=_jsonable))
            metrics_json = json.loads(json.dumps(dict(metrics), default=_jsonable))
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"a model's spec and metrics must be JSON: {exc}") from exc
        artefacts = {"weights": weights, "curves_png": curves_png, "curves_json": curves_json,
                     "hash": hash_artefact}
        present = {name: data for name, data in artefacts.items() if data is not None}
        for _ in range(CLAIM_ATTEMPTS):
            version, token = self._claim()
            files = {name: self._artefact_key(version, name, token) for name in present}
            for name, data in present.items():
                self.blobs.put(files[name], data, ARTEFACTS[name][1])
            if self._claim_token(version) != token:
                # A concurrent registration took this id after we did: leave it to that one.
                for key in files.values():
                    self.blobs.delete(key)
                continue
            model = ModelVersion(
                version=version, created_at=time.time(), spec=spec_json, metrics=metrics_json,
                files=files, size_bytes=sum(len(d) for d in present.values()),
                sha256={name: _sha256(data) for name, data in present.items()},
            )
            self.blobs.put(self._manifest_key(version),
                           json.dumps(model.to_dict(), indent=2).encode(), "application/json")
            return model
        raise StoreUnavailable(
            f"no model version id could be claimed in {CLAIM_ATTEMPTS} tries: too many "
            "concurrent registrations"
        )

    def list(self) -> list[ModelVersion]:
        """Every complete version, oldest first (deleted and half-written ones are not)."""
        return [model for version in self._claimed() if (model := self._load(version))]

    def get(self, version: str) -> ModelVersion:
        """The version `version`; ModelNotFound (listing the known ones) when there is none."""
        model = self._load(check_version(version))
        if model is None:
            raise ModelNotFound(version, [m.version for m in self.list()])
        return model

    def delete(self, version: str) -> ModelVersion | None:
        """Remove a version: its manifest first (it stops being listed), then its artefacts.
        Its id stays taken. Returns what was deleted; None for a version whose manifest was
        corrupt (its artefacts are found by the claim's token instead)."""
        check_version(version)
        try:
            model = self._load(version)
        except RegistryCorrupt:
            model = None
            token = self._claim_token(version)
            keys = [self._artefact_key(version, name, token) for name in ARTEFACTS] if token else []
        else:
            if model is None:
                raise ModelNotFound(version, [m.version for m in self.list()])
            keys = list(model.files.values())
        self.blobs.delete(self._manifest_key(version))
        for key in keys:
            self.blobs.delete(key)
        return model

    def weights_file(self, version: str, cache_dir: Path) -> Path:
        """A local copy of the version's weights under `cache_dir`, downloaded once and checked
        against the SHA-256 recorded at registration."""
        model = self.get(version)
        digest = model.sha256["weights"]
        path = cache_dir / "models" / f"{model.version}-{digest[:16]}.pt"
        if path.is_file() and _file_sha256(path) == digest:
            return path
        data = self._artefact(model, "weights")
        assert data is not None
        write_file(path, data)
        return path

    def hash_artefact(self, version: str) -> bytes | None:
        """The learned hash layer (ItqHash bytes) of the version; None when it has none."""
        return self._artefact(self.get(version), "hash")

    def curves_png(self, version: str) -> bytes | None:
        """The loss and validation-mAP curves of the version's training; None when not stored."""
        return self._artefact(self.get(version), "curves_png")

    def curves_json(self, version: str) -> bytes | None:
        """The curves' numbers per epoch as JSON; None when not stored."""
        return self._artefact(self.get(version), "curves_json")

    def _artefact(self, model: ModelVersion, name: str) -> bytes | None:
        key = model.files.get(name)
        if key is None:
            return None
        try:
            data = self.blobs.get(key)
        except NotFound:
            raise RegistryCorrupt(
                f"model {model.version}'s {name} {key!r} is missing from the blob store"
            ) from None
        if (got := _sha256(data)) != model.sha256[name]:
            raise RegistryCorrupt(
                f"model {model.version}'s {name} {key!r} has SHA-256 {got[:16]}..., not the "
                f"{model.sha256[name][:16]}... recorded at registration: the blob was changed "
                "or damaged"
            )
        return data

    def _claimed(self) -> builtins.list[str]:
        """The ids claimed so far, in order (claims are contiguous from v1)."""
        versions: builtins.list[str] = []
        while self.blobs.exists(self._claim_key(version := f"v{len(versions) + 1}")):
            versions.append(version)
        return versions

    def _claim(self) -> tuple[str, str]:
        """Take the first unclaimed id; (id, this registration's token)."""
        token = secrets.token_hex(8)
        number = len(self._claimed()) + 1
        while True:
            version = f"v{number}"
            created = self.blobs.create(self._claim_key(version), token.encode(), "text/plain")
            if created and self._claim_token(version) == token:
                return version, token
            number += 1

    def _claim_token(self, version: str) -> str:
        try:
            return self.blobs.get(self._claim_key(version)).decode("ascii", "replace")
        except NotFound:
            return ""

    def _load(self, version: str) -> ModelVersion | None:
        key = self._manifest_key(version)
        try:
            raw = self.blobs.get(key)
        except NotFound:
            return None
        model = _parse_manifest(raw, key)
        if model.version != version:
            raise RegistryCorrupt(f"model manifest {key!r} describes {model.version}, not {version}")
        return model

    @staticmethod
    def _claim_key(version: str) -> str:
        return f"{version_prefix(version)}/{CLAIM}"

    @staticmethod
    def _manifest_key(version: str) -> str:
        return f"{version_prefix(version)}/{MANIFEST}"

    @staticmethod
    def _artefact_key(version: str, name: str, token: str) -> str:
        stem, suffix = ARTEFACTS[name][0].split(".")
        return f"{version_prefix(version)}/{stem}-{token}.{suffix}"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
