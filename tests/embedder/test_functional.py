"""Pooling and normalisation functions, their modules, and the retrieval network around them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lookalike.embedder import functional as LF
from lookalike.embedder.backbones import Backbone
from lookalike.embedder.layers import POOLINGS, RMAC, GeM, make_pool
from lookalike.embedder.model import RetrievalNet


def test_gem_interpolates_between_average_and_max() -> None:
    """GeM with p=1 is average pooling and tends to max pooling as p grows."""
    x = torch.rand(2, 5, 7, 7) + 0.1
    torch.testing.assert_close(LF.gem(x, p=1.0), LF.spoc(x))
    torch.testing.assert_close(LF.gem(x, p=200.0), LF.mac(x), atol=0.02, rtol=0.02)
    assert LF.gem(x, p=3.0).shape == (2, 5)


def test_gem_with_large_p_is_within_its_bound_of_mac() -> None:
    """At p=50, MAC * (1/HW)^(1/p) <= GeM <= MAC: within 8% of MAC on a 7 x 7 map."""
    x = torch.rand(3, 8, 7, 7) + 0.1
    gem, mac = LF.gem(x, p=50.0), LF.mac(x)
    lower = mac * (1.0 / 49) ** (1.0 / 50)
    assert bool((gem >= lower - 1e-5).all())
    assert bool((gem <= mac + 1e-5).all())
    torch.testing.assert_close(gem, mac, rtol=0.08, atol=0.0)


def test_l2n_gives_unit_rows() -> None:
    """Every row of l2n's output has norm 1."""
    x = torch.randn(4, 16)
    norms = torch.linalg.vector_norm(LF.l2n(x), dim=1)
    torch.testing.assert_close(norms, torch.ones(4))


@pytest.mark.parametrize("name", POOLINGS)
def test_every_pooling_gives_unit_norm_descriptors_after_l2n(name: str) -> None:
    """Each pooling maps N x C x H x W to N x C; after L2N every row has unit norm."""
    x = torch.rand(3, 6, 9, 13)
    pooled = make_pool(name, 3.0)(x)
    assert pooled.shape == (3, 6)
    torch.testing.assert_close(torch.linalg.vector_norm(LF.l2n(pooled), dim=1), torch.ones(3))


def test_unknown_pooling_lists_the_known_ones() -> None:
    """A pooling name nobody knows fails with the names that work."""
    with pytest.raises(ValueError, match="unknown pooling 'avg'; known: gem, mac, spoc, rmac"):
        make_pool("avg", 3.0)


def test_layers_have_readable_repr_and_learnable_p() -> None:
    """The modules print their parameters, and GeM's p is trainable only when asked."""
    assert repr(GeM(p=3.0)) == "GeM(p=3.0000, eps=1e-06)"
    assert not GeM().p.requires_grad
    assert GeM(learnable=True).p.requires_grad
    assert repr(make_pool("mac", 3.0)) == "MAC()"
    assert repr(make_pool("rmac", 3.0)) == "RMAC(levels=3, eps=1e-06)"


def _cirtorch_mac(x: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = torch.nn.functional.max_pool2d(x, (x.size(-2), x.size(-1)))
    return out.flatten(1)


def _cirtorch_rmac(x: torch.Tensor, levels: int = 3, eps: float = 1e-6) -> torch.Tensor:
    """cirtorch's `rmac` (cnnimageretrieval-pytorch, layers/functional.py), transcribed."""
    ovr = 0.4
    steps = torch.tensor([2, 3, 4, 5, 6, 7], dtype=torch.float32)
    h, w = x.size(2), x.size(3)
    short = min(w, h)
    b = (max(h, w) - short) / (steps - 1)
    idx = int(torch.argmin(torch.abs(((short**2 - short * b) / short**2) - ovr)))
    wd = idx + 1 if h < w else 0
    hd = idx + 1 if h > w else 0
    v: torch.Tensor = _cirtorch_mac(x)
    v = v / (torch.linalg.vector_norm(v, dim=1, keepdim=True) + eps)
    for level in range(1, levels + 1):
        wl = math.floor(2 * short / (level + 1))
        wl2 = math.floor(wl / 2 - 1)
        bw = 0.0 if level + wd == 1 else (w - wl) / (level + wd - 1)
        cen_w = torch.floor(wl2 + torch.arange(level + wd, dtype=torch.float32) * bw) - wl2
        bh = 0.0 if level + hd == 1 else (h - wl) / (level + hd - 1)
        cen_h = torch.floor(wl2 + torch.arange(level + hd, dtype=torch.float32) * bh) - wl2
        for i in cen_h.tolist():
            for j in cen_w.tolist():
                if wl == 0:
                    continue
                region = x[:, :, int(i):int(i) + wl, int(j):int(j) + wl]
                vt = _cirtorch_mac(region)
                v = v + vt / (torch.linalg.vector_norm(vt, dim=1, keepdim=True) + eps)
    return v


@pytest.mark.parametrize(("height", "width"), [(7, 7), (7, 10), (10, 7), (14, 20), (3, 5), (1, 1),
                                                (12, 40)])
def test_rmac_matches_cirtorch(height: int, width: int) -> None:
    """R-MAC equals cirtorch's reference on square, wide, tall and tiny maps."""
    x = torch.rand(2, 4, height, width)
    torch.testing.assert_close(LF.rmac(x), _cirtorch_rmac(x))


def test_rmac_regions_overlap_and_stay_inside_the_map() -> None:
    """The whole map, then squares inside it: 1 + 1 + 4 + 9 on a square map with L=3."""
    regions = LF.rmac_regions(12, 12, levels=3)
    assert regions[0] == (0, 0, 12, 12)
    assert len(regions) == 1 + 1 + 4 + 9
    for height, width in ((12, 12), (9, 16), (30, 11)):
        for top, left, rows, cols in LF.rmac_regions(height, width):
            assert top >= 0
            assert left >= 0
            assert top + rows <= height
            assert left + cols <= width


def test_rmac_shape_norm_and_hot_spot() -> None:
    """R-MAC gives N x C, unit norm after L2N; one hot spot makes its channel dominate."""
    torch.manual_seed(0)
    x = torch.rand(2, 16, 9, 12) * 0.05
    x[1, 5, 4, 6] = 10.0
    out = LF.l2n(RMAC()(x))
    assert out.shape == (2, 16)
    torch.testing.assert_close(torch.linalg.vector_norm(out, dim=1), torch.ones(2))
    assert int(out[1].argmax()) == 5
    assert float(out[1, 5]) > 0.6
    others = torch.cat([out[1, :5], out[1, 6:]])
    assert float(out[1, 5]) > 2.5 * float(others.max())


def _tiny_backbone() -> Backbone:
    features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU())
    return Backbone(name="tiny", features=features, channels=8, input_size=32,
                    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), weights_id="none")


def test_retrieval_net_learns_gem_p_only_when_asked() -> None:
    """With learnable_p, GeM's p receives a gradient; by default it stays frozen."""
    frozen = RetrievalNet(_tiny_backbone(), "gem", 3.0)
    assert not any(p.requires_grad for name, p in frozen.named_parameters() if name == "pool.p")
    net = RetrievalNet(_tiny_backbone(), "gem", 3.0, learnable_p=True)
    out = net(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 8)
    out[:, 0].sum().backward()
    assert isinstance(net.pool, GeM)
    assert net.pool.p.grad is not None
    assert float(net.pool.p.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", POOLINGS)
def test_retrieval_net_descriptors_are_unit_norm(name: str) -> None:
    """backbone -> pool -> L2N gives unit rows for every pooling."""
    net = RetrievalNet(_tiny_backbone(), name, 3.0).eval()
    with torch.inference_mode():
        out = net(torch.rand(3, 3, 40, 56))
    torch.testing.assert_close(torch.linalg.vector_norm(out, dim=1), torch.ones(3))
