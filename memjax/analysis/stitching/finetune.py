"""Layer fine-tuning (P2 appendix A.1, Fig. 6): one stage of a noisy model, all else frozen.

For every noisy replica f_r and every stage, that stage alone is fine-tuned
(`memjax.analysis.stage_training`) on
  (a) 'val': the validation split, with its correct labels, or
  (b) 'noisy_true': D_n^r, the replica's relabelled training examples, with
      their TRUE labels.
One row per (data, replica, stage): test accuracy, accuracy on D_n^r against
the true labels, and memorization accuracy (D_n^r against the noisy labels).
All noisy replicas are fine-tuned together, stage by stage.

Written: results/finetune/finetune.csv and figures/finetune.png (rows: the
fine-tuning data; columns: test accuracy and D_n^r true-label accuracy against
the fine-tuned stage, one line per r, the unmodified noisy model dashed).
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar
import jax.numpy as jnp
import numpy as np

from memjax.analysis.settings import AT_LEAST_1, AnalysisSettings, Context, POSITIVE, SEED, setting
from memjax.analysis.stage_training import train_unit
from memjax.analysis.stitching.stitching import check_validation_split
from memjax.errors import ConfigError
from memjax.report.stage_plots import stage_accuracy_grid
from memjax.report.tables import write_csv
from memjax.run import Run
from memjax.train.metrics import accuracy
from memjax.train.state import OptimizerSpec

NAME = 'finetune'
DATASETS = ('val', 'noisy_true')


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.finetune`: one stage of each noisy model fine-tuned, all else frozen."""

    KEY: ClassVar[str] = 'finetune'
    SMOKE: ClassVar[dict] = dict(epochs=1, batch_size=32, stages=('conv2',))

    epochs: int = setting(5, 'epochs of fine-tuning one stage', range=AT_LEAST_1)
    learning_rate: float = setting(0.01, 'fine-tuning learning rate', range=POSITIVE)
    optimizer: str = setting('sgd', 'sgd (momentum 0.9) or adam', choices=('sgd', 'adam'))
    batch_size: int = setting(128, 'fine-tuning batch size', range=AT_LEAST_1)
    stages: tuple = setting((), 'stages to fine-tune, one at a time (empty: all)', range='stage names of the model')
    datasets: tuple = setting(DATASETS, 'val: validation split; noisy_true: D_n^r with true labels',
                              range=' and/or '.join(DATASETS))
    seed: int = setting(0, 'seed of the batch order', range=SEED)

    def validate(self) -> None:
        for name in self.datasets:
            if name not in DATASETS:
                raise ConfigError(f"analysis.finetune.datasets has {name!r}; use 'val' and/or 'noisy_true'")

    def check_model(self, model) -> None:
        model.select_stages(self.stages, 'analysis.finetune.stages')

    def check_config(self, config) -> None:
        if 'val' in self.datasets:
            check_validation_split(config.data.val_size, 'finetune')

    def check_data(self, data) -> None:
        if 'val' in self.datasets:
            check_validation_split(data.split_sizes['val'], 'finetune')

    def optimizer_spec(self) -> OptimizerSpec:
        return OptimizerSpec(self.optimizer, self.learning_rate, 'constant', momentum=0.9)


def run(run: Run, s: Settings, context: Context) -> None:
    model, data = run.model, run.dataset
    noisy = [r.index for r in run.noisy_replicas('finetune')]
    stages = list(model.select_stages(s.stages, 'analysis.finetune.stages'))
    pool = run.image_pool('train', 'val', 'test')
    true_pool = np.concatenate([data.train_labels, data.val_labels, data.test_labels])
    labels = jnp.asarray(np.broadcast_to(true_pool, (len(noisy), true_pool.size)))
    masks = run.noise['noise_mask'][noisy]
    index_sets = {'val': [pool.indices('val')] * len(noisy),
                  'noisy_true': [np.flatnonzero(m) for m in masks]}
    stacked = run.variables(run.final_epoch(), noisy)
    context.log(f'finetune: {len(stages)} stages x {len(s.datasets)} data sets x {len(noisy)} noisy replicas, '
        f'{s.epochs} epochs each')

    def evaluate(predictions: np.ndarray, k: int) -> dict:
        mask, replica = masks[k], noisy[k]
        train_part = pool.part(predictions, 'train')
        return {'test_accuracy': accuracy(pool.part(predictions, 'test'), data.test_labels),
                'noisy_true_accuracy': accuracy(train_part, data.train_labels, mask),
                'memorization_accuracy': accuracy(train_part, run.noise['labels'][replica], mask)}

    rows = []
    runner, lifting = run.runner, context.lifting(len(noisy))
    before = runner.predict_all(stacked, pool.images, lifting)
    for k, replica in enumerate(noisy):
        rows.append({'data': 'none', **run.row(replica), 'stage': 'none', **evaluate(before[k], k)})
    bar = context.progress(len(s.datasets) * len(stages), 'finetune (data set, stage)')
    units = {u.name: u for u in model.units('stage')}
    for dataset in s.datasets:
        for stage in stages:
            variables = train_unit(runner, stacked, units[stage], s.optimizer_spec(), batch_size=s.batch_size,
                                   pool=pool.images, labels=labels, indices=index_sets[dataset], epochs=s.epochs,
                                   seed=s.seed, lifting=lifting)
            predictions = runner.predict_all(variables, pool.images, lifting)
            for k, replica in enumerate(noisy):
                rows.append({'data': dataset, **run.row(replica), 'stage': stage, **evaluate(predictions[k], k)})
            bar.update(1)
    bar.close()
    out = context.output
    columns = ('data', 'replica', 'noise_ratio', 'seed', 'stage', 'test_accuracy', 'noisy_true_accuracy',
               'memorization_accuracy')
    write_csv(os.path.join(out, 'finetune.csv'), rows, columns)
    stage_accuracy_grid(os.path.join(context.figures, 'finetune.png'), rows, stages,
                        [d for d in DATASETS if d in s.datasets],
                        {'val': 'fine-tuned on the validation split',
                         'noisy_true': 'fine-tuned on $D_n^r$ with true labels'},
                        (('test_accuracy', 'test accuracy'), ('noisy_true_accuracy', '$D_n^r$ vs true labels')),
                        'Fine-tuning exactly one stage of the noisy model (P2 Fig. 6)')
    context.log('  finetune: results/finetune/finetune.csv, figures/finetune.png')
