"""P5 figures: manifold capacity, radius and dimension against layer, one line per kind, panels over epochs."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

KIND_STYLES = {'unpermuted': ('tab:blue', '-'), 'permuted': ('tab:red', '-'), 'restored': ('tab:green', '--')}
MEASURES = (('capacity', 'capacity'), ('radius', 'radius'), ('dimension', 'dimension'))


def geometry_by_layer(path: str, rows: list[dict], layers: Sequence[str], epochs: Sequence[int], title: str,
                      granularity: str = 'stage') -> None:
    """rows: one dict per (epoch, layer, kind) of ONE replica with the three measures; `layers` are units
    at `granularity` (named on the x axis)."""
    fig, axes = plt.subplots(len(MEASURES), len(epochs), figsize=(3.4 * len(epochs), 2.6 * len(MEASURES)),
                             squeeze=False, sharex=True, sharey='row')
    x = range(len(layers))
    for col, epoch in enumerate(epochs):
        for row, (key, label) in enumerate(MEASURES):
            ax = axes[row][col]
            for kind, (color, style) in KIND_STYLES.items():
                values = {r['layer']: r[key] for r in rows if r['epoch'] == epoch and r['kind'] == kind}
                if values:
                    ax.plot(x, [values.get(l, float('nan')) for l in layers], style, color=color, marker='o',
                            markersize=3, label=kind)
            if row == 0:
                ax.set_title(f'epoch {epoch}')
            if col == 0:
                ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row == len(MEASURES) - 1:
                ax.set_xticks(list(x))
                ax.set_xticklabels(layers, rotation=60, fontsize=7)
                ax.set_xlabel(granularity, fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
