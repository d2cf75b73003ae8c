"""Layer retraining (P3 section 5.2, Fig. 4).

For every noisy replica and every unit (P3's layer groups by default,
`granularity`; see `layer_groups`): reset that unit (params and BatchNorm
statistics) to its initial state (the epoch-0 checkpoint), then train ONLY
that unit on the replica's CLEAN examples, everything else frozen through the
optimizer (`memjax.analysis.stage_training`), with SGD and
a one-cycle schedule (20 epochs, peak 0.1 at epoch 10, batch 512 by
default, as P3). BatchNorm (`batchnorm`, named in every result row):
'live' (default, P3: "the batch norm running statistics are allowed to be
updated"): the whole network runs in training mode, every BatchNorm uses
batch statistics and updates its running statistics on the clean batches;
'frozen': only the retrained unit's stages run in training mode and only its
running statistics update. Either way only the retrained unit's params change.
After every epoch: clean training accuracy, memorization accuracy (noisy
examples against their noisy labels: can the network still predict them
without having trained on them?), noisy examples against the true labels, and
test accuracy.

Written: results/retraining/retraining.csv and figures/retraining.png.
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from memjax.analysis.evaluation import training_metrics
from memjax.analysis.localization.layer_groups import chosen_units, granularity_setting
from memjax.analysis.settings import (AT_LEAST_1, AnalysisSettings, Context, NON_NEGATIVE, POSITIVE, Range, SEED,
                                      setting)
from memjax.analysis.stage_training import BATCHNORM_MODES, train_unit
from memjax.errors import ConfigError
from memjax.report import p3_plots
from memjax.report.tables import write_csv
from memjax.run import Run
from memjax.train.state import OptimizerSpec

NAME = 'retraining'


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.retraining`: one unit reset to epoch 0 and retrained on clean examples (P3 section 5.2)."""

    KEY: ClassVar[str] = 'retraining'
    SMOKE: ClassVar[dict] = dict(epochs=1, peak_epoch=1.0, batch_size=32, num_train=64, units=('conv2',))

    granularity: str = granularity_setting()
    epochs: int = setting(20, 'retraining epochs (P3: 20, one-cycle peaking at epoch 10)', range=AT_LEAST_1)
    peak_epoch: float = setting(10.0, 'epoch of the one-cycle peak (at most epochs)', range=NON_NEGATIVE)
    learning_rate: float = setting(0.1, 'peak learning rate', range=POSITIVE)
    momentum: float = setting(0.9, 'SGD momentum', range=Range(0, 1, high_open=True))
    weight_decay: float = setting(5e-4, 'weight decay', range=NON_NEGATIVE)
    batch_size: int = setting(512, 'retraining batch size (P3: 512)', range=AT_LEAST_1)
    batchnorm: str = setting('live', 'live: whole network in training mode, every BatchNorm updates its running '
                             'statistics on the clean data (P3); frozen: only the retrained unit\'s do',
                             choices=BATCHNORM_MODES)
    units: tuple = setting((), 'units (of the granularity) to retrain, one at a time (empty: all)',
                           range='unit names of the model')
    num_train: int | None = setting(None, 'training examples evaluated each epoch (None: all)', range=AT_LEAST_1)
    seed: int = setting(0, 'seed of the batch order', range=SEED)

    def validate(self) -> None:
        if self.peak_epoch > self.epochs:
            raise self.error('peak_epoch', f'must lie within [0, epochs={self.epochs}]')

    def check_model(self, model) -> None:
        chosen_units(model, self.granularity, self.units, 'analysis.retraining.units')

    def optimizer(self, steps_per_epoch: int) -> OptimizerSpec:
        """SGD with momentum and coupled weight decay, one-cycle 0 -> learning_rate at peak_epoch -> 0."""
        return OptimizerSpec('sgd', self.learning_rate, 'onecycle', self.epochs, steps_per_epoch, self.peak_epoch,
                             momentum=self.momentum, weight_decay=self.weight_decay)


def run(run: Run, s: Settings, context: Context) -> None:
    model, data = run.model, run.dataset
    noisy = [r.index for r in run.noisy_replicas('retraining')]
    units = chosen_units(model, s.granularity, s.units, 'analysis.retraining.units')
    n_eval = min(s.num_train or data.num_train, data.num_train)
    pool = run.image_pool('train', 'test')
    eval_pool = run.image_pool('train', 'test', limits={'train': n_eval})
    labels = jnp.asarray(np.concatenate([run.noise['labels'][noisy],
                                         np.broadcast_to(data.test_labels, (len(noisy), data.test_labels.size))],
                                        axis=1))
    masks = run.noise['noise_mask'][noisy]
    clean_sets = [np.flatnonzero(~m) for m in masks]
    steps_per_epoch = max(len(c) for c in clean_sets) // s.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"analysis.retraining.batch_size={s.batch_size} is larger than the clean training set")
    final, initial = run.variables(run.final_epoch(), noisy), run.variables(0, noisy)
    context.log(f'retraining: {len(units)} units ({s.granularity}) x {len(noisy)} noisy replicas, {s.epochs} epochs on clean examples '
                f'each, BatchNorm {s.batchnorm}')

    rows = []
    runner, lifting = run.runner, context.lifting(len(noisy))
    bar = context.progress(len(units) * s.epochs, 'retraining epochs')
    for unit in units:
        def evaluate(epoch: int, variables) -> None:
            predictions = runner.predict_all(variables, eval_pool.images, lifting)
            train, test = eval_pool.part(predictions, 'train'), eval_pool.part(predictions, 'test')
            for k, i in enumerate(noisy):
                metrics = training_metrics(train[k], run.noise['labels'][i, :n_eval],
                                           run.noise['true_labels'][:n_eval], masks[k, :n_eval],
                                           test[k], data.test_labels)
                rows.append({'granularity': s.granularity, 'unit': unit.name, 'epoch': epoch,
                             'batchnorm': s.batchnorm, **run.row(i), **metrics})
            if epoch:
                bar.update(1)

        start = model.replace_unit(final, unit, initial)
        evaluate(0, start)
        train_unit(runner, start, unit, s.optimizer(steps_per_epoch), batch_size=s.batch_size, pool=pool.images,
                   labels=labels, indices=clean_sets, epochs=s.epochs, seed=s.seed, lifting=lifting,
                   batchnorm=s.batchnorm, after_epoch=evaluate)
        context.log(f'  retraining {unit.name}: clean {rows[-1]["clean_accuracy"]:.3f}, '
            f'memorization {rows[-1]["memorization_accuracy"]:.3f} after {s.epochs} epochs')
    bar.close()
    out = context.output
    write_csv(os.path.join(out, 'retraining.csv'), rows,
              ('granularity', 'unit', 'epoch', 'batchnorm', 'replica', 'noise_ratio', 'seed', 'clean_accuracy', 'memorization_accuracy',
               'noisy_true_accuracy', 'train_accuracy', 'test_accuracy'))
    p3_plots.retraining_curves(os.path.join(context.figures, 'retraining.png'), rows, [u.name for u in units])
    context.log('  retraining: results/retraining/retraining.csv, figures/retraining.png')
