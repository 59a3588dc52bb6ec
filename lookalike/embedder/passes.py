"""One batch through the model: each member's test-time passes (scales, flip) summed and
normalised, an ensemble's members joined, the class logits alongside. This is the arithmetic
that makes the descriptor; each forward runs where the session puts it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lookalike.embedder import functional as LF
from lookalike.embedder.ensemble import EnsembleModel
from lookalike.embedder.inputs import EmbedInput
from lookalike.embedder.session import Session


def launch(model: EnsembleModel, session: Session, images: Sequence[EmbedInput]) -> torch.Tensor:
    """One batch through every member's test-time passes: the descriptor (an ensemble's
    members' joined and normalised), then the class logits where there is a classifier; left
    on the device."""
    with torch.inference_mode():
        passes = [member_passes(model, session, i, images) for i in range(len(model.members))]
        if len(passes) == 1:
            total, logits = passes[0]
        else:
            # Each member's part is unit-norm, so each weighs the same in the joined one.
            total = LF.l2n(torch.cat([part.float() for part, _ in passes], dim=1))
            logits = torch.stack([part.float() for _, part in passes]).mean(dim=0)
        if not model.categories:
            return total
        return torch.cat([total.float(), logits.float()], dim=1)


def member_passes(
    model: EnsembleModel, session: Session, index: int, images: Sequence[EmbedInput]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One member's test-time passes: the sum of its L2-normalised passes, normalised, and
    its summed logits (N x 0 without a classifier)."""
    member = model.members[index]
    flip = model.config.flip
    total: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    for size in member.sizes:
        pixels = session.pixels(images, size, member.backbone)
        for view in (pixels, pixels.flip(-1)) if flip else (pixels,):
            out = session.forward(view, index)
            descriptors, view_logits = out[:, :member.dim], out[:, member.dim:]
            total = descriptors if total is None else total + descriptors
            logits = view_logits if logits is None else logits + view_logits
    assert total is not None
    assert logits is not None
    # One fp32 pass is already normalised: leaving it alone keeps the plain path
    # bit-exact. Reduced precision is normalised again in fp32.
    if len(member.sizes) > 1 or flip or session.plan.dtype is not None:
        total = LF.l2n(total.float())
    return total, logits
