"""`lookalike bench search`'s vectors: the shared datasets' real descriptors, PCA-reduced and
grown to a million rows by deterministic perturbations within each category."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lookalike.core.settings import Settings
from lookalike.embedder.local_features import LocalFeatureConfig
from lookalike.evaluation.configs import BASELINE
from lookalike.evaluation.datasets import load_dataset
from lookalike.evaluation.suite import EvalEnv, database_descriptors

F32 = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Corpus:
    """Database and query vectors (unit rows), each row's category, and the PCA-reduced real
    descriptors they were grown from."""

    vectors: F32
    categories: list[str]
    queries: F32
    query_categories: list[str]
    real: F32
    real_categories: list[str]


def real_descriptors(root: Path, settings: Settings) -> tuple[F32, list[str]]:
    """Descriptors of every shared dataset's database images, and `<dataset>/<label>` each."""
    env = EvalEnv(cache_dir=settings.cache_dir, milvus=settings.milvus, local=LocalFeatureConfig(),
                  threads=settings.model.threads, ann=False)
    parts: list[F32] = []
    categories: list[str] = []
    for folder in sorted(p for p in root.iterdir() if (p / "MANIFEST.txt").is_file()):
        dataset = load_dataset(folder)
        x, labels = database_descriptors(dataset, BASELINE, env)
        parts.append(x)
        categories += [f"{dataset.name}/{label or 'none'}" for label in labels]
    if not parts:
        raise SystemExit(f"no datasets (folders with MANIFEST.txt) under {root}")
    return np.concatenate(parts), categories


def pca(x: F32, dim: int) -> F32:
    """`x` projected on its top-`dim` principal directions and renormalised."""
    centred = x.astype(np.float64) - x.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    reduced = centred @ vectors[:, ::-1][:, :dim]
    return normalised(reduced)


def normalised(x: NDArray[Any]) -> F32:
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def grow(base: F32, categories: list[str], n: int, seed: int, sigma: float = 0.35) -> tuple[
        F32, list[str]]:
    """`n` perturbations of `base` rows, each mixed with a row of the same category."""
    rng = np.random.default_rng(seed)
    grouped: dict[str, list[int]] = {}
    for i, c in enumerate(categories):
        grouped.setdefault(c, []).append(i)
    members = {c: np.asarray(v) for c, v in grouped.items()}
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    picked = rng.integers(0, len(base), size=n)
    step = 100_000
    for start in range(0, n, step):
        a = picked[start:start + step]
        b = np.array([rng.choice(members[categories[i]]) for i in a])
        t = rng.uniform(0.0, 0.5, size=(len(a), 1))
        noise = rng.standard_normal((len(a), base.shape[1])) * (sigma / np.sqrt(base.shape[1]))
        out[start:start + len(a)] = normalised((1 - t) * base[a] + t * base[b] + noise)
    return out, [categories[i] for i in picked]


def build_corpus(args: argparse.Namespace, settings: Settings) -> Corpus:
    x, categories = real_descriptors(args.datasets, settings)
    real = pca(x, args.dim)
    vectors, cats = grow(real, categories, args.vectors, seed=1)
    queries, query_cats = grow(real, categories, args.queries, seed=2)
    return Corpus(vectors, cats, queries, query_cats, real, categories)
