"""The retrieval network: backbone -> pool -> L2N (cirtorch's layout), optionally joined by the
backbone's class posterior (the semantic lever), and optionally followed by the backbone's class
logits (for the predicted category of each image)."""

from __future__ import annotations

import torch
from torch import nn

from lookalike.embedder import functional as LF
from lookalike.embedder.backbones import Backbone
from lookalike.embedder.errors import EmbedderError
from lookalike.embedder.layers import L2N, make_pool


class SemanticUnsupported(EmbedderError):
    """The backbone has no classifier on pooled features to give a class posterior or logits."""


def _classes(head: nn.Module, channels: int) -> int:
    with torch.inference_mode():
        return int(head.eval()(torch.zeros(1, channels)).shape[1])


class RetrievalNet(nn.Module):
    """Images N x 3 x H x W -> L2-normalised global descriptors N x D.

    With `semantic_weight` w > 0 the descriptor is l2n([d; w * l2n(sqrt(softmax(logits)))]):
    the pooled descriptor d joined by the backbone's own ImageNet class posterior (its
    Hellinger embedding), computed from the same feature map, so it costs one small matrix
    product. Images the classifier puts in the same classes move closer together.

    With `logits`, the output is N x (dim + classes): the descriptor, then the classifier's
    logits from the same feature map, so the predicted category costs no second pass. The
    descriptor part is unchanged by it.
    """

    def __init__(
        self, backbone: Backbone, pooling: str, gem_p: float, learnable_p: bool = False,
        semantic_weight: float = 0.0, logits: bool = False,
    ) -> None:
        """`learnable_p` lets fine-tuning train GeM's p; inference leaves it frozen."""
        super().__init__()
        self.features = backbone.features
        self.pool = make_pool(pooling, gem_p, learnable_p)
        self.norm = L2N()
        self.semantic_weight = float(semantic_weight)
        self.head: nn.Module | None = None
        self.dim = backbone.channels
        self.classifier: nn.Module | None = None
        self.classes = 0
        if self.semantic_weight > 0 or logits:
            if backbone.head is None:
                raise SemanticUnsupported(
                    f"backbone {backbone.name!r} has no classifier on pooled features, so it "
                    "cannot give the class posterior the semantic lever needs; set "
                    "semantic_weight to 0 or pick another backbone"
                    if self.semantic_weight > 0 else
                    f"backbone {backbone.name!r} has no classifier on pooled features, so it "
                    "cannot predict image categories; partition by label or pick another backbone"
                )
            self.classes = _classes(backbone.head, backbone.channels)
        if self.semantic_weight > 0:
            self.head = backbone.head
            self.dim += self.classes
        if logits:
            self.classifier = backbone.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.features(x)
        out: torch.Tensor = self.norm(self.pool(fmap))
        classifier = self.head if self.head is not None else self.classifier
        if classifier is None:
            return out
        logits = classifier(LF.spoc(fmap)).float()
        if self.head is not None:
            semantic = LF.l2n(torch.softmax(logits, dim=1).sqrt())
            out = self.norm(torch.cat([out, self.semantic_weight * semantic], dim=1))
        if self.classifier is not None:
            # fp32: the logits decide a category, and half precision could tie them.
            out = torch.cat([out.float(), logits], dim=1)
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(features={type(self.features).__name__}, "
            f"pool={self.pool!r}, norm={self.norm!r}, semantic_weight={self.semantic_weight:g}, "
            f"dim={self.dim}, classes={self.classes if self.classifier is not None else 0})"
        )
