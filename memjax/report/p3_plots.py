"""P3 figures: rewinding heatmaps, last-k rewinding, gradient accounting, retraining, neurons."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from memjax.report.plots import plt


def _mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return float(np.mean(values)) if values else np.nan


def _heat(ax, matrix, rows, cols, title):
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap='viridis', aspect='auto', origin='lower')
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=7)
    step = max(1, len(cols) // 12)
    ax.set_xticks(range(0, len(cols), step))
    ax.set_xticklabels([str(c) for c in cols][::step], fontsize=7)
    ax.set_xlabel('epoch rewound to', fontsize=8)
    ax.set_title(title, fontsize=9)
    return image


def rewinding_heatmaps(path: str, rows: list[dict], units: Sequence[str], epochs: Sequence[int],
                       ratio: float, granularity: str = 'p3_groups') -> None:
    """Accuracy after rewinding one unit (rows; units at `granularity`) to an epoch (columns), mean over seeds."""
    metrics = [('clean_accuracy', 'clean training accuracy'), ('test_accuracy', 'test accuracy')]
    if ratio > 0:
        metrics.insert(1, ('memorization_accuracy', 'memorization accuracy (noisy labels)'))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.35 * len(units) + 2), squeeze=False)
    image = None
    for ax, (metric, title) in zip(axes[0], metrics):
        matrix = np.array([[_mean([r[metric] for r in rows if r['mode'] == 'single' and r['unit'] == unit
                                   and r['epoch'] == e]) for e in epochs] for unit in units])
        image = _heat(ax, matrix, units, epochs, title)
    fig.colorbar(image, ax=axes[0].tolist(), fraction=0.02)
    fig.suptitle(f'Rewinding one unit ({granularity}: params and BatchNorm statistics) of the final model, '
                 f'r={ratio:g}', fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)


def last_k_label(units: Sequence[str], k: int) -> str:
    """'last k: <first rewound unit>..<last unit>' (the units rewound together)."""
    return f'last {k}: {units[-1]}' if k == 1 else f'last {k}: {units[-k]}..{units[-1]}'


def rewinding_last_k(path: str, rows: list[dict], units: Sequence[str], epochs: Sequence[int],
                     granularity: str = 'p3_groups') -> None:
    """Test and memorization accuracy after rewinding the last k units (at `granularity`) together, one line
    per k, per r; each line names the units it rewinds."""
    num_units = len(units)
    ratios = sorted({r['noise_ratio'] for r in rows})
    cmap = plt.get_cmap('plasma')
    fig, axes = plt.subplots(2, len(ratios), figsize=(4 * len(ratios), 6), squeeze=False)
    for j, ratio in enumerate(ratios):
        for i, (metric, label) in enumerate((('test_accuracy', 'test accuracy'),
                                             ('memorization_accuracy', 'memorization accuracy'))):
            ax = axes[i, j]
            for k in range(1, num_units):
                curve = [_mean([r[metric] for r in rows if r['mode'] == 'last_k' and r['unit'] == str(k)
                                and r['noise_ratio'] == ratio and r['epoch'] == e]) for e in epochs]
                ax.plot(epochs, curve, color=cmap((k - 1) / max(1, num_units - 2)), label=last_k_label(units, k))
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f'r={ratio:g}: {label}', fontsize=9)
            ax.set_xlabel('epoch rewound to', fontsize=8)
    axes[0, 0].legend(fontsize=6, ncol=2)
    fig.suptitle(f'Rewinding the last k units together (P5); units: {granularity}', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def gradient_accounting(path: str, rows: list[dict], units: Sequence[str], ratio: float,
                        source: str = 'training', averaged: list[dict] | None = None,
                        window: str = 'all epochs') -> None:
    """P3 Figs. 1-2: per-unit normalised gradient norms (clean vs noisy) and their cosine, per epoch.

    source: 'training' (the epoch's SGD gradients) or 'checkpoints' (full-data gradient at kept epochs).
    averaged: rows per (replica, unit) averaged over `window` (P3 Fig. 1's bars); None: over every epoch.
    """
    epochs = sorted({r['epoch'] for r in rows})
    cmap = plt.get_cmap('viridis')
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for l, unit in enumerate(units):
        color = cmap(l / max(1, len(units) - 1))
        series = {key: [_mean([r[key] for r in rows if r['unit'] == unit and r['epoch'] == e]) for e in epochs]
                  for key in ('clean_norm', 'noisy_norm', 'cosine')}
        axes[0].plot(epochs, series['clean_norm'], color=color, label=unit)
        axes[0].plot(epochs, series['noisy_norm'], color=color, linestyle='--')
        bars = [r for r in averaged if r['unit'] == unit] if averaged is not None else None
        axes[1].bar(l - 0.2, _mean([r['clean_norm'] for r in bars]) if bars is not None
                    else _mean(series['clean_norm']), width=0.4, color='tab:blue')
        axes[1].bar(l + 0.2, _mean([r['noisy_norm'] for r in bars]) if bars is not None
                    else _mean(series['noisy_norm']), width=0.4, color='tab:red')
        axes[2].plot(epochs, series['cosine'], color=color, label=unit)
    axes[0].set_title('gradient norm / sqrt(#params): clean (solid), noisy (dashed)', fontsize=9)
    axes[0].set_xlabel('epoch', fontsize=8)
    axes[1].set_xticks(range(len(units)))
    axes[1].set_xticklabels(units, rotation=60, ha='right', fontsize=7)
    axes[1].set_title(f'mean over {window}: clean (blue) vs noisy (red)', fontsize=9)
    axes[2].axhline(0, color='gray', linewidth=0.8)
    axes[2].set_ylim(-1.05, 1.05)
    axes[2].set_title('cosine(mean clean gradient, mean noisy gradient)', fontsize=9)
    axes[2].set_xlabel('epoch', fontsize=8)
    axes[2].legend(fontsize=6, ncol=2)
    what = {'training': "the epoch's SGD gradients, recorded during training",
            'checkpoints': 'full-data gradient at each kept checkpoint'}.get(source, source)
    fig.suptitle(f'Gradient accounting, r={ratio:g} ({what})', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def retraining_curves(path: str, rows: list[dict], units: Sequence[str]) -> None:
    """P3 Fig. 4: clean and memorization accuracy per retraining epoch, one line per retrained unit."""
    ratios = sorted({r['noise_ratio'] for r in rows})
    cmap = plt.get_cmap('viridis')
    fig, axes = plt.subplots(len(ratios), 2, figsize=(10, 3.4 * len(ratios)), squeeze=False)
    for i, ratio in enumerate(ratios):
        for j, (metric, label) in enumerate((('clean_accuracy', 'clean training accuracy'),
                                             ('memorization_accuracy', 'memorization accuracy (noisy labels)'))):
            ax = axes[i, j]
            for l, unit in enumerate(units):
                epochs = sorted({r['epoch'] for r in rows if r['unit'] == unit})
                curve = [_mean([r[metric] for r in rows if r['unit'] == unit and r['noise_ratio'] == ratio
                                and r['epoch'] == e]) for e in epochs]
                ax.plot(epochs, curve, marker='o', markersize=2, color=cmap(l / max(1, len(units) - 1)),
                        label=unit)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel('retraining epoch (clean examples only)', fontsize=8)
            ax.set_title(f'r={ratio:g}: {label}', fontsize=9)
    axes[0, 0].legend(fontsize=6, ncol=2)
    fig.suptitle('Retraining one unit from its initial weights on clean examples (P3 Fig. 4)', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def neuron_counts(path: str, rows: list[dict], units: Sequence[str], cap: int) -> None:
    """P3 Fig. 5: neurons removed until the prediction flips, accuracy after removal, where they sit."""
    colors = {'clean': 'tab:blue', 'noisy': 'tab:red'}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    bins = np.arange(0, cap + 2) - 0.5
    for kind in ('clean', 'noisy'):
        chosen = [r for r in rows if r['kind'] == kind]
        counts = [r['neurons'] for r in chosen if r['flipped']]
        axes[0].hist(counts, bins=bins, alpha=0.5, color=colors[kind],
                     label=f'{kind} (mean {np.mean(counts) if counts else np.nan:.1f}, '
                           f'{sum(not r["flipped"] for r in chosen)} not flipped)')
        axes[1].hist([r['accuracy_after'] for r in chosen if r['accuracy_after'] is not None], bins=20, alpha=0.5,
                     color=colors[kind], label=kind)
        per_unit = np.array([[r[f'removed_{s}'] for s in units] for r in chosen]).sum(0) if chosen else \
            np.zeros(len(units))
        share = per_unit / max(1, per_unit.sum())
        offset = -0.2 if kind == 'clean' else 0.2
        axes[2].bar(np.arange(len(units)) + offset, share, width=0.4, color=colors[kind], label=kind)
    axes[0].set_xlabel('neurons/channels removed until the prediction flips', fontsize=8)
    axes[1].set_xlabel('training accuracy after removal', fontsize=8)
    axes[2].set_xticks(range(len(units)))
    axes[2].set_xticklabels(units, rotation=60, ha='right', fontsize=7)
    axes[2].set_title('share of removed neurons per unit', fontsize=9)
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle('Critical neurons (P3 Fig. 5)', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
