"""Evaluation through the real pipeline and gRPC search path, on small generated datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from lookalike.app.compose import blobs_from, pipeline_from, store_from
from lookalike.core.errors import ConfigError
from lookalike.core.settings import Settings
from lookalike.embedder.runtime import Embedder
from lookalike.evaluation.datasets import load_dataset
from lookalike.evaluation.runner import eval_collection_name, evaluate
from tests.conftest import encode


def _run(dataset_dir: Path, settings: Settings, embedder: Embedder) -> dict[str, object]:
    dataset = load_dataset(dataset_dir)
    store = store_from(settings, embedder, eval_collection_name(dataset.name,
                                                                embedder.spec.to_dict()))
    blobs = blobs_from(settings)
    pipeline = pipeline_from(settings, embedder, store, blobs)
    return evaluate(dataset, embedder, store, blobs, pipeline, progress=False).as_json()


def test_instance_layout_finds_reencoded_copies(
    demo_dir: Path, settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    """Queries outside the database (re-encoded copies) find their original first."""
    root = tmp_path / "copies"
    (root / "images").mkdir(parents=True)
    truth: dict[str, list[str]] = {}
    for path in sorted(demo_dir.rglob("*.png"))[:8]:
        shutil.copy(path, root / "images" / path.name)
        copy = f"copy_{path.stem}.jpg"
        with Image.open(path) as im:
            (root / "images" / copy).write_bytes(encode(im.convert("RGB"), "JPEG", quality=70))
        truth[copy] = [path.name]
    (root / "groundtruth.json").write_text(json.dumps(truth))
    out = _run(root, settings, embedder)
    assert out["dataset"] == "copies"
    assert out["images"] == 8
    assert out["queries"] == 8
    assert out["top1"] == 1.0
    assert out["map"] == 1.0


def test_class_layout_scores_every_image_against_the_others(
    demo_dir: Path, settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    """Class layout: every image is a query; the JSON has the keys make eval reads."""
    root = tmp_path / "classes"
    labels: dict[str, list[str]] = {}
    for cls in ("microscopy", "objects", "textures"):
        shutil.copytree(demo_dir / cls, root / "images" / cls)
        labels[cls] = sorted(p.name for p in (root / "images" / cls).iterdir())
    (root / "labels.json").write_text(json.dumps(labels))
    out = _run(root, settings, embedder)
    n = sum(len(v) for v in labels.values())
    assert out["images"] == n
    assert out["queries"] == n
    assert {"dataset", "images", "p@1", "p@5", "p@10", "map"} <= set(out)
    for key in ("p@1", "p@5", "p@10", "map"):
        assert 0.0 <= float(out[key]) <= 1.0  # type: ignore[arg-type]
    # Chance AP here is about 1/3; a working descriptor does far better on these photos.
    assert float(out["map"]) > 0.5  # type: ignore[arg-type]


def test_a_folder_without_ground_truth_is_refused(tmp_path: Path) -> None:
    """A folder with neither labels.json nor groundtruth.json is a clear error."""
    with pytest.raises(ConfigError, match="not an evaluation dataset"):
        load_dataset(tmp_path)
