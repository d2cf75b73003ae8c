"""Stitching figures: P2 Figs. 2-5 (accuracy against stitch depth) and P1 Fig. 2
(test accuracy against noise ratio, one line per depth)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from memjax.report.plots import plt, ratio_colors

_TITLES = {'clean_to_noisy': 'clean-to-noisy $h_r(S(g_0))$: clean base of depth l, noisy head',
           'noisy_to_clean': 'noisy-to-clean $h_0(S(g_r))$: noisy base of depth l, clean head'}
_DEPTH_NAMES = {'clean_to_noisy': ('l_c^m', 'l_c^g'), 'noisy_to_clean': ('l_n^m', 'l_n^g')}


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r[key] is not None]
    return float(np.mean(values)) if values else np.nan


def accuracy_vs_depth(path: str, direction: str, rows: list[dict], baselines: list[dict],
                      depth_rows: list[dict], stage_names: Sequence[str], chance: float) -> None:
    """Memorization (left) and test accuracy (right) against depth, one line per r.

    Dashed: the noisy model f_r (r's colour); dotted black: the clean model f_0
    (on the right its test accuracy, on the left its accuracy on D_n^r against
    the noisy labels); grey: chance. Triangles mark the critical depths.
    """
    ratios = sorted({r['noise_ratio'] for r in rows})
    colors = ratio_colors(ratios)
    depths = sorted({r['depth'] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = (('memorization_accuracy', 'memorization accuracy on $D_n^r$ (noisy labels)', 0),
              ('test_accuracy', 'test accuracy', 1))
    for metric, label, which in panels:
        ax = axes[which]
        for r in ratios:
            curve = [_mean([x for x in rows if x['noise_ratio'] == r and x['depth'] == d], metric) for d in depths]
            ax.plot(depths, curve, marker='o', markersize=3, color=colors[r], label=f'r={r:g}')
            noisy = _mean([b for b in baselines if b['noise_ratio'] == r and b['model'] == 'noisy'], metric)
            ax.axhline(noisy, color=colors[r], linestyle='--', linewidth=0.8)
            marks = [d['depth'] for d in depth_rows if d['direction'] == direction and d['noise_ratio'] == r
                     and d['critical_depth'] == _DEPTH_NAMES[direction][which] and d['depth']]
            for depth in marks:
                y = curve[depths.index(depth)] if depth in depths else np.nan
                ax.plot([depth], [y], marker='v', markersize=9, color=colors[r], markeredgecolor='black')
        clean = _mean([b for b in baselines if b['model'] == 'clean'], metric)
        ax.axhline(clean, color='black', linestyle=':', linewidth=1.2, label='clean model $f_0$')
        if metric == 'memorization_accuracy':
            ax.axhline(chance, color='gray', linewidth=0.8, label='chance')
        ax.set_xticks(depths)
        ax.set_xticklabels([f'{d}\n{stage_names[d - 1]}' for d in depths], fontsize=7)
        ax.set_xlabel('stitch depth l (last base stage)', fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7, loc='best')
    fig.suptitle(f'{_TITLES[direction]}; ' + ', '.join(_DEPTH_NAMES[direction]) + ' marked (triangles)',
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def accuracy_vs_noise(path: str, rows: list[dict], baselines: list[dict], stage_names: Sequence[str],
                      lines: dict | None = None) -> None:
    """P1 Fig. 2: test accuracy of stitched models against r, both directions.

    `lines` maps the depths to plot to their legend labels (ResNets: the first
    k residual groups); None: every depth, labelled by its stage.
    """
    lines = lines or {d: f'k={d} ({stage_names[d - 1]})' for d in sorted({r['depth'] for r in rows})}
    depths = sorted(lines)
    ratios = sorted({r['noise_ratio'] for r in rows})
    cmap = plt.get_cmap('plasma')
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, direction in zip(axes, ('noisy_to_clean', 'clean_to_noisy')):
        for j, d in enumerate(depths):
            curve = [_mean([x for x in rows if x['direction'] == direction and x['noise_ratio'] == r
                            and x['depth'] == d], 'test_accuracy') for r in ratios]
            ax.plot(ratios, curve, marker='o', markersize=3, color=cmap(j / max(1, len(depths) - 1)),
                    label=lines[d])
        clean = _mean([b for b in baselines if b['model'] == 'clean'], 'test_accuracy')
        noisy = [_mean([b for b in baselines if b['model'] == 'noisy' and b['noise_ratio'] == r], 'test_accuracy')
                 for r in ratios]
        ax.axhline(clean, color='black', linestyle=':', label='clean model')
        ax.plot(ratios, noisy, color='cyan', linestyle='--', label='noisy models')
        ax.set_xlabel('noise ratio r', fontsize=8)
        ax.set_ylabel('test accuracy', fontsize=8)
        ax.set_title('first k of the noisy model + clean head' if direction == 'noisy_to_clean'
                     else 'first k of the clean model + noisy head', fontsize=9)
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
