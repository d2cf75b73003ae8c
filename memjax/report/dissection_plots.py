"""P4 figures: accuracy and input-gradient magnitude per epoch, dissimilarity bars and curves, x_j* images."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _label_kind(ratio: float) -> str:
    return 'true labels' if ratio == 0 else ('random labels' if ratio >= 1 else f'r={ratio:g}')


def accuracy_and_gradient(path: str, rows: list[dict], title: str, gradient_label: str) -> None:
    """P4 Figs. 1/4: training accuracy and G per epoch, one line per replica (true vs random labels);
    `gradient_label` names G's definition and units on its axis."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ratios = sorted({r['noise_ratio'] for r in rows})
    colors = {ratio: plt.cm.coolwarm(i / max(len(ratios) - 1, 1)) for i, ratio in enumerate(ratios)}
    for replica in sorted({r['replica'] for r in rows}):
        mine = sorted((r for r in rows if r['replica'] == replica), key=lambda r: r['epoch'])
        ratio = mine[0]['noise_ratio']
        label = f"{_label_kind(ratio)}, seed {mine[0]['seed']}"
        for ax, key in zip(axes, ('train_accuracy', 'input_gradient')):
            ax.plot([r['epoch'] for r in mine], [r[key] for r in mine], color=colors[ratio], label=label)
    axes[0].set_ylabel('training accuracy')
    axes[1].set_ylabel(gradient_label, fontsize=8)
    for ax in axes:
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def dissimilarity_bars(path: str, groups: dict[str, tuple[float, float]], title: str) -> None:
    """P4 Fig. 2: mean dissimilarity per comparison group with error bars (std over pairs).

    Blue: true labels; red: random labels on the same X_R (P4's bars); hatched
    grey: models of one noise level whose labels differ ('other X_R', an extra
    bar P4 does not have).
    """
    names = list(groups)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(names), 3.8))
    colors = ['tab:blue' if n.startswith('true') else ('0.6' if 'other X_R' in n else 'tab:red') for n in names]
    bars = ax.bar(range(len(names)), [groups[n][0] for n in names], yerr=[groups[n][1] for n in names], capsize=4,
                  color=colors)
    for bar, name in zip(bars, names):
        if 'other X_R' in name or 'other data' in name:
            bar.set_hatch('//')
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, ha='right', fontsize=8)
    ax.set_ylabel('Dist (mean KL over classes, nats)')
    ax.set_title(title)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def dissimilarity_vs_noise(path: str, series: dict[str, dict[float, tuple[float, float]]], title: str) -> None:
    """P4 Fig. 5: Dist between seeds of one noise level against the level.

    series: {'same X_R': {ratio: (mean, std)}, optionally 'other X_R': {...}}
    (pairs that share their labels, P4's curve; pairs whose labels differ).
    """
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for name, points in series.items():
        ratios = sorted(points)
        ax.errorbar(ratios, [points[r][0] for r in ratios], yerr=[points[r][1] for r in ratios], marker='o',
                    capsize=3, label=f'seeds, {name}', linestyle='-' if name == 'same X_R' else '--')
    ax.set_xlabel('noise ratio r')
    ax.set_ylabel('Dist between seeds (nats)')
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def image_grid(path: str, images: np.ndarray, row_labels: Sequence[str], title: str) -> None:
    """images [rows, cols, H, W, C] in [0, 1] (P4 Fig. 3: x_j* per class; or GAN samples)."""
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols + 1.2, 1.1 * rows + 0.5), squeeze=False)
    for i in range(rows):
        for j in range(cols):
            image = np.clip(images[i, j], 0, 1)
            axes[i][j].imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray' if image.shape[-1] == 1
                              else None, vmin=0, vmax=1)
            axes[i][j].set_xticks([])
            axes[i][j].set_yticks([])
        axes[i][0].set_ylabel(row_labels[i], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
