"""Training curves (loss and validation mAP per epoch) as JSON and PNG."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lookalike.embedder.training import EpochLog


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def curves_dict(history: Sequence[EpochLog]) -> dict[str, Any]:
    """Per-epoch lists (epoch 0 is the starting point; its loss is null)."""
    return {
        "epoch": [log.epoch for log in history],
        "train_loss": [_finite(log.train_loss) for log in history],
        "val_map": [_finite(log.val_map) for log in history],
        "seconds": [round(log.seconds, 3) for log in history],
    }


def write_curves(history: Sequence[EpochLog], json_path: Path, png_path: Path, title: str) -> None:
    """Write the curves as JSON and as a two-panel PNG (loss left, validation mAP right)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(curves_dict(history), indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, map_ax) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    try:
        trained = [log for log in history if math.isfinite(log.train_loss)]
        loss_ax.plot([log.epoch for log in trained], [log.train_loss for log in trained], marker="o")
        loss_ax.set_xlabel("epoch")
        loss_ax.set_ylabel("training loss")
        map_ax.plot([log.epoch for log in history], [log.val_map for log in history], marker="o",
                    color="tab:green")
        map_ax.set_xlabel("epoch (0: before training)")
        map_ax.set_ylabel("validation mAP")
        for ax in (loss_ax, map_ax):
            ax.grid(alpha=0.3)
        loss_ax.set_title(title)
        fig.tight_layout()
        fig.savefig(png_path)
    finally:
        plt.close(fig)
