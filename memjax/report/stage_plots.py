"""Per-stage figures: an accuracy for each modified stage, one line per noise ratio."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from memjax.report.plots import plt, ratio_colors


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else np.nan


def stage_accuracy_grid(path: str, rows: list[dict], stages: Sequence[str], datasets: Sequence[str],
                        dataset_titles: dict, metrics: Sequence[tuple[str, str]], title: str) -> None:
    """Rows of panels per data set, columns per metric; x: the stage modified, one line per r.

    rows: dicts with 'data', 'noise_ratio', 'stage' and the metrics; rows with
    data == 'none' are the unmodified models, drawn dashed.
    """
    ratios = sorted({r['noise_ratio'] for r in rows})
    colors = ratio_colors(ratios)
    fig, axes = plt.subplots(len(datasets), len(metrics), figsize=(5.5 * len(metrics), 3.4 * len(datasets)),
                             squeeze=False)
    for i, dataset in enumerate(datasets):
        for j, (metric, label) in enumerate(metrics):
            ax = axes[i, j]
            for r in ratios:
                curve = [_mean([x[metric] for x in rows if x['data'] == dataset and x['noise_ratio'] == r
                                and x['stage'] == stage]) for stage in stages]
                ax.plot(range(len(stages)), curve, marker='o', markersize=3, color=colors[r], label=f'r={r:g}')
                before = _mean([x[metric] for x in rows if x['data'] == 'none' and x['noise_ratio'] == r])
                ax.axhline(before, color=colors[r], linestyle='--', linewidth=0.8)
            ax.set_xticks(range(len(stages)))
            ax.set_xticklabels(stages, rotation=60, ha='right', fontsize=7)
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel(label, fontsize=8)
            ax.set_title(dataset_titles.get(dataset, dataset), fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title + ' (dashed: before)', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
