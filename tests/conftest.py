"""Shared fixtures: settings rooted in a temporary directory, small images, a real embedder."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.compose import embedder_from
from lookalike.core.settings import ModelSettings, Settings
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.demo import write_demo_images

# The smallest offline backbone keeps the suite fast on two CPU cores.
TEST_MODEL = ModelSettings(backbone="efficientnet_lite0", threads=2, batch_size=16)


def make_settings(data_dir: Path) -> Settings:
    """Settings for tests: everything embedded under `data_dir`."""
    return Settings(data_dir=data_dir, model=TEST_MODEL)


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    """`image` encoded in `fmt`."""
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def gradient_image(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """A small deterministic RGB image that differs per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.uniform(0, 1, size=3)
    arr = np.stack([(x / width + base[0]) % 1, (y / height + base[1]) % 1,
                    ((x + y) / (width + height) + base[2]) % 1], axis=-1)
    return Image.fromarray((arr * 255).astype(np.uint8), mode="RGB")


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """One loaded test embedder for the whole session."""
    model = embedder_from(make_settings(Path("unused")))
    model.load()
    return model


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 24 demo photographs in `<label>/<file>` folders."""
    return write_demo_images(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings rooted in a fresh temporary data dir."""
    return make_settings(tmp_path / "data")
