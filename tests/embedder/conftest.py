"""Fixtures of the embedder tests: backbone weights written locally, never downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def vit_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random vit_b_16 state dict saved to a local file."""
    import torchvision

    path = tmp_path_factory.mktemp("vit") / "vit_b_16.pth"
    torch.save(torchvision.models.get_model("vit_b_16", weights=None).state_dict(), path)
    return path
