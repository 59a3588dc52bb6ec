"""The evaluation suite on cached descriptors: configurations, metrics, ANN recall, plots, CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from skimage import data

from lookalike.cli import main
from lookalike.core.settings import Settings
from lookalike.embedder.local_features import LocalFeatureConfig
from lookalike.evaluation.configs import BASELINE, ablation, preset
from lookalike.evaluation.datasets import load_dataset
from lookalike.evaluation.plot import plot_pk
from lookalike.evaluation.suite import EvalEnv, evaluate_configs
from tests.conftest import encode

CLASSES = ("microscopy", "objects", "textures")


@pytest.fixture(scope="module")
def class_root(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("classes")
    labels: dict[str, list[str]] = {}
    for cls in CLASSES:
        shutil.copytree(demo_dir / cls, root / "images" / cls)
        labels[cls] = sorted(p.name for p in (root / "images" / cls).iterdir())
    (root / "labels.json").write_text(json.dumps(labels))
    return root


def _env(settings: Settings, **overrides: object) -> EvalEnv:
    env = EvalEnv(cache_dir=settings.cache_dir, milvus=settings.milvus,
                  local=LocalFeatureConfig(), batch_size=16, threads=2, progress=False)
    return replace(env, **overrides)  # type: ignore[arg-type]


def test_configurations_are_scored_from_one_cached_embedding(
    class_root: Path, settings: Settings
) -> None:
    configs = [BASELINE, preset("+dba"), preset("+qe"), preset("+whiten")]
    results = evaluate_configs(load_dataset(class_root), configs, _env(settings))
    assert [r.config.name for r in results] == ["baseline", "+dba", "+qe", "+whiten"]
    cached = list((settings.cache_dir / "eval" / class_root.name).glob("db_*.npy"))
    assert len(cached) == 1  # four configurations, one embedding
    for result in results:
        out = result.as_json()
        for key in ("p@1", "p@5", "p@10", "map", "ndcg@10", "recall@10", "recall@100"):
            assert 0.0 <= out[key] <= 1.0, key
        assert {"dataset", "images", "queries", "backbone", "ingest_images_per_s",
                "queries_per_s", "failed_files", "config", "levers"} <= set(out)
        assert set(out["per_class_ap"]) == set(CLASSES)
        assert len(result.pk_curve) == min(50, result.images)
    # Far above chance (about 1/3) on these photos, and HNSW agrees with exact search here.
    assert results[0].scores["map"] > 0.5
    assert results[0].recall["recall@10"] > 0.9


def test_latency_is_measured_per_lever(class_root: Path, settings: Settings) -> None:
    results = evaluate_configs(load_dataset(class_root), [BASELINE, preset("+qe")],
                               _env(settings, ann=False, latency_queries=3))
    for result in results:
        assert result.latency_ms["total_ms"] >= result.latency_ms["embed_ms"] > 0.0


def test_verification_finds_rotated_and_cropped_copies(
    demo_dir: Path, settings: Settings, tmp_path: Path
) -> None:
    """Instance search: each query is a rotated, cropped, re-encoded copy of one database image;
    verification puts its original first."""
    root = tmp_path / "copies"
    (root / "images").mkdir(parents=True)
    truth: dict[str, list[str]] = {}
    # Photographs with texture: local features need some (a flat graphic has none to match).
    textured = ("chelsea", "page", "text", "logo", "ihc", "coffee", "coins", "astronaut",
                "camera", "rocket")
    for path in sorted(p for p in demo_dir.rglob("*.*") if p.stem in textured):
        shutil.copy(path, root / "images" / path.name)
        with Image.open(path) as im:
            w, h = im.size
            copy = im.convert("RGB").rotate(20, expand=True).crop((w // 8, h // 8, w, h))
        name = f"copy_{path.stem}.jpg"
        (root / "images" / name).write_bytes(encode(copy, "JPEG", quality=80))
        truth[name] = [path.name]
    (root / "groundtruth.json").write_text(json.dumps(truth))
    dataset = load_dataset(root)
    results = evaluate_configs(dataset, [BASELINE, preset("+verify")], _env(settings, ann=False))
    assert results[1].verified
    assert results[1].as_json()["top1"] == 1.0
    assert results[1].scores["map"] >= results[0].scores["map"]


def test_verification_never_returns_a_stored_query_itself(
    demo_dir: Path, settings: Settings, tmp_path: Path
) -> None:
    """All-vs-all instance search (every image a stored query): verification re-orders the
    other candidates; the query's own row, which would verify perfectly, is never one."""
    root = tmp_path / "pairs"
    (root / "images").mkdir(parents=True)
    truth: dict[str, list[str]] = {}
    for path in sorted(p for p in demo_dir.rglob("*.*") if p.stem in ("chelsea", "text", "coins")):
        with Image.open(path) as im:
            (root / "images" / f"{path.stem}.png").write_bytes(encode(im.convert("RGB"), "PNG"))
            copy = im.convert("RGB").rotate(10, expand=True)
            (root / "images" / f"{path.stem}_r.png").write_bytes(encode(copy, "PNG"))
        truth[f"{path.stem}.png"] = [f"{path.stem}_r.png"]
        truth[f"{path.stem}_r.png"] = [f"{path.stem}.png"]
    (root / "groundtruth.json").write_text(json.dumps(truth))
    result = evaluate_configs(load_dataset(root), [preset("+verify", "instance")],
                              _env(settings, ann=False))[0]
    assert result.verified
    assert result.scores["p@1"] == 1.0


def test_plot_and_cli(class_root: Path, settings: Settings, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("LOOKALIKE_MODEL__THREADS", "2")
    plot = tmp_path / "pk.png"
    assert main(["eval", str(class_root), "--config", "baseline", "+dba", "--json", "--no-ann",
                 "--no-progress", "--plot", str(plot)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["config"] for r in rows] == ["baseline", "+dba"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["eval", str(class_root), "--config", "nonsense"]) != 0


def test_ablation_turns_each_lever_on_and_off() -> None:
    names = [c.name for c in ablation()]
    assert names[0] == "baseline"
    assert "best" in names
    assert {"+tta", "+whiten", "+dba", "+qe", "+verify", "+rmac", "+ensemble"} <= set(names)
    assert {"best-ensemble", "best-dba", "best-qe"} <= set(names)
    assert preset("best").backbone == preset("+ensemble").backbone
    assert preset("best-ensemble").backbone == BASELINE.backbone


def test_plot_writes_png(class_root: Path, settings: Settings, tmp_path: Path) -> None:
    results = evaluate_configs(load_dataset(class_root), [BASELINE], _env(settings, ann=False))
    path = plot_pk(results, tmp_path / "sub" / "p.png", "t")
    assert path.stat().st_size > 1000


def _photo(name: str) -> Image.Image:
    """A photograph scikit-image ships."""
    return Image.fromarray(getattr(data, name)())


def _noisy(base: NDArray[np.float32], sigma: float, seed: int) -> Image.Image:
    """`base` with Gaussian noise of `sigma` grey levels (0: the image itself)."""
    noise = np.random.default_rng(seed).normal(0.0, sigma, base.shape) if sigma else 0.0
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _instance_set_with_distractors_and_junk(root: Path, junk: bool) -> Path:
    """Two queries apart from the database. q1 (a photograph) has two relevant near-copies, r1
    (light noise) and r2 (heavy noise), a distractor between them in similarity, d1, and an
    exact copy, `same`, that junk.json (when written) ignores for it; q2 (another photograph)
    has one light near-copy, r3. Three unrelated photographs are further distractors."""
    images = root / "images"
    images.mkdir(parents=True)
    astronaut = np.asarray(_photo("astronaut").resize((256, 256)), np.float32)
    coffee = np.asarray(_photo("coffee").resize((300, 200)), np.float32)
    files = {"q1.png": _noisy(astronaut, 0, 0), "same.png": _noisy(astronaut, 0, 0),
             "r1.png": _noisy(astronaut, 15, 1), "d1.png": _noisy(astronaut, 40, 2),
             "r2.png": _noisy(astronaut, 80, 3), "q2.png": _noisy(coffee, 0, 0),
             "r3.png": _noisy(coffee, 15, 4)}
    for name in ("chelsea", "rocket", "immunohistochemistry"):
        files[f"{name}.png"] = _photo(name)
    for name, image in files.items():
        (images / name).write_bytes(encode(image, "PNG"))
    (root / "groundtruth.json").write_text(json.dumps(
        {"q1.png": ["r1.png", "r2.png"], "q2.png": ["r3.png"]}))
    if junk:
        (root / "junk.json").write_text(json.dumps({"q1.png": ["same.png"]}))
    return root


@pytest.mark.parametrize(("junk", "expected_map", "expected_p1"), [
    # q1 ranks same, r1, d1, r2, then the rest; junk removed: r1 at 1, r2 at 3 ->
    # AP (1/1 + 2/3) / 2 = 5/6; q2 ranks r3 first -> AP 1. mAP 11/12.
    (True, 11 / 12, 1.0),
    # Without junk.json the copy counts as wrong: r1 at 2, r2 at 4 -> AP (1/2 + 2/4) / 2 =
    # 1/2; mAP 3/4, and q1's first answer is wrong.
    (False, 3 / 4, 0.5),
])
def test_instance_sets_keep_their_distractors_and_honour_junk(
    settings: Settings, tmp_path: Path, junk: bool, expected_map: float, expected_p1: float
) -> None:
    """Every image under images/ is in the database (the distractors too, the queries taken
    apart not), junk is removed from a query's ranking before scoring, and the mAP is the one
    worked out by hand; the protocol says what ran."""
    dataset = load_dataset(_instance_set_with_distractors_and_junk(tmp_path / "set", junk))
    assert sorted(Path(item.source).name for item in dataset.database) == [
        "chelsea.png", "d1.png", "immunohistochemistry.png", "r1.png", "r2.png", "r3.png",
        "rocket.png", "same.png"]
    assert [q.in_database for q in dataset.queries] == [False, False]
    assert "5 distractors" in dataset.protocol
    assert "2 of them taken apart" in dataset.protocol
    assert "8 images" in dataset.protocol
    assert ("junk answers removed" if junk else "no junk.json") in dataset.protocol
    result = evaluate_configs(dataset, [BASELINE], _env(settings, ann=False))[0]
    assert result.scores["map"] == pytest.approx(expected_map, abs=1e-6)
    assert result.scores["p@1"] == pytest.approx(expected_p1)
    assert result.as_json()["protocol"] == dataset.protocol
