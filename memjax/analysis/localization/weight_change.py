"""How far each unit's weights travel from initialisation during training, per replica (a P3-style view).

P3 asks which layers memorization lives in; rewinding and retraining answer it
by intervention. The cheapest first look needs no forward pass at all: for
every replica, unit (`granularity`, as the P3 analyses) and kept epoch t, the
relative distance of the unit's parameters from their initialisation,

    d(t) = ||theta_t - theta_0||_2 / ||theta_0||_2,

and from where they end, ||theta_t - theta_T|| / ||theta_T||. Comparing the
noisy replicas' d with the clean replica's of the same seed shows which units
move more when random labels are fitted. BatchNorm running statistics are not
parameters and are left out.

Written: results/weight_change/weight_change.csv (replica, noise_ratio, seed,
granularity, unit, epoch, from_init, from_final) and
figures/weight_change.png (from_init against epoch, one panel per unit, one
line per replica).
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

import numpy as np

from memjax.analysis.localization.layer_groups import chosen_units, granularity_setting
from memjax.analysis.settings import NON_NEGATIVE, AnalysisSettings, Context, setting
from memjax.models.layer_index import get_subtree
from memjax.report.plots import plt
from memjax.report.tables import write_csv
from memjax.run import Run

NAME = 'weight_change'
COLUMNS = ('replica', 'noise_ratio', 'seed', 'granularity', 'unit', 'epoch', 'from_init', 'from_final')


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.weight_change`: each unit's relative parameter distance from initialisation, per epoch."""

    KEY: ClassVar[str] = 'weight_change'

    granularity: str = granularity_setting()
    epochs: tuple = setting((), 'kept epochs (empty: all)', range=NON_NEGATIVE)


def unit_vectors(params: dict, units) -> dict[str, np.ndarray]:
    """{unit: its parameters flattened into one float64 vector [R, P_u]}, params stacked [R, ...]."""
    out = {}
    for unit in units:
        leaves = [np.asarray(leaf, np.float64) for path in unit.paths
                  for leaf in _leaves(get_subtree(params, path))]
        out[unit.name] = np.concatenate([x.reshape(x.shape[0], -1) for x in leaves], axis=1)
    return out


def _leaves(tree) -> list:
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
    return [] if tree is None else [tree]


def relative_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a - b|| / ||b|| per row: [R, P] x2 -> [R] (0 where b is 0)."""
    norm = np.linalg.norm(b, axis=1)
    return np.where(norm > 0, np.linalg.norm(a - b, axis=1) / np.where(norm > 0, norm, 1.0), 0.0)


def run(run: Run, s: Settings, context: Context) -> None:
    units = chosen_units(run.model, s.granularity)
    epochs = run.kept_epochs(s.epochs, 'analysis.weight_change.epochs')
    start = unit_vectors(run.checkpoints.load_epoch(0)['params'], units)
    end = unit_vectors(run.checkpoints.load_epoch(run.final_epoch())['params'], units)
    context.log(f'weight_change: {len(units)} units ({s.granularity}) x {len(epochs)} epochs x '
                f'{len(run.replicas)} replicas')
    rows = []
    for epoch in epochs:
        now = unit_vectors(run.checkpoints.load_epoch(epoch)['params'], units)
        for unit in units:
            from_init = relative_distance(now[unit.name], start[unit.name])
            from_final = relative_distance(now[unit.name], end[unit.name])
            rows += [{**run.row(i), 'granularity': s.granularity, 'unit': unit.name, 'epoch': epoch,
                      'from_init': float(from_init[i]), 'from_final': float(from_final[i])}
                     for i in range(len(run.replicas))]
    write_csv(os.path.join(context.output, 'weight_change.csv'), rows, COLUMNS)
    plot(os.path.join(context.figures, 'weight_change.png'), rows, [u.name for u in units],
         f'Relative distance of each unit from its initialisation, {run.model.name}')
    context.log('  weight_change: results/weight_change/weight_change.csv, figures/weight_change.png')


def plot(path: str, rows: list[dict], units: list[str], title: str) -> None:
    """from_init against epoch, one panel per unit, one line per replica (colour: noise ratio)."""
    columns = min(4, len(units))
    lines = -(-len(units) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.6 * lines), squeeze=False, sharex=True)
    ratios = sorted({r['noise_ratio'] for r in rows})
    colors = {ratio: plt.cm.coolwarm(k / max(len(ratios) - 1, 1)) for k, ratio in enumerate(ratios)}
    for ax, unit in zip(axes.ravel(), units):
        for replica in sorted({r['replica'] for r in rows}):
            mine = sorted((r for r in rows if r['unit'] == unit and r['replica'] == replica), key=lambda r: r['epoch'])
            ratio = mine[0]['noise_ratio']
            ax.plot([r['epoch'] for r in mine], [r['from_init'] for r in mine], color=colors[ratio],
                    label=f"r={ratio:g}, seed {mine[0]['seed']}")
        ax.set_title(unit, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(units):]:
        ax.axis('off')
    axes[0][0].legend(fontsize=6)
    fig.supxlabel('epoch')
    fig.supylabel('||theta_t - theta_0|| / ||theta_0||')
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
