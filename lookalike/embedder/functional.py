"""Pure tensor functions: pooling and normalisation of N x C x H x W feature maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l2n(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Rows of N x D `x` scaled to unit L2 norm."""
    norm: torch.Tensor = torch.linalg.vector_norm(x, ord=2, dim=-1, keepdim=True)
    return x / (norm + eps)


def mac(x: torch.Tensor) -> torch.Tensor:
    """Maximum activation of convolutions: N x C x H x W -> N x C."""
    return torch.amax(x, dim=(-2, -1))


def spoc(x: torch.Tensor) -> torch.Tensor:
    """Sum-pooled (average) convolutional features: N x C x H x W -> N x C."""
    return torch.mean(x, dim=(-2, -1))


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean pooling (Radenović et al.): N x C x H x W -> N x C.

    p = 1 is average pooling and p -> inf tends to max pooling.
    """
    pooled = F.avg_pool2d(x.clamp(min=eps).pow(p), (x.size(-2), x.size(-1)))
    return pooled.pow(1.0 / p).flatten(1)
