"""Pure tensor functions: pooling and normalisation of N x C x H x W feature maps."""

from __future__ import annotations

import math

import torch

# R-MAC's regions overlap their neighbours by about this fraction (Tolias et al. 2016).
_RMAC_OVERLAP = 0.4
# Candidate numbers of regions along the long side of an oblong map at the coarsest level.
_RMAC_STEPS = (2, 3, 4, 5, 6, 7)


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
    # A mean over the spatial dimensions rather than avg_pool2d with the map's size as kernel:
    # the same numbers, and an exported graph keeps its input size free.
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def rmac_regions(height: int, width: int, levels: int = 3) -> list[tuple[int, int, int, int]]:
    """R-MAC's regions (top, left, height, width) on a height x width map, as cirtorch's `rmac`.

    The whole map first, then at level l = 1..levels squares of side floor(2 min(H, W) / (l + 1)),
    l per side (plus extra ones along the long side of an oblong map), spread evenly so that
    neighbours overlap by about 40%. Every region lies inside the map.
    """
    short = min(height, width)
    extra = _extra_regions(max(height, width), short) if height != width else 0
    extra_h, extra_w = (extra, 0) if height > width else (0, extra)
    regions = [(0, 0, height, width)]
    for level in range(1, levels + 1):
        side = math.floor(2 * short / (level + 1))
        if side == 0:
            continue
        tops = _region_starts(height, side, level + extra_h)
        lefts = _region_starts(width, side, level + extra_w)
        regions += [(top, left, side, side) for top in tops for left in lefts]
    return regions


def _extra_regions(long: int, short: int) -> int:
    """Regions added along the long side: those whose overlap is nearest to 40%."""

    def overlap_error(steps: int) -> float:
        stride = (long - short) / (steps - 1)
        return abs((short * short - short * stride) / (short * short) - _RMAC_OVERLAP)

    return min(_RMAC_STEPS, key=overlap_error) - 1


def _region_starts(length: int, side: int, count: int) -> list[int]:
    if count == 1:
        return [0]
    stride = (length - side) / (count - 1)
    return [math.floor(i * stride) for i in range(count)]


def rmac(x: torch.Tensor, levels: int = 3, eps: float = 1e-6) -> torch.Tensor:
    """Regional MAC (Tolias et al. 2016): N x C x H x W -> N x C.

    MAC of the whole map and of every region of `rmac_regions`, each L2-normalised, summed.
    The sum is not normalised: the network's L2N does that.
    """
    out = torch.zeros(x.shape[:-2], dtype=x.dtype, device=x.device)
    for top, left, rows, cols in rmac_regions(x.size(-2), x.size(-1), levels):
        out = out + l2n(mac(x[..., top:top + rows, left:left + cols]), eps=eps)
    return out
