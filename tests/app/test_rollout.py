"""Roll-out: a collection moves to a registered model version while it serves, and takes the
version's learned hash layer for its binary codes (server) or says why not (Milvus Lite)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from lookalike import cli
from lookalike.app.compose import blobs_from, embedder_from, existing_store_from
from lookalike.app.rollout import LITE_SKIPPED, roll_out
from lookalike.core.blob_store import BlobStore, LocalBlobStore
from lookalike.core.errors import ConfigError
from lookalike.core.milvus.vector_index import SearchParams
from lookalike.core.model_registry import ModelNotFound, ModelRegistry, ModelVersion
from lookalike.core.settings import Settings
from lookalike.embedder.backbones import build_backbone
from lookalike.embedder.hashing import ItqHash, itq_from_linear
from lookalike.embedder.runtime import Embedder
from lookalike.maintenance.hash_codes import hash_key
from tests.conftest import MilvusServer, encode, make_settings
from tests.maintenance.test_reindex import (
    AFTER_SWAP,
    SEARCH_THREADS,
    SearchLoop,
    _all_meta,
    _build,
    _photos,
    _vectors,
)

BACKBONE = "mobilenet_v2"
DIM = 1280
GEM_P = 2.0
INPUT_SIZE = 96


@pytest.fixture(scope="module")
def tuned_weights() -> bytes:
    """A "fine-tuned" MobileNetV2: the offline ImageNet state dict with one tensor perturbed,
    so its weights id is its own."""
    root = build_backbone(BACKBONE).root
    assert root is not None
    state = root.state_dict()
    state["classifier.1.bias"] = state["classifier.1.bias"] + 0.01
    out = io.BytesIO()
    torch.save(state, out)
    return out.getvalue()


@pytest.fixture(scope="module")
def learned_hash() -> ItqHash:
    """A 48-bit linear hash layer sigmoid(W x + b), as fine-tuning with loss=hash learns one."""
    rng = np.random.default_rng(7)
    return itq_from_linear(rng.normal(size=(48, DIM)), rng.normal(scale=0.01, size=48))


def _register(blobs: BlobStore, weights: bytes, itq: ItqHash | None) -> ModelVersion:
    spec = {"backbone": BACKBONE, "pooling": "gem", "gem_p": GEM_P, "input_size": INPUT_SIZE,
            "loss": "hash" if itq else "triplet", "bits": itq.bits if itq else 0,
            "trained_on": {"dataset": "generated", "images": 8}}
    return ModelRegistry(blobs).register(
        weights, spec, {"best_val_map": 0.5}, curves_png=b"\x89PNG",
        hash_artefact=itq.to_bytes() if itq is not None else None)


def _near_copy(path: Path) -> bytes:
    """The photo a little brighter, re-encoded at a lower JPEG quality."""
    image = ImageEnhance.Brightness(Image.open(path).convert("RGB")).enhance(1.08)
    return encode(image, quality=80)


@pytest.mark.milvus_server
def test_roll_out_under_a_search_loop_serves_the_version_and_its_codes(
    server_client: Any, milvus_server: MilvusServer, embedder: Embedder, demo_dir: Path,
    tuned_weights: bytes, learned_hash: ItqHash, tmp_path: Path,
) -> None:
    """Searches through the alias never fail while the collection moves to a registered
    version; it then serves the version's weights (its spec says so) and the learned hash's
    codes, and hash_rerank finds each near-copy's original first, as float search does."""
    settings = make_settings(tmp_path / "data").model_copy(
        update={"milvus": milvus_server.settings(hash_nlist=4, hash_nprobe=4)})
    blobs = LocalBlobStore(Path(settings.blob_url))
    store = _build(server_client, settings, embedder, blobs, demo_dir)
    before = _all_meta(store)
    ids = sorted(before)
    model = _register(blobs, tuned_weights, learned_hash)
    seen: list[tuple[int, int]] = []

    with SearchLoop(milvus_server.uri, settings.milvus, ids, _vectors(store, ids)) as loop:
        report = roll_out(settings, store, blobs, model.version,
                          progress=lambda done, total: seen.append((done, total)))
        loop.swapped.set()
    assert loop.failures == []
    assert loop.rounds["before"] >= SEARCH_THREADS
    assert loop.self_first_after_swap == [True] * SEARCH_THREADS * AFTER_SWAP
    assert seen[-1] == (24, 24)

    assert (report.swapped, report.reindex.rows, report.reindex.failed) == (True, 24, [])
    assert (report.codes, report.hash_id, report.codes_skipped) == (24, learned_hash.id, "")
    spec = store.stored_spec()
    assert (spec["backbone"], spec["weights"], spec["gem_p"], spec["input_size"]) == (
        BACKBONE, model.weights_id, GEM_P, INPUT_SIZE)
    assert _all_meta(store) == before
    assert report.environment()["LOOKALIKE_MODEL__WEIGHTS"] == report.model.weights
    assert Path(report.model.weights).read_bytes() == tuned_weights
    assert "24/24 images re-indexed" in str(report)
    assert "24 learned hash codes" in str(report)

    # A store opened afresh (as a restarted server does) loads the learned hash by its key.
    assert blobs.exists(hash_key(learned_hash.id))
    reopened = existing_store_from(settings)
    info = reopened.hash_info()
    assert info is not None
    assert (info.encoder_id, info.bits) == (learned_hash.id, 48)
    served = embedder_from(settings.model_copy(update={"model": report.model}))
    assert served.spec.to_dict() == spec
    metas = [before[i] for i in ids]
    queries = np.stack([o.vector for o in served.embed_bytes(
        [_near_copy(Path(m.source)) for m in metas]) if o.vector is not None])
    hashed = reopened.search_ids(queries, 1, params=SearchParams(mode="hash_rerank"))
    exact = reopened.search_ids(queries, 1, params=SearchParams(mode="ann"))
    assert [h[0].id for h in hashed] == [h[0].id for h in exact] == ids


def test_roll_out_on_milvus_lite_skips_the_codes_and_says_so(
    client: Any, embedder: Embedder, tuned_weights: bytes, learned_hash: ItqHash,
    tmp_path: Path,
) -> None:
    """On Milvus Lite the collection moves to the version with float search, the report saying
    the codes were skipped; an unknown version or the one already served is refused."""
    settings = make_settings(tmp_path / "data")
    blobs = LocalBlobStore(Path(settings.blob_url))
    store = _build(client, settings, embedder, blobs, _photos(tmp_path / "photos", range(4)))
    with pytest.raises(ModelNotFound, match="registry holds none"):
        roll_out(settings, store, blobs, "v1")
    model = _register(blobs, tuned_weights, learned_hash)
    report = roll_out(settings, store, blobs, model.version)
    assert (report.swapped, report.reindex.rows, report.codes) == (True, 4, 0)
    assert report.codes_skipped == LITE_SKIPPED
    assert LITE_SKIPPED in str(report)
    assert store.stored_spec()["weights"] == model.weights_id
    assert store.hash_info() is None
    with pytest.raises(ConfigError, match="already holds vectors of this model"):
        roll_out(settings, store, blobs, model.version)


def test_a_hash_that_does_not_fit_is_refused_before_any_copy(
    client: Any, embedder: Embedder, tuned_weights: bytes, tmp_path: Path
) -> None:
    """A version whose hash codes descriptors of another dimension is refused up front."""
    settings = make_settings(tmp_path / "data")
    blobs = LocalBlobStore(Path(settings.blob_url))
    store = _build(client, settings, embedder, blobs, _photos(tmp_path / "photos", range(2)))
    rng = np.random.default_rng(0)
    model = _register(blobs, tuned_weights, itq_from_linear(rng.normal(size=(48, 64)),
                                                            np.zeros(48)))
    with pytest.raises(ConfigError, match="hash codes 64-d descriptors"):
        roll_out(settings, store, blobs, model.version)
    assert client.list_collections() == [store.live_collection()]


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The CLI's settings rooted in a temporary data dir, with the test model."""
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOOKALIKE_MODEL__BACKBONE", "efficientnet_lite0")
    monkeypatch.setenv("LOOKALIKE_MODEL__THREADS", "2")
    return make_settings(tmp_path / "data")


def test_cli_models_and_reindex_to_a_version(
    cli_env: Settings, tuned_weights: bytes, learned_hash: ItqHash, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`lookalike models list|show|delete` and `lookalike reindex --model VERSION`: the served
    version cannot be deleted, another can with --yes only."""
    blobs = blobs_from(cli_env)
    assert cli.main(["models", "list"]) == cli.EXIT_OK
    assert "the model registry is empty" in capsys.readouterr().out
    served = _register(blobs, tuned_weights, learned_hash)
    spare = _register(blobs, tuned_weights[:-1] + bytes([tuned_weights[-1] ^ 1]), None)
    photos = _photos(tmp_path / "photos", range(3))
    assert cli.main(["ingest", str(photos), "--no-progress"]) == cli.EXIT_OK
    capsys.readouterr()

    assert cli.main(["reindex", "--model", "v1", "--weights", "x.pt"]) == cli.EXIT_ERROR
    assert "carries its own weights" in capsys.readouterr().err
    assert cli.main(["reindex", "--model", "v9"]) == cli.EXIT_ERROR
    assert "'v9' not found; known versions: v1, v2" in capsys.readouterr().err
    assert cli.main(["reindex", "--model", "v1"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "re-indexed 3/3 images" in out
    assert f"note: {LITE_SKIPPED}" in out
    assert f"LOOKALIKE_MODEL__BACKBONE={BACKBONE}" in out
    assert "LOOKALIKE_MODEL__WEIGHTS=" in out
    assert f"LOOKALIKE_MODEL__GEM_P={GEM_P:g}" in out
    assert "the previous collection images__" in out

    assert cli.main(["models", "list"]) == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[0] == "v1"
    assert served.weights_id in lines[0]
    assert "hash + 48-bit hash" in lines[0]
    assert "val mAP 0.5000" in lines[0]
    png = tmp_path / "curves.png"
    assert cli.main(["models", "show", "v2", "--curves", str(png)]) == cli.EXIT_OK
    assert '"version": "v2"' in capsys.readouterr().out
    assert png.read_bytes() == b"\x89PNG"

    assert cli.main(["models", "delete", "v1"]) == cli.EXIT_ERROR
    assert "run again with --yes" in capsys.readouterr().err
    assert cli.main(["models", "delete", "v1", "--yes"]) == cli.EXIT_ERROR
    assert f"'images' serves model v1 (weights {served.weights_id})" in capsys.readouterr().err
    assert cli.main(["models", "delete", "v2", "--yes"]) == cli.EXIT_OK
    assert "model v2 deleted" in capsys.readouterr().out
    assert [m.version for m in ModelRegistry(blobs).list()] == ["v1"]
    assert spare.version == "v2"
