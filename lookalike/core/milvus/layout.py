"""How Lookalike lays its vectors out in Milvus: collection names, the properties a collection
carries, and the records of what a store read about its live collection.

One physical collection per (name, model spec), named `<name>__<spec fingerprint>`; the public
name is an alias that points at the live one. Pure: the Milvus calls that read these are in
inspection.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lookalike.core.errors import ConfigError

if TYPE_CHECKING:
    from lookalike.core.milvus.companions import CodeEncoder

SPEC_PROPERTY = "lookalike.model_spec"
DBA_PROPERTY = "lookalike.dba"
HASH_PROPERTY = "lookalike.hash"
PARTITION_PROPERTY = "lookalike.partition_by"
# The float index a rebuild asked for: Milvus Lite reports no build parameters of its own.
INDEX_PROPERTY = "lookalike.index"
CATEGORY_FIELD = "category"
RAW_FIELD = "raw"
MAX_TOP_K = 16384
VectorField = Literal["embedding", "raw"]
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")


@dataclass(frozen=True, slots=True)
class DbaParams:
    """Database-side augmentation: `k` neighbours averaged in, weighted by similarity ** alpha."""

    k: int
    alpha: float

    def to_json(self) -> str:
        """The collection property's value."""
        return json.dumps({"k": self.k, "alpha": self.alpha}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> DbaParams:
        """Parse a value written by `to_json`."""
        value = json.loads(raw)
        return cls(k=int(value["k"]), alpha=float(value["alpha"]))


@dataclass(frozen=True, slots=True)
class HashInfo:
    """The binary codes a collection keeps: which encoder made them and how many bits."""

    encoder_id: str
    bits: int
    # Whether the codes collection also keeps each image's float descriptor (companions.py);
    # codes written before it could are without.
    floats: bool = False

    def to_json(self) -> str:
        """The collection property's value."""
        return json.dumps({"id": self.encoder_id, "bits": self.bits, "floats": self.floats},
                          sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> HashInfo:
        """Parse a value written by `to_json`."""
        value = json.loads(raw)
        return cls(encoder_id=str(value["id"]), bits=int(value["bits"]),
                   floats=bool(value.get("floats", False)))


@dataclass(frozen=True, slots=True)
class Layout:
    """What a store read about its live collection: where it is and what it keeps."""

    physical: str
    index_type: str
    index_params: dict[str, Any]
    # none, label or predicted: what the `category` partition key holds.
    partition_by: str
    raw: bool
    hash: HashInfo | None
    spec: dict[str, Any]
    read_at: float

    @property
    def partitioned(self) -> bool:
        """Whether rows carry a `category` partition key (and the collection has routes)."""
        return self.partition_by != "none"


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """What a collection holds and how it is indexed."""

    name: str
    physical_name: str
    count: int
    index_type: str
    index_params: dict[str, Any]
    metric_type: str
    spec: dict[str, Any]


def spec_fingerprint(spec: Mapping[str, Any]) -> str:
    """A short stable hash of a model spec."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def physical_name(name: str, spec: Mapping[str, Any]) -> str:
    """The physical collection that holds `name` for this model spec."""
    return f"{name}__{spec_fingerprint(spec)}"


def check_collection_name(name: str) -> str:
    """`name` if Milvus accepts it as a collection or alias name."""
    if not _NAME_RE.match(name) or "__" in name:
        raise ConfigError(
            f"collection name {name!r} is invalid: use letters, digits and single underscores, "
            "starting with a letter or underscore"
        )
    return name


def spec_diff(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    """The keys on which two model specs differ, each with both values."""
    keys = sorted(set(stored) | set(wanted))
    diffs = [f"{k}: {stored.get(k)!r} != {wanted.get(k)!r}" for k in keys
             if stored.get(k) != wanted.get(k)]
    return "; ".join(diffs)


def embedding_dim(description: Mapping[str, Any]) -> int:
    """The dimension of the `embedding` field in a collection's description (0: none)."""
    for f in description.get("fields", []):
        if f.get("name") == "embedding":
            return int(f.get("params", {}).get("dim", 0))
    return 0


def partition_of(description: Mapping[str, Any]) -> str:
    """What a described collection's partition key holds: none, label or predicted."""
    if not any(f.get("name") == CATEGORY_FIELD for f in description.get("fields", [])):
        return "none"
    # Collections made before `predicted` existed were partitioned by label.
    return str(description.get("properties", {}).get(PARTITION_PROPERTY, "label"))


def has_raw(description: Mapping[str, Any]) -> bool:
    """Whether a described collection keeps raw descriptors (it was created with DBA)."""
    return any(f.get("name") == RAW_FIELD for f in description.get("fields", []))


def require_encoder(name: str, encoder: CodeEncoder | None, info: HashInfo) -> CodeEncoder:
    """`encoder` where it made the codes `info` describes; ConfigError where another or none is
    loaded."""
    if encoder is None or encoder.id != info.encoder_id:
        raise ConfigError(
            f"collection {name!r} keeps hash codes of {info.encoder_id}, but that hash "
            "is not loaded here; open the collection through lookalike.app.compose"
        )
    return encoder
