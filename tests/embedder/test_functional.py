"""Pooling and normalisation functions."""

from __future__ import annotations

import torch

from lookalike.embedder import functional as LF
from lookalike.embedder.layers import GeM, make_pool


def test_gem_interpolates_between_average_and_max() -> None:
    """GeM with p=1 is average pooling and tends to max pooling as p grows."""
    x = torch.rand(2, 5, 7, 7) + 0.1
    torch.testing.assert_close(LF.gem(x, p=1.0), LF.spoc(x))
    torch.testing.assert_close(LF.gem(x, p=200.0), LF.mac(x), atol=0.02, rtol=0.02)
    assert LF.gem(x, p=3.0).shape == (2, 5)


def test_l2n_gives_unit_rows() -> None:
    """Every row of l2n's output has norm 1."""
    x = torch.randn(4, 16)
    norms = torch.linalg.vector_norm(LF.l2n(x), dim=1)
    torch.testing.assert_close(norms, torch.ones(4))


def test_layers_have_readable_repr_and_learnable_p() -> None:
    """The GeM module prints its p, and p is trainable only when asked."""
    assert repr(GeM(p=3.0)) == "GeM(p=3.0000, eps=1e-06)"
    assert not GeM().p.requires_grad
    assert GeM(learnable=True).p.requires_grad
    assert repr(make_pool("mac", 3.0)) == "MAC()"
