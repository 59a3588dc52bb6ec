"""The P@K curve of each configuration, as a PNG next to the table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lookalike.evaluation.suite import ConfigResult


def plot_pk(results: Sequence[ConfigResult], path: Path, title: str) -> Path:
    """Write one P@K line per configuration to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    try:
        # tab20 and alternating dashes: an ablation has more lines than tab10 has colours.
        colours = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]
        for n, result in enumerate(results):
            ks = range(1, len(result.pk_curve) + 1)
            ax.plot(ks, result.pk_curve, label=f"{result.config.name} (mAP {result.scores['map']:.3f})",
                    color=colours[n % len(colours)], linestyle="-" if n % 2 == 0 else "--",
                    linewidth=2.4 if result.config.name in ("baseline", "best") else 1.1)
        ax.set_xlabel("K")
        ax.set_ylabel("precision at K")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, loc="lower left")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
