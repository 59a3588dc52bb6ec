"""The training run on a labelled folder: split by image, artefacts, held-out comparison, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lookalike.cli import main
from lookalike.core.errors import ConfigError
from lookalike.core.settings import Settings
from lookalike.embedder.backbones import build_backbone
from lookalike.embedder.hashing import ItqHash
from lookalike.embedder.training import TrainConfig
from lookalike.training.data import labelled_images, split_by_image
from lookalike.training.run import TrainOptions, compare_on_heldout, heldout_images, training_images

OPTIONS = TrainOptions(train=TrainConfig(epochs=3, lr=1e-3, batch_size=16, views=2, patience=3),
                       backbone="mobilenet_v2", protocol="half")


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", model={"image_size": 48})


def test_split_is_by_image_deterministic_and_covers_every_class() -> None:
    """The split is seeded, per class, and puts every image on exactly one side."""
    labels = [c for c in "abcd" for _ in range(10)] + ["e"]
    kept, off = split_by_image(labels, 0.3, seed=7)
    assert (kept, off) == split_by_image(labels, 0.3, seed=7)
    assert split_by_image(labels, 0.3, seed=8) != (kept, off)
    assert sorted(kept + off) == list(range(len(labels)))
    assert not set(kept) & set(off)
    for cls in "abcd":
        assert sum(labels[i] == cls for i in off) == 3
    # A class of one image stays on the training side.
    assert len(labels) - 1 in kept
    with pytest.raises(ConfigError, match="fraction"):
        split_by_image(labels, 1.0, seed=0)


def test_protocol_half_trains_and_holds_out_disjoint_halves(labelled_folder: Path) -> None:
    """Protocol half trains on one half of each class and holds out the other, disjoint."""
    dataset = labelled_images(labelled_folder)
    train_half, heldout = training_images(dataset, OPTIONS), heldout_images(dataset, OPTIONS)
    assert len(train_half) == len(heldout) == 32
    assert not set(train_half) & set(heldout)


def test_a_run_writes_its_artefacts_and_compares_on_the_heldout_half(
    labelled_folder: Path, tmp_path: Path
) -> None:
    """weights.pt serves through build_backbone; curves (JSON, PNG), metrics, the learned hash."""
    out = tmp_path / "run"
    report = compare_on_heldout(_settings(tmp_path), labelled_images(labelled_folder), OPTIONS,
                                out_dir=out)
    for name in ("weights.pt", "curves.json", "curves.png", "metrics.json", "hash.npz",
                 "comparison.json"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = json.loads((out / "curves.json").read_text())
    assert curves["epoch"][0] == 0
    assert curves["train_loss"][0] is None
    assert len(curves["val_map"]) == len(curves["epoch"]) >= 2
    served = build_backbone("mobilenet_v2", weights=out / "weights.pt", input_size=48)
    assert served.weights_id == report["finetuned"]["weights_id"]
    assert served.weights_id != build_backbone("mobilenet_v2").weights_id
    itq = ItqHash.from_bytes((out / "hash.npz").read_bytes())
    assert itq.bits == 48
    assert report["hash"]["hash_id"] == itq.id
    assert report["heldout_images"] == 32
    assert report["train_images"] + report["val_images"] == 32
    for model in ("pretrained", "finetuned"):
        assert 0.0 < report[model]["map"] <= 1.0
    hashed = report["hash"]
    assert 0.0 < hashed["hash_rerank_map@k"] <= 1.0
    assert 0.0 < hashed["float_map@k"] <= 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["spec"]["trained_on"]["dataset"] == labelled_folder.name
    assert metrics["spec"]["trained_on"]["split_seed"] == 0
    state = torch.load(out / "weights.pt", weights_only=True)
    assert np.isfinite(state["features.18.0.weight"].numpy()).all()


def test_the_train_command_prints_the_comparison_as_json(
    labelled_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`lookalike train --protocol half --json` prints the held-out comparison."""
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOOKALIKE_MODEL__IMAGE_SIZE", "48")
    code = main(["train", str(labelled_folder), "--backbone", "mobilenet_v2", "--epochs", "1",
                 "--views", "1", "--lr", "1e-3", "--protocol", "half", "--json",
                 "--no-progress", "--out", str(tmp_path / "cli")])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"] == "half"
    assert report["epochs_run"] == 1
    assert report["hash"]["bits"] == 48
    assert (tmp_path / "cli" / "weights.pt").is_file()
