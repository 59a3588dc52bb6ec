"""The P@K curve of each configuration, as a PNG next to the table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lookalike.evaluation.suite import ConfigResult

# How far below the baseline's lowest point the zoomed panel reaches.
ZOOM_MARGIN = 0.05


def plot_pk(results: Sequence[ConfigResult], path: Path, title: str) -> Path:
    """Write the P@K lines of every configuration to `path` (PNG): the full range on the left,
    and on the right zoomed on the baseline's range, where the levers' differences are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (full, zoom) = plt.subplots(1, 2, figsize=(13, 5.5), dpi=110)
    try:
        # tab20 and alternating dashes: an ablation has more lines than tab10 has colours.
        colours = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]
        for ax in (full, zoom):
            for n, result in enumerate(results):
                ks = range(1, len(result.pk_curve) + 1)
                ax.plot(ks, result.pk_curve,
                        label=f"{result.config.name} (mAP {result.scores['map']:.3f})",
                        color=colours[n % len(colours)], linestyle="-" if n % 2 == 0 else "--",
                        linewidth=2.4 if result.config.name in ("baseline", "best") else 1.1)
            ax.set_xlabel("K")
            ax.set_ylabel("precision at K")
            ax.grid(alpha=0.3)
        baseline = next((r for r in results if r.config.name == "baseline"), results[0])
        zoom.set_ylim(max(0.0, min(baseline.pk_curve) - ZOOM_MARGIN), 1.0)
        full.set_title(title)
        zoom.set_title("zoomed on the baseline's range")
        full.legend(fontsize=7, ncol=2, loc="lower left")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
