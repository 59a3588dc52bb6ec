"""Fine-tuning: a tiny run improves its validation mAP, is deterministic, freezes the input side,
can be cancelled, and its weights file serves through build_backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from lookalike.embedder.backbones import build_backbone
from lookalike.embedder.hashing import itq_from_linear
from lookalike.embedder.training import (
    EpochLog,
    TrainConfig,
    TrainingError,
    TrainResult,
    _stages,
    batch_hard_triplet,
    train,
)
from tests.training.images import make_images

SIZE = 48


def _val_map(x: NDArray[np.float32], labels: NDArray[np.int64]) -> float:
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :-1]
    rel = labels[order] == labels[:, None]
    hits = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    return float(((hits * rel).sum(axis=1) / rel.sum(axis=1)).mean())


def _run(config: TrainConfig, **kwargs: object) -> tuple[TrainResult, torch.nn.Module]:
    train_x, train_y = make_images(10, SIZE, seed=0)
    val_x, val_y = make_images(4, SIZE, seed=1)
    backbone = build_backbone("mobilenet_v2", input_size=SIZE)
    result = train(backbone, 1.0, train_x, train_y, val_x, val_y, config, val_map=_val_map,
                   **kwargs)  # type: ignore[arg-type]
    assert backbone.root is not None
    return result, backbone.root


FAST = TrainConfig(epochs=4, batch_size=16, lr=1e-3, views=2, input_size=SIZE, patience=4)


def test_a_tiny_hash_run_improves_its_validation_map() -> None:
    """The issue's test: a tiny run on generated images finishes and beats its starting point."""
    logs: list[EpochLog] = []
    result, _ = _run(FAST, on_epoch=logs.append)
    assert logs == result.history
    assert [log.epoch for log in result.history] == list(range(5))
    assert result.best_epoch >= 1
    assert result.best_val_map > result.initial_val_map
    assert result.best_val_map == max(log.val_map for log in result.history[1:])
    assert result.hash_weight is not None
    assert result.hash_bias is not None
    assert result.hash_weight.shape == (48, 1280)
    assert result.hash_bias.shape == (48,)
    assert itq_from_linear(result.hash_weight, result.hash_bias).bits == 48
    assert result.gem_p >= 1.0
    assert not result.cancelled


def test_training_is_deterministic_for_a_seed() -> None:
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-3, views=1, input_size=SIZE)
    a, _ = _run(config)
    b, _ = _run(config)
    assert a.history[0].val_map == b.history[0].val_map
    assert [(h.train_loss, h.val_map) for h in a.history[1:]] == [
        (h.train_loss, h.val_map) for h in b.history[1:]
    ]
    assert all(torch.equal(a.root_state[k], b.root_state[k]) for k in a.root_state)
    assert a.hash_weight is not None
    assert b.hash_weight is not None
    assert np.array_equal(a.hash_weight, b.hash_weight)


def test_early_layers_stay_frozen_and_late_ones_train() -> None:
    result, _ = _run(TrainConfig(epochs=1, batch_size=16, lr=1e-3, views=1, input_size=SIZE))
    before = build_backbone("mobilenet_v2").root
    assert before is not None
    original = before.state_dict()
    first = "features.0.0.weight"
    last = "features.18.0.weight"
    assert torch.equal(result.root_state[first], original[first])
    assert not torch.equal(result.root_state[last], original[last])
    # The ImageNet classifier is not part of retrieval and is left as it was.
    assert torch.equal(result.root_state["classifier.1.weight"], original["classifier.1.weight"])


@pytest.mark.parametrize("loss", ["triplet", "arcface"])
def test_metric_learning_losses_train_without_a_hash_layer(loss: str) -> None:
    result, _ = _run(TrainConfig(loss=loss, epochs=1, batch_size=16, lr=1e-3, views=0,
                                 input_size=SIZE))
    assert result.best_epoch == 1
    assert result.hash_weight is None
    assert result.hash_bias is None
    assert np.isfinite(result.history[1].train_loss)


def test_cancel_stops_the_run_and_keeps_the_best_weights() -> None:
    logs: list[EpochLog] = []
    result, _ = _run(TrainConfig(epochs=50, batch_size=16, lr=1e-3, views=1, input_size=SIZE),
                     on_epoch=logs.append, cancelled=lambda: len(logs) >= 2)
    assert result.cancelled
    assert len(result.history) == 2
    assert result.best_epoch == 1


def test_the_weights_file_serves_the_trained_network(tmp_path: Path) -> None:
    """Saved root state -> build_backbone(weights=file): a new weights id, the trained features."""
    result, root = _run(TrainConfig(epochs=1, batch_size=16, lr=1e-3, views=1, input_size=SIZE))
    path = tmp_path / "weights.pt"
    torch.save(result.root_state, path)
    served = build_backbone("mobilenet_v2", weights=path, input_size=SIZE)
    pretrained = build_backbone("mobilenet_v2", input_size=SIZE)
    assert served.weights_id.startswith("sha256:")
    assert served.weights_id != pretrained.weights_id
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.inference_mode():
        trained_features = root.eval().features(x)  # type: ignore[operator]
        assert torch.allclose(served.features.eval()(x), trained_features, atol=1e-5)
        assert not torch.allclose(pretrained.features.eval()(x), trained_features, atol=1e-3)


def test_efficientnet_lite_stages_compose_to_its_features() -> None:
    """The per-block split the feature cache relies on computes exactly extract_features."""
    backbone = build_backbone("efficientnet_lite0", input_size=64)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        out = x
        for stage in _stages(backbone.features.eval()):
            out = stage(out)
        assert torch.equal(out, backbone.features(x))


def test_batch_hard_triplet_is_zero_when_classes_are_far_apart() -> None:
    d = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert batch_hard_triplet(d, labels, 0.2).item() == 0.0
    assert batch_hard_triplet(d, torch.tensor([0, 1, 0, 1]), 0.2).item() > 0.0


def test_bad_configs_and_inputs_are_refused() -> None:
    with pytest.raises(TrainingError, match="unknown loss"):
        TrainConfig(loss="contrastive")
    with pytest.raises(TrainingError, match="freeze"):
        TrainConfig(freeze=1.5)
    backbone = build_backbone("mobilenet_v2", input_size=SIZE)
    images, labels = make_images(2, SIZE)
    with pytest.raises(TrainingError, match="one label per image"):
        train(backbone, 1.0, images, labels[:-1], images, labels, FAST, val_map=_val_map)
