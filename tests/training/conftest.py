"""A generated labelled folder shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.images import write_folder


@pytest.fixture(scope="session")
def labelled_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes x 16 images of 48 px (colour and stripe texture)."""
    return write_folder(tmp_path_factory.mktemp("labelled"), per_class=16)
