"""Figures in the papers' forms, written as PNG files (matplotlib, no display).

Each function draws one kind of paper figure from arrays an analysis saved;
lines are labelled by noise ratio r, stages (or layers) carry their names, and
block boundaries are dashed vertical lines (P1 Fig. 1). Per-layer axes (ResNet-18:
29 layer units) get wider panels and smaller, vertical tick labels.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def ratio_colors(ratios: Sequence[float]) -> dict:
    cmap = plt.get_cmap('viridis')
    distinct = sorted(set(ratios))
    return {r: cmap(i / max(1, len(distinct) - 1)) for i, r in enumerate(distinct)}


def mean_by_ratio(values: np.ndarray, ratios: Sequence[float]) -> dict[float, np.ndarray]:
    """Average values [R, ...] over replicas (seeds) of the same noise ratio."""
    ratios = np.asarray(ratios)
    return {float(r): np.nanmean(values[ratios == r], axis=0) for r in sorted(set(ratios.tolist()))}


def _stage_axis(ax, stages: Sequence[str], block_ends: Sequence[int], unit: str = 'stage') -> None:
    """Unit names as x ticks (index l at x = l) and a dashed line at end + 0.5 for each block end."""
    ax.set_xticks(range(len(stages)))
    if unit == 'layer':
        ax.set_xticklabels(stages, rotation=90, ha='center', fontsize=5)
    else:
        ax.set_xticklabels(stages, rotation=60, ha='right', fontsize=7)
    for end in block_ends:
        ax.axvline(end + 0.5, color='gray', linestyle='--', linewidth=0.8)


def _grid(count: int, width: float = 3.6, height: float = 3.0, max_cols: int = 4):
    cols = min(count, max_cols)
    rows = int(np.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[count:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def pick_epochs(epochs: Sequence[int], count: int = 6) -> list[int]:
    """Up to `count` checkpoint epochs spread over training (always the first and last)."""
    epochs = list(epochs)
    if len(epochs) <= count:
        return epochs
    idx = np.unique(np.round(np.linspace(0, len(epochs) - 1, count)).astype(int))
    return [epochs[i] for i in idx]


def stage_curves_per_epoch(path: str, values: np.ndarray, epochs: Sequence[int], stages: Sequence[str],
                           ratios: Sequence[float], block_ends: Sequence[int], title: str, ylabel: str,
                           unit: str = 'stage') -> None:
    """Subplots for a few checkpoints; in each, value against stage (or layer), one line per r.

    values: [R, L, T] (T = len(epochs)); stages: the L unit names; block_ends:
    indices of units after which a dashed line is drawn; unit: 'stage' or
    'layer' (layer panels are wider, with small vertical tick labels).
    """
    shown = pick_epochs(epochs)
    if unit == 'layer':
        fig, axes = _grid(len(shown), width=max(3.6, 0.18 * len(stages)), height=3.4, max_cols=3)
    else:
        fig, axes = _grid(len(shown))
    colors = ratio_colors(ratios)
    by_ratio = mean_by_ratio(values, ratios)
    for ax, epoch in zip(axes, shown):
        t = list(epochs).index(epoch)
        for r, v in by_ratio.items():
            ax.plot(range(len(stages)), v[:, t], marker='o', markersize=3, color=colors[r], label=f'r={r:g}')
        _stage_axis(ax, stages, block_ends, unit)
        ax.set_title(f'epoch {epoch}', fontsize=9)
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel(ylabel, fontsize=8)
    axes[0].legend(fontsize=7, title='noise', title_fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def epoch_curves_per_stage(path: str, values: np.ndarray, epochs: Sequence[int], stages: Sequence[str],
                           ratios: Sequence[float], title: str, ylabel: str) -> None:
    """One subplot per stage: value against epoch, one line per r. values: [R, L, T]."""
    fig, axes = _grid(len(stages), width=3.0, height=2.5)
    colors = ratio_colors(ratios)
    by_ratio = mean_by_ratio(values, ratios)
    for l, (ax, stage) in enumerate(zip(axes, stages)):
        for r, v in by_ratio.items():
            ax.plot(epochs, v[l], color=colors[r], label=f'r={r:g}')
        ax.set_title(stage, fontsize=9)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel('epoch', fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def heatmap(path: str, matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str,
            row_label: str, col_label: str, vmin: float = 0.0, vmax: float = 1.0,
            block_ends: Sequence[int] = ()) -> None:
    """A stage x stage (or layer x layer) heatmap of matrix [len(rows), len(cols)] with names on
    both axes and the values printed (up to 400 cells); thin dashed lines after `block_ends`
    (indices into both rows and columns; used for layer heatmaps)."""
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(cols), 1.0 + 0.4 * len(rows)))
    image = ax.imshow(matrix, vmin=vmin, vmax=vmax, cmap='magma', origin='lower')
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, rotation=60, ha='right', fontsize=7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=7)
    ax.set_xlabel(col_label, fontsize=8)
    ax.set_ylabel(row_label, fontsize=8)
    if len(rows) * len(cols) <= 400:
        for i in range(len(rows)):
            for j in range(len(cols)):
                ax.text(j, i, f'{matrix[i, j]:.2f}', ha='center', va='center', fontsize=5,
                        color='white' if matrix[i, j] < 0.6 * vmax else 'black')
    for end in block_ends:
        ax.axvline(end + 0.5, color='white', linestyle='--', linewidth=0.5)
        ax.axhline(end + 0.5, color='white', linestyle='--', linewidth=0.5)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
