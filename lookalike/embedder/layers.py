"""Thin modules over the pure functions in `functional`."""

from __future__ import annotations

import torch
from torch import nn

from lookalike.embedder import functional as LF


class GeM(nn.Module):
    """Generalised mean pooling with a (optionally learnable) exponent p."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = False) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p, requires_grad=learnable)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return LF.gem(x, p=self.p, eps=self.eps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p.item():.4f}, eps={self.eps})"


class MAC(nn.Module):
    """Global max pooling."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return LF.mac(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SPoC(nn.Module):
    """Global average pooling."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return LF.spoc(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RMAC(nn.Module):
    """Regional maximum activation of convolutions over `levels` scales of regions."""

    def __init__(self, levels: int = 3, eps: float = 1e-6) -> None:
        super().__init__()
        self.levels = levels
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return LF.rmac(x, levels=self.levels, eps=self.eps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(levels={self.levels}, eps={self.eps})"


class L2N(nn.Module):
    """Row-wise L2 normalisation."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return LF.l2n(x, eps=self.eps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps})"


POOLINGS = ("gem", "mac", "spoc", "rmac")


def make_pool(name: str, gem_p: float = 3.0, learnable_p: bool = False) -> nn.Module:
    """The pooling layer called `name` (one of POOLINGS); `gem_p` and `learnable_p` are GeM's."""
    match name:
        case "gem":
            return GeM(p=gem_p, learnable=learnable_p)
        case "mac":
            return MAC()
        case "spoc":
            return SPoC()
        case "rmac":
            return RMAC()
    raise ValueError(f"unknown pooling {name!r}; known: {', '.join(POOLINGS)}")
