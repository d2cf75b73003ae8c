"""Layer rewinding (P3 section 5.1, Fig. 3; P5's last-layers claim).

In every replica's final model, replace ONE unit (P3's layer groups by
default, `granularity`; see `layer_groups`), its params AND its BatchNorm
statistics (P3's public code forgets the statistics), with its state at kept
epoch t (0 = initialisation), for every unit and every t; evaluate
clean training accuracy, memorization accuracy (noisy examples against their
noisy labels), noisy examples against their true labels, and test accuracy.
With `last_k`, also rewind the last k units together for k = 1 .. L-1 (P5:
rewinding the final layers to an early epoch restores generalization).

Written: results/rewinding/rewinding.csv (mode, granularity, unit or k, epoch,
replica, accuracies) and figures/rewinding_r<r>.png (heatmaps unit x epoch of
clean and memorization accuracy, P3 Fig. 3) and figures/rewinding_last_k.png
(each line names the units it rewinds; the title the granularity). P5's
configs rewind stages, the units their manifolds are measured on.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar
import os
from memjax.analysis.evaluation import training_metrics
from memjax.analysis.localization.layer_groups import chosen_units, granularity_setting
from memjax.analysis.settings import AT_LEAST_1, AnalysisSettings, Context, NON_NEGATIVE, setting
from memjax.report import p3_plots
from memjax.report.tables import write_csv
from memjax.run import Run

NAME = 'rewinding'
ACROSS_PROCESSES = True  # per-replica predictions only: the replicas spread over every process's devices


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.rewinding`: units of the final model set back to earlier epochs (P3 section 5.1)."""

    KEY: ClassVar[str] = 'rewinding'
    SMOKE: ClassVar[dict] = dict(num_train=64, num_test=64)

    granularity: str = granularity_setting()
    epochs: tuple = setting((), 'kept epochs to rewind to (empty: all)', range=NON_NEGATIVE)
    num_train: int | None = setting(None, 'training examples evaluated (None: all)', range=AT_LEAST_1)
    num_test: int | None = setting(None, 'test examples evaluated (None: all)', range=AT_LEAST_1)
    last_k: bool = setting(True, 'also rewind the last k units together (P5)')


def rewound(model, final: dict, past: dict, units) -> dict:
    """`final` with the given units' params and batch_stats taken from `past` (any leading axes)."""
    out = final
    for unit in units:
        out = model.replace_unit(out, unit, past)
    return out


def run(run: Run, s: Settings, context: Context) -> None:
    model, data = run.model, run.dataset
    epochs = run.kept_epochs(s.epochs, 'analysis.rewinding.epochs')
    final_epoch = run.final_epoch()
    n = min(s.num_train or data.num_train, data.num_train)
    m = min(s.num_test or data.test_labels.size, data.test_labels.size)
    pool = run.image_pool('train', 'test', limits={'train': n, 'test': m})
    noise = run.noise
    runner, lifting = run.runner, context.lifting(len(run.replicas))
    final = run.variables(final_epoch)
    units = chosen_units(model, s.granularity)
    names = [u.name for u in units]
    context.log(f'rewinding: {len(units)} units ({s.granularity}) x {len(epochs)} epochs x {len(run.replicas)} '
                f'replicas on {n} train + {m} test examples'
                + (f', and the last k units for k = 1..{len(units) - 1}' if s.last_k else ''))

    def rows_for(variables, mode: str, what: str, epoch: int) -> list[dict]:
        predictions = runner.predict_all(variables, pool.images, lifting)
        train, test = pool.part(predictions, 'train'), pool.part(predictions, 'test')
        out = []
        for i in range(len(run.replicas)):
            metrics = training_metrics(train[i], noise['labels'][i, :n], noise['true_labels'][:n],
                                       noise['noise_mask'][i, :n], test[i], data.test_labels[:m])
            out.append({'mode': mode, 'granularity': s.granularity, 'unit': what, 'epoch': epoch, **run.row(i), **metrics})
        return out

    rows = rows_for(final, 'none', 'none', final_epoch)
    bar = context.progress(len(epochs), 'rewinding epochs')
    for epoch in epochs:
        past = run.variables(epoch)
        for unit in units:
            rows += rows_for(rewound(model, final, past, [unit]), 'single', unit.name, epoch)
        if s.last_k:
            for k in range(1, len(units)):
                rows += rows_for(rewound(model, final, past, units[-k:]), 'last_k', str(k), epoch)
        bar.update(1)
    bar.close()
    out = context.output
    columns = ('mode', 'granularity', 'unit', 'epoch', 'replica', 'noise_ratio', 'seed', 'clean_accuracy', 'memorization_accuracy',
               'noisy_true_accuracy', 'train_accuracy', 'test_accuracy')
    write_csv(os.path.join(out, 'rewinding.csv'), rows, columns)
    figures = context.figures
    for ratio in sorted({r.noise_ratio for r in run.replicas}):
        p3_plots.rewinding_heatmaps(os.path.join(figures, f'rewinding_r{ratio:g}.png'),
                                    [r for r in rows if r['noise_ratio'] == ratio], names, epochs, ratio,
                                    s.granularity)
    if s.last_k:
        p3_plots.rewinding_last_k(os.path.join(figures, 'rewinding_last_k.png'), rows, names, epochs, s.granularity)
    context.log('  rewinding: results/rewinding/rewinding.csv, figures/rewinding_r*.png, rewinding_last_k.png')
