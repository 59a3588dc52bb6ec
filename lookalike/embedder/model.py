"""The retrieval network: backbone -> pool -> L2N (cirtorch's layout)."""

from __future__ import annotations

import torch
from torch import nn

from lookalike.embedder.backbones import Backbone
from lookalike.embedder.layers import L2N, make_pool


class RetrievalNet(nn.Module):
    """Images N x 3 x H x W -> L2-normalised global descriptors N x D."""

    def __init__(self, backbone: Backbone, pooling: str, gem_p: float) -> None:
        super().__init__()
        self.features = backbone.features
        self.pool = make_pool(pooling, gem_p)
        self.norm = L2N()
        self.dim = backbone.channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.norm(self.pool(self.features(x)))
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(features={type(self.features).__name__}, "
            f"pool={self.pool!r}, norm={self.norm!r}, dim={self.dim})"
        )
