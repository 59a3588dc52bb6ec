"""Fine-tune on a labelled folder, write the artefacts, and compare with the pretrained model.

`train_model` trains on a deterministic split by image and writes `weights.pt` (the root
model's state dict: `build_backbone(name, weights=...)` serves it), `curves.json`,
`curves.png`, `metrics.json` and, for the hash loss, `hash.npz` (the learned latent layer as an
ItqHash artefact). `compare_on_heldout` is the issue's protocol: train on half of each class,
then each held-out image queries the held-out half; pretrained and fine-tuned models are scored
in the same run, through the same serving path (`Embedder` with the weights file).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from lookalike.core.errors import ConfigError
from lookalike.core.metrics import score_matrix
from lookalike.core.paths import read_exact
from lookalike.core.settings import Settings
from lookalike.embedder.backbones import build_backbone
from lookalike.embedder.hashing import ItqHash, hamming_distances, itq_from_linear
from lookalike.embedder.runtime import Embedder, EmbedderConfig
from lookalike.embedder.training import EpochLog, TrainConfig, train
from lookalike.ingestion.model_config import engine_cache
from lookalike.training.curves import write_curves
from lookalike.training.data import LabelledImages, load_images, split_by_image

PROTOCOLS = ("all", "half")
# Hash re-rank scoring: the top K by Hamming distance x this factor are re-scored in float,
# and both rankings are scored to rank K (as in docs/BENCHMARKS.md: Hamming top 300, mAP@100).
RERANK_K = 100
RERANK_FACTOR = 3


@dataclass(frozen=True, slots=True)
class TrainOptions:
    """What `lookalike train` may choose: how to fine-tune (`train`; its input size comes from
    the backbone), the validation share, the protocol, and the model to start from (empty
    backbone / None weights: the settings' model). `train.seed` also seeds the splits."""

    train: TrainConfig = field(default_factory=TrainConfig)
    val_fraction: float = 0.2
    backbone: str = ""
    weights: Path | None = None
    protocol: str = "all"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {self.protocol!r}; known: {', '.join(PROTOCOLS)}")


@dataclass(slots=True)
class TrainOutcome:
    """What a run wrote and measured."""

    out_dir: Path
    weights_path: Path
    spec: dict[str, Any]
    metrics: dict[str, Any]
    history: list[EpochLog]
    hash: ItqHash | None
    seconds: float
    cancelled: bool = False
    files: dict[str, Path] = field(default_factory=dict)


def _backbone_of(settings: Settings, options: TrainOptions) -> tuple[str, Path | None]:
    if options.backbone:
        return options.backbone, options.weights
    weights = options.weights or (Path(settings.model.weights) if settings.model.weights else None)
    return settings.model.backbone, weights


def training_images(dataset: LabelledImages, options: TrainOptions) -> list[int]:
    """The images a run trains on: all, or for protocol half the first half of each class."""
    everything = list(range(len(dataset.paths)))
    if options.protocol == "all":
        return everything
    return split_by_image(dataset.labels, 0.5, options.train.seed)[0]


def heldout_images(dataset: LabelledImages, options: TrainOptions) -> list[int]:
    """The other half of each class under protocol half (never trained or validated on)."""
    return split_by_image(dataset.labels, 0.5, options.train.seed)[1]


def class_scores(x: NDArray[np.float32], labels: NDArray[np.int64]) -> dict[str, float]:
    """mAP and P@10 of every image querying all the others (cosine similarity), over images
    whose class has another image."""
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :-1]
    relevant = labels[order] == labels[:, None]
    n_rel = relevant.sum(axis=1)
    keep = n_rel > 0
    if not keep.any():
        raise ConfigError("no class has two images: nothing to score")
    scores = score_matrix(relevant[keep], n_rel[keep])
    return {"map": float(scores.ap.mean()), "p@10": float(scores.p_at_10.mean()),
            "queries": float(keep.sum())}


def val_map(x: NDArray[np.float32], labels: NDArray[np.int64]) -> float:
    """Validation mAP (each validation image queries the others), for early stopping."""
    return class_scores(x, labels)["map"]


def _map_at_k(order: NDArray[np.int64], labels: NDArray[np.int64], k: int) -> float:
    """mAP@k of rankings (row i: image indices, self excluded), AP normalised by
    min(relevant, k)."""
    relevant = labels[order[:, :k]] == labels[:, None]
    counts = np.bincount(labels)[labels] - 1
    keep = counts > 0
    ranks = np.arange(1, relevant.shape[1] + 1)
    hits = np.cumsum(relevant, axis=1)
    ap = (np.where(relevant, hits / ranks, 0.0)).sum(axis=1) / np.minimum(np.maximum(counts, 1), k)
    return float(ap[keep].mean())


def hash_scores(
    x: NDArray[np.float32], labels: NDArray[np.int64], itq: ItqHash,
    k: int = RERANK_K, factor: int = RERANK_FACTOR,
) -> dict[str, float]:
    """mAP@k of float search, of Hamming search alone, and of Hamming top k x factor re-scored
    in float (hash_rerank), each image querying all the others."""
    n = len(x)
    k = min(k, n - 1)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    float_order = np.argsort(-sims, axis=1, kind="stable")[:, :-1]
    distances = hamming_distances(itq.encode(x), itq.encode(x)).astype(np.float64)
    np.fill_diagonal(distances, np.inf)
    hamming_order = np.argsort(distances, axis=1, kind="stable")[:, :-1]
    candidates = hamming_order[:, :k * factor]
    rescored = np.take_along_axis(sims, candidates, axis=1)
    rerank_order = np.take_along_axis(candidates, np.argsort(-rescored, axis=1, kind="stable"), axis=1)
    return {
        "k": float(k), "candidates": float(min(k * factor, n - 1)),
        "float_map@k": _map_at_k(float_order, labels, k),
        "hamming_map@k": _map_at_k(hamming_order, labels, k),
        "hash_rerank_map@k": _map_at_k(rerank_order, labels, k),
    }


def _embedder(settings: Settings, backbone: str, weights: Path | None, gem_p: float) -> Embedder:
    model = settings.model
    return Embedder(EmbedderConfig(
        backbone=backbone, weights=weights, input_size=model.image_size, pooling="gem", gem_p=gem_p,
        batch_size=model.batch_size, device="cpu", threads=model.threads,
        max_pixels=model.max_pixels, decode_px=model.decode_px, engine=model.engine,
        cache_dir=engine_cache(settings.cache_dir),
    ))


def train_model(
    settings: Settings,
    dataset: LabelledImages,
    options: TrainOptions,
    *,
    out_dir: Path,
    on_epoch: Callable[[EpochLog], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> TrainOutcome:
    """Fine-tune on `dataset` (see the module docstring) and write the artefacts to `out_dir`."""
    started = time.perf_counter()
    name, weights = _backbone_of(settings, options)
    pool = training_images(dataset, options)
    labels_in_pool = [dataset.labels[i] for i in pool]
    kept, val = split_by_image(labels_in_pool, options.val_fraction, options.train.seed)
    train_idx, val_idx = [pool[i] for i in kept], [pool[i] for i in val]
    if len(val_idx) < 2:
        raise ConfigError(f"{dataset.name}: too few images for a validation split "
                          f"({len(val_idx)}); each class needs at least 2 images")
    if settings.model.threads:
        torch.set_num_threads(settings.model.threads)
    backbone = build_backbone(name, weights, settings.model.image_size)
    config = replace(options.train, input_size=backbone.input_size)
    decode_px = max(settings.model.decode_px, backbone.input_size) if settings.model.decode_px else 0
    max_pixels = settings.model.max_pixels
    result = train(
        backbone, settings.model.gem_p,
        load_images([dataset.paths[i] for i in train_idx], max_pixels, decode_px),
        dataset.class_indices(train_idx).tolist(),
        load_images([dataset.paths[i] for i in val_idx], max_pixels, decode_px),
        dataset.class_indices(val_idx).tolist(),
        config, val_map=val_map, on_epoch=on_epoch, cancelled=cancelled,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / "weights.pt"
    torch.save(result.root_state, weights_path)
    trained = build_backbone(name, weights_path, settings.model.image_size)
    itq = None
    files = {"weights": weights_path, "curves_json": out_dir / "curves.json",
             "curves_png": out_dir / "curves.png", "metrics": out_dir / "metrics.json"}
    if result.hash_weight is not None and result.hash_bias is not None:
        itq = itq_from_linear(result.hash_weight, result.hash_bias)
        files["hash"] = out_dir / "hash.npz"
        files["hash"].write_bytes(itq.to_bytes())
    write_curves(result.history, files["curves_json"], files["curves_png"],
                 f"{name} {options.train.loss} on {dataset.name}")
    seconds = time.perf_counter() - started
    spec: dict[str, Any] = {
        "backbone": name, "weights_id": trained.weights_id,
        "base_weights_id": backbone.weights_id, "pooling": "gem",
        "gem_p": result.gem_p, "input_size": backbone.input_size, "loss": options.train.loss,
        "bits": options.train.bits if itq is not None else 0, "hash_id": itq.id if itq else "",
        "trained_on": {
            "dataset": dataset.name, "path": str(dataset.root), "classes": dataset.classes,
            "images": len(train_idx), "val_images": len(val_idx), "protocol": options.protocol,
            "split_seed": options.train.seed, "val_fraction": options.val_fraction,
        },
    }
    metrics: dict[str, Any] = {
        "initial_val_map": result.initial_val_map, "best_val_map": result.best_val_map,
        "best_epoch": result.best_epoch, "epochs_run": len(result.history) - 1,
        "stopped_early": result.stopped_early, "cancelled": result.cancelled,
        "training_seconds": round(seconds, 1),
    }
    files["metrics"].write_text(json.dumps({"spec": spec, "metrics": metrics}, indent=2) + "\n")
    return TrainOutcome(out_dir, weights_path, spec, metrics, result.history, itq, seconds,
                        cancelled=result.cancelled, files=files)


def _embed(embedder: Embedder, paths: Sequence[Path]) -> NDArray[np.float32]:
    outcomes = embedder.embed_bytes([read_exact(p) for p in paths])
    bad = [str(p) for p, o in zip(paths, outcomes, strict=True) if o.vector is None]
    if bad:
        raise ConfigError(f"{len(bad)} held-out images could not be embedded, e.g. {bad[0]}")
    return np.stack([o.vector for o in outcomes if o.vector is not None])


def compare_on_heldout(
    settings: Settings,
    dataset: LabelledImages,
    options: TrainOptions,
    outcome: TrainOutcome | None = None,
    *,
    out_dir: Path | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """The issue's protocol (train on half of each class; each held-out image queries the
    held-out half): mAP and P@10 of the pretrained and the fine-tuned model, and for the hash
    loss mAP@k of the learned codes with float re-rank next to float mAP@k. Trains first (into
    `out_dir`) when no outcome of a protocol-half run is given."""
    if options.protocol != "half":
        options = replace(options, protocol="half")
    if outcome is None:
        if out_dir is None:
            raise ConfigError("compare_on_heldout needs an outcome or an out_dir to train into")
        outcome = train_model(settings, dataset, options, out_dir=out_dir,
                              on_epoch=on_epoch, cancelled=cancelled)
    heldout = heldout_images(dataset, options)
    paths = [dataset.paths[i] for i in heldout]
    labels = dataset.class_indices(heldout)
    name, weights = _backbone_of(settings, options)
    started = time.perf_counter()
    pretrained_x = _embed(_embedder(settings, name, weights, settings.model.gem_p), paths)
    tuned_x = _embed(_embedder(settings, name, outcome.weights_path, outcome.spec["gem_p"]), paths)
    pretrained = class_scores(pretrained_x, labels)
    tuned = class_scores(tuned_x, labels)
    report: dict[str, Any] = {
        "dataset": dataset.name, "protocol": "half", "backbone": name, "loss": options.train.loss,
        "train_images": outcome.spec["trained_on"]["images"],
        "val_images": outcome.spec["trained_on"]["val_images"], "heldout_images": len(heldout),
        "pretrained": {"map": pretrained["map"], "p@10": pretrained["p@10"],
                       "gem_p": settings.model.gem_p},
        "finetuned": {"map": tuned["map"], "p@10": tuned["p@10"], "gem_p": outcome.spec["gem_p"],
                      "weights_id": outcome.spec["weights_id"]},
        "delta_map": tuned["map"] - pretrained["map"],
        "epochs_run": outcome.metrics["epochs_run"], "best_epoch": outcome.metrics["best_epoch"],
        "training_seconds": round(outcome.seconds, 1),
        "evaluation_seconds": round(time.perf_counter() - started, 1),
        "out_dir": str(outcome.out_dir),
    }
    if outcome.hash is not None:
        scores = hash_scores(tuned_x, labels, outcome.hash)
        report["hash"] = {"bits": outcome.hash.bits, "hash_id": outcome.hash.id, **scores,
                          "gap": scores["float_map@k"] - scores["hash_rerank_map@k"]}
    (outcome.out_dir / "comparison.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
