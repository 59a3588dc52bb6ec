"""Evaluate configurations of the quality levers on a labelled dataset, from cached descriptors.

Descriptors and local features are computed once per (images, embedding) and cached; each
configuration then re-ranks in memory with the product's functions, and is scored with
P@K, mAP, NDCG@10 and per-class AP. The ANN index's recall@K against exact search is measured
on a real Milvus collection, and query latency with a sample of queries embedded from bytes.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from lookalike.core.errors import LookalikeError
from lookalike.core.metrics import recall_at_k, score_matrix
from lookalike.core.paths import read_exact
from lookalike.core.schemas import ImageMeta, ImageRecord
from lookalike.core.settings import MilvusSettings
from lookalike.core.vector_store import MilvusVectorStore, connect_milvus
from lookalike.embedder.engines import EngineName
from lookalike.embedder.local_features import LocalFeatureConfig, LocalFeatures, features_of
from lookalike.embedder.matching import VerifyPolicy
from lookalike.embedder.runtime import Embedder, EmbedderConfig
from lookalike.evaluation.cache import cache_key, cached_array, cached_features
from lookalike.evaluation.configs import EvalConfig
from lookalike.evaluation.datasets import EvalDataset
from lookalike.evaluation.ranking import Prepared, expand, full_ranking, prepare, verify_rankings
from lookalike.ingestion.model_config import engine_cache

F32 = NDArray[np.float32]
PK_MAX = 50
ANN_K = 100


class EvaluationError(LookalikeError):
    """An evaluation image could not be used."""


@dataclass(frozen=True, slots=True)
class EvalEnv:
    """Where caches live and how the embedder, Milvus and local features are set up.

    `on_embedded`, when set, is called with the number of images each embedded batch held
    (descriptors found in the cache are not embedded, so they are not counted).
    """

    cache_dir: Path
    milvus: MilvusSettings
    local: LocalFeatureConfig
    verify: VerifyPolicy = field(default_factory=VerifyPolicy)
    batch_size: int = 32
    threads: int = 0
    engine: EngineName = "auto"
    decode_px: int = 256
    max_pixels: int = 50_000_000
    ann: bool = True
    ann_queries: int = 500
    latency_queries: int = 0
    progress: bool = True
    on_embedded: Callable[[int], None] | None = None


@dataclass(frozen=True, slots=True)
class ConfigResult:
    """Scores of one configuration on one dataset."""

    config: EvalConfig
    dataset: str
    kind: str
    protocol: str
    images: int
    queries: int
    scores: dict[str, float]
    pk_curve: list[float]
    per_class_ap: dict[str, float]
    recall: dict[str, float]
    latency_ms: dict[str, float]
    embed_images_per_s: float
    rank_seconds: float
    verified: bool
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The foundation's eval keys, plus ndcg@10, the configuration and its measurements."""
        out: dict[str, Any] = {
            "dataset": self.dataset, "kind": self.kind, "protocol": self.protocol,
            "images": self.images, "queries": self.queries,
            **{k: round(v, 4) for k, v in self.scores.items()},
            "backbone": self.config.backbone,
            "ingest_images_per_s": round(self.embed_images_per_s, 2),
            "queries_per_s": round(self.queries / self.rank_seconds, 2) if self.rank_seconds else 0.0,
            "failed_files": 0,
            "config": self.config.name, "levers": self.config.levers(),
            "verified": self.verified,
            **{k: round(v, 4) for k, v in self.recall.items()},
            **{f"latency_{k}": round(v, 2) for k, v in self.latency_ms.items()},
            "per_class_ap": {k: round(v, 4) for k, v in self.per_class_ap.items()},
        }
        if self.kind == "instance":
            out["top1"] = round(self.scores["p@1"], 4)
        return out


@dataclass(frozen=True, slots=True)
class _Layout:
    """The dataset as arrays: database paths, queries (as database rows or external files)."""

    db_paths: list[Path]
    labels: list[str]
    self_index: list[int]
    external_paths: list[Path]
    relevant: NDArray[np.bool_]  # queries x database
    junk: NDArray[np.bool_]  # queries x database: neither right nor wrong, left out


def _layout(dataset: EvalDataset) -> _Layout:
    db_paths = [Path(item.source) for item in dataset.database]
    row_of = {item.source: i for i, item in enumerate(dataset.database)}
    self_index: list[int] = []
    external: list[Path] = []
    relevant = np.zeros((len(dataset.queries), len(db_paths)), dtype=bool)
    junk = np.zeros_like(relevant)
    for q, query in enumerate(dataset.queries):
        source = str(query.path.absolute())
        if query.in_database:
            self_index.append(row_of[source])
        else:
            self_index.append(-1)
            external.append(query.path)
        for r in query.relevant:
            relevant[q, row_of[r]] = True
        for j in query.junk:
            if (row := row_of.get(j)) is not None:
                junk[q, row] = True
    relevant &= ~junk
    return _Layout(db_paths, [item.label for item in dataset.database], self_index, external,
                   relevant, junk)


def without_junk(rankings: NDArray[np.int64], junk: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Each query's ranking with its junk moved to the end (kept in order otherwise): scored
    with junk never relevant, the ranks before it are those of the ranking with the junk
    removed, as the Oxford and Paris protocol scores."""
    is_junk = np.take_along_axis(junk, rankings, axis=1)
    return np.take_along_axis(rankings, np.argsort(is_junk, axis=1, kind="stable"), axis=1)


def _embedder(config: EvalConfig, env: EvalEnv) -> Embedder:
    return Embedder(EmbedderConfig(
        backbone=config.backbone, pooling=config.pooling, gem_p=config.gem_p,
        scales=config.scales, flip=config.flip, semantic_weight=config.semantic_weight,
        batch_size=env.batch_size, threads=env.threads, decode_px=env.decode_px,
        max_pixels=env.max_pixels, engine=env.engine, cache_dir=engine_cache(env.cache_dir),
    ))


def embed_files(embedder: Embedder, paths: Sequence[Path], batch_size: int,
                progress: bool, what: str,
                on_embedded: Callable[[int], None] | None = None) -> F32:
    """Descriptors of image files, in order; decoding overlaps in two threads. `on_embedded`
    is told the size of each batch once it is embedded."""
    out: list[F32] = []

    def load(path: Path) -> Any:
        try:
            return embedder.decode(read_exact(path))
        except Exception as exc:
            raise EvaluationError(f"{path}: {exc}") from exc

    with ThreadPoolExecutor(2) as pool, tqdm(total=len(paths), unit="img", desc=what,
                                             disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            images = list(pool.map(load, paths[start:start + batch_size]))
            out.append(embedder.embed_images(images))
            bar.update(len(images))
            if on_embedded is not None:
                on_embedded(len(images))
    return np.concatenate(out) if out else np.zeros((0, embedder.dim), np.float32)


def _local_features(paths: Sequence[Path], env: EvalEnv) -> list[LocalFeatures]:
    def one(path: Path) -> LocalFeatures:
        return features_of(path.read_bytes(), env.max_pixels, env.local)

    with ThreadPoolExecutor(2) as pool:
        return list(tqdm(pool.map(one, paths), total=len(paths), unit="img", desc="local features",
                         disable=not env.progress))


@dataclass(slots=True)
class _Descriptors:
    database: F32
    external: F32
    images_per_s: float


def _descriptors(config: EvalConfig, layout: _Layout, env: EvalEnv, dataset: str) -> _Descriptors:
    # The engine is part of the key: the two agree to float noise, but the rate kept with the
    # descriptors is the engine's own.
    key = {**config.embed_key(), "engine": env.engine}
    root = env.cache_dir / "eval" / dataset
    timing: dict[str, float] = {}

    def compute(paths: list[Path], what: str) -> F32:
        embedder = _embedder(config, env)
        embedder.load()
        started = time.perf_counter()
        vectors = embed_files(embedder, paths, env.batch_size, env.progress, what,
                              env.on_embedded)
        timing[what] = len(paths) / max(time.perf_counter() - started, 1e-9)
        return vectors

    db_path = root / f"db_{cache_key(key, layout.db_paths)}.npy"
    db = cached_array(db_path, lambda: compute(layout.db_paths, "database"))
    # The rate it was computed at is kept beside it: a cached run still reports it.
    rate_path = db_path.with_suffix(".rate")
    if "database" in timing:
        rate_path.write_text(f"{timing['database']:.4f}")
    elif rate_path.is_file():
        timing["database"] = float(rate_path.read_text())
    ext = (cached_array(root / f"q_{cache_key(key, layout.external_paths)}.npy",
                        lambda: compute(layout.external_paths, "queries"))
           if layout.external_paths else np.zeros((0, db.shape[1]), np.float32))
    return _Descriptors(db, ext, timing.get("database", 0.0))


def _ann_recall(prepared: Prepared, self_index: Sequence[int], env: EvalEnv,
                workdir: Path) -> dict[str, float]:
    """recall@10 and @100 of the configured Milvus index against exact search."""
    db = prepared.database
    n_queries = min(len(self_index), env.ann_queries)
    picks = np.linspace(0, len(self_index) - 1, n_queries).astype(int)
    queries = prepared.queries[picks]
    exclude = [self_index[i] for i in picks]
    k = min(ANN_K, len(db) - 1)
    client = connect_milvus(str(workdir / "ann.db"), env.milvus)
    store = MilvusVectorStore.open(client, "ann", {"eval": "ann", "dim": int(db.shape[1])},
                                   int(db.shape[1]), env.milvus)
    for start in range(0, len(db), 1000):
        store.insert([
            ImageRecord(ImageMeta(id=i + 1, sha256=f"{i:064x}", blob_key="", source=""),
                        db[i]) for i in range(start, min(start + 1000, len(db)))
        ])
    approx = np.zeros((n_queries, k), dtype=np.int64)
    for start in range(0, n_queries, 100):
        hits = store.search_ids(queries[start:start + 100], k + 1)
        for j, row in enumerate(hits):
            ids = [h.id - 1 for h in row if h.id - 1 != exclude[start + j]][:k]
            approx[start + j, :len(ids)] = ids
    exact = full_ranking(queries, db, exclude)[:, :k]
    return {"recall@10": recall_at_k(approx[:, :10], exact[:, :10]),
            "recall@100": recall_at_k(approx, exact)}


def _latency(config: EvalConfig, layout: _Layout, prepared: Prepared, env: EvalEnv,
             db_features: Sequence[LocalFeatures] | None) -> dict[str, float]:
    """Median and 95th-percentile per-query milliseconds with this configuration, the query
    given as image bytes: the dataset's own query photos where it has them (instance sets),
    else database images."""
    embedder = _embedder(config, env)
    embedder.load()
    pool = layout.external_paths or layout.db_paths
    sample = pool[:: max(1, len(pool) // env.latency_queries)][:env.latency_queries]
    parts: dict[str, list[float]] = {"embed_ms": [], "rank_ms": [], "verify_ms": [], "total_ms": []}
    for path in sample[:2]:
        # Warm-up: the first forward passes pay for lazy initialisation, not for the lever.
        embedder.embed_bytes([path.read_bytes()])
    for path in sample:
        data = path.read_bytes()
        t0 = time.perf_counter()
        outcome = embedder.embed_bytes([data])[0]
        assert outcome.vector is not None
        q = outcome.vector[None, :]
        t1 = time.perf_counter()
        if prepared.whitening is not None:
            q = prepared.whitening.apply(q)
        if config.qe_n:
            q = expand(q, prepared.database, [-1], config.qe_n, config.qe_alpha)
        ranking = full_ranking(q, prepared.database, [-1])
        t2 = time.perf_counter()
        if db_features is not None:
            verify_rankings(ranking, q, prepared.database, [-1], config.verify_top_n,
                            [features_of(data, env.max_pixels, env.local)], db_features,
                            env.local, env.verify)
        t3 = time.perf_counter()
        for name, value in (("embed_ms", t1 - t0), ("rank_ms", t2 - t1), ("verify_ms", t3 - t2),
                            ("total_ms", t3 - t0)):
            parts[name].append(value * 1000.0)
    medians = {name: statistics.median(values) for name, values in parts.items() if values}
    tails = {f"{name.removesuffix('_ms')}_p95_ms": float(np.percentile(values, 95))
             for name, values in parts.items() if values and name in ("verify_ms", "total_ms")}
    return {**medians, **tails}


def evaluate_configs(dataset: EvalDataset, configs: Sequence[EvalConfig],
                     env: EvalEnv) -> list[ConfigResult]:
    """One result per configuration, in order."""
    return list(iter_evaluate(dataset, configs, env))


def iter_evaluate(dataset: EvalDataset, configs: Sequence[EvalConfig],
                  env: EvalEnv) -> Iterator[ConfigResult]:
    """One result per configuration, in order, each as soon as it is measured."""
    layout = _layout(dataset)
    n_relevant = layout.relevant.sum(axis=1)
    # Class datasets are not verified (a per-collection switch meant for instance search), but
    # timing a verifying configuration's queries needs the features all the same.
    wants_verify = any(c.verify for c in configs) and (
        dataset.kind == "instance" or env.latency_queries > 0)
    db_features: list[LocalFeatures] | None = None
    q_features: list[LocalFeatures] = []
    if wants_verify:
        local_key = {"local": repr(env.local), "decode": "draft-max-side"}
        root = env.cache_dir / "eval" / dataset.name
        db_features = cached_features(
            root / f"lf_db_{cache_key(local_key, layout.db_paths)}.npz",
            lambda: _local_features(layout.db_paths, env))
        ext_features = (cached_features(
            root / f"lf_q_{cache_key(local_key, layout.external_paths)}.npz",
            lambda: _local_features(layout.external_paths, env))
            if layout.external_paths else [])
        ext_iter = iter(ext_features)
        q_features = [db_features[row] if row >= 0 else next(ext_iter)
                      for row in layout.self_index]
    with tempfile.TemporaryDirectory(prefix="lookalike-ann-") as tmp:
        for n, config in enumerate(configs):
            descriptors = _descriptors(config, layout, env, dataset.name)
            started = time.perf_counter()
            prepared = prepare(config, descriptors.database, descriptors.external, layout.self_index)
            rankings = full_ranking(prepared.queries, prepared.database, layout.self_index)
            verified = bool(config.verify and db_features is not None and dataset.kind == "instance")
            if verified:
                assert db_features is not None
                rankings = verify_rankings(rankings, prepared.queries, prepared.database,
                                           layout.self_index, config.verify_top_n, q_features,
                                           db_features, env.local, env.verify,
                                           progress=env.progress)
            rank_seconds = time.perf_counter() - started
            rankings = without_junk(rankings, layout.junk)
            rel = np.take_along_axis(layout.relevant, rankings, axis=1)
            scores = score_matrix(rel, n_relevant)
            curve_len = min(PK_MAX, rel.shape[1])
            curve = (np.cumsum(rel[:, :curve_len], axis=1) / np.arange(1, curve_len + 1)).mean(0)
            per_class: dict[str, float] = {}
            if dataset.kind == "class":
                labels = np.array([layout.labels[row] for row in layout.self_index])
                per_class = {str(c): float(scores.ap[labels == c].mean()) for c in sorted(set(labels))}
            recall = (_ann_recall(prepared, layout.self_index, env, Path(tmp) / f"c{n}")
                      if env.ann else {})
            latency = (_latency(config, layout, prepared, env,
                                db_features if config.verify else None)
                       if env.latency_queries else {})
            notes = ([] if verified or not config.verify else
                     ["verification applies to instance collections; off for class datasets"])
            yield ConfigResult(
                config=config, dataset=dataset.name, kind=dataset.kind,
                protocol=dataset.protocol, images=len(layout.db_paths), queries=len(layout.self_index),
                scores=scores.mean(), pk_curve=[float(x) for x in curve], per_class_ap=per_class,
                recall=recall, latency_ms=latency, embed_images_per_s=descriptors.images_per_s,
                rank_seconds=rank_seconds, verified=verified, notes=notes,
            )



def database_descriptors(
    dataset: EvalDataset, config: EvalConfig, env: EvalEnv
) -> tuple[F32, list[str]]:
    """The dataset's database descriptors under `config`'s embedding (cached, as evaluation
    caches them) and each image's label."""
    layout = _layout(dataset)
    return _descriptors(config, layout, env, dataset.name).database, layout.labels
