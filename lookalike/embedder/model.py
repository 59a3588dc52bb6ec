"""The retrieval network: backbone -> pool -> L2N (cirtorch's layout), optionally joined by the
backbone's class posterior (the semantic lever)."""

from __future__ import annotations

import torch
from torch import nn

from lookalike.embedder import functional as LF
from lookalike.embedder.backbones import Backbone
from lookalike.embedder.errors import EmbedderError
from lookalike.embedder.layers import L2N, make_pool


class SemanticUnsupported(EmbedderError):
    """The backbone has no classifier on pooled features to give a class posterior."""


def _classes(head: nn.Module, channels: int) -> int:
    with torch.inference_mode():
        return int(head.eval()(torch.zeros(1, channels)).shape[1])


class RetrievalNet(nn.Module):
    """Images N x 3 x H x W -> L2-normalised global descriptors N x D.

    With `semantic_weight` w > 0 the descriptor is l2n([d; w * l2n(sqrt(softmax(logits)))]):
    the pooled descriptor d joined by the backbone's own ImageNet class posterior (its
    Hellinger embedding), computed from the same feature map, so it costs one small matrix
    product. Images the classifier puts in the same classes move closer together.
    """

    def __init__(
        self, backbone: Backbone, pooling: str, gem_p: float, learnable_p: bool = False,
        semantic_weight: float = 0.0,
    ) -> None:
        """`learnable_p` lets fine-tuning train GeM's p; inference leaves it frozen."""
        super().__init__()
        self.features = backbone.features
        self.pool = make_pool(pooling, gem_p, learnable_p)
        self.norm = L2N()
        self.semantic_weight = float(semantic_weight)
        self.head: nn.Module | None = None
        self.dim = backbone.channels
        if self.semantic_weight > 0:
            if backbone.head is None:
                raise SemanticUnsupported(
                    f"backbone {backbone.name!r} has no classifier on pooled features, so it "
                    "cannot give the class posterior the semantic lever needs; set "
                    "semantic_weight to 0 or pick another backbone"
                )
            self.head = backbone.head
            self.dim += _classes(backbone.head, backbone.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.features(x)
        out: torch.Tensor = self.norm(self.pool(fmap))
        if self.head is None:
            return out
        posterior = torch.softmax(self.head(LF.spoc(fmap)).float(), dim=1)
        semantic = LF.l2n(posterior.sqrt())
        joined: torch.Tensor = self.norm(torch.cat([out, self.semantic_weight * semantic], dim=1))
        return joined

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(features={type(self.features).__name__}, "
            f"pool={self.pool!r}, norm={self.norm!r}, semantic_weight={self.semantic_weight:g}, "
            f"dim={self.dim})"
        )
