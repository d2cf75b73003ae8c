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
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax.analysis.stage_training import StageTrainer
from memjax.analysis.representations import resolve_stages
from memjax.analysis.settings import AnalysisSettings
from memjax.errors import ConfigError
from memjax.report.stage_plots import stage_accuracy_grid
from memjax.report.tables import write_csv
from memjax.run import open_run
from memjax.train.metrics import accuracy

DATASETS = ('val', 'noisy_true')


@dataclasses.dataclass(frozen=True)
class FinetuneSettings(AnalysisSettings):
    epochs: int = 5
    learning_rate: float = 0.01
    optimizer: str = 'sgd'
    batch_size: int = 128
    stages: tuple = ()
    datasets: tuple = DATASETS
    strategy: str = 'loop'
    seed: int = 0


    def validate(self) -> None:
        for name in self.datasets:
            if name not in DATASETS:
                raise ConfigError(f"analysis.finetune.datasets has {name!r}; use 'val' and/or 'noisy_true'")
        if self.optimizer not in ('sgd', 'adam'):
            raise ConfigError(f"analysis.finetune.optimizer={self.optimizer!r}; use 'sgd' or 'adam'")

    def make_optimizer(self) -> optax.GradientTransformation:
        if self.optimizer == 'adam':
            return optax.adam(self.learning_rate)
        return optax.sgd(self.learning_rate, momentum=0.9)


def run_finetune(workdir: str, analysis, log: Callable[[str], None] = print) -> None:
    run = open_run(workdir)
    s = FinetuneSettings.from_config(analysis.get('finetune'))
    model, data = run.model, run.dataset
    noisy = [r.index for r in run.noisy_replicas('finetune')]
    stages = list(resolve_stages(model, s.stages))
    n, v = data.num_train, data.val_labels.size
    pool = jnp.asarray(np.concatenate([data.train_images, data.val_images, data.test_images]))
    true_pool = np.concatenate([data.train_labels, data.val_labels, data.test_labels])
    labels = jnp.asarray(np.broadcast_to(true_pool, (len(noisy), true_pool.size)))
    masks = run.noise['noise_mask'][noisy]
    index_sets = {'val': [np.arange(n, n + v)] * len(noisy),
                  'noisy_true': [np.flatnonzero(m) for m in masks]}
    final = run.checkpoints.load_epoch(run.final_epoch())
    stacked = jax.tree_util.tree_map(lambda x: jnp.asarray(x[np.asarray(noisy)]), final)
    log(f'finetune: {len(stages)} stages x {len(s.datasets)} data sets x {len(noisy)} noisy replicas, '
        f'{s.epochs} epochs each')

    def evaluate(predictions: np.ndarray, k: int) -> dict:
        mask, replica = masks[k], noisy[k]
        train_part = predictions[:n]
        return {'test_accuracy': accuracy(predictions[n + v:], data.test_labels),
                'noisy_true_accuracy': accuracy(train_part, data.train_labels, mask),
                'memorization_accuracy': accuracy(train_part, run.noise['labels'][replica], mask)}

    rows = []
    baseline = StageTrainer(model, data.mean, data.std, stages[0], s.make_optimizer(), s.batch_size, s.strategy,
                            len(noisy))
    before = baseline.predict(baseline.lift.batch(stacked), pool)
    for k, replica in enumerate(noisy):
        rep = run.replicas[replica]
        rows.append({'data': 'none', 'noise_ratio': rep.noise_ratio, 'seed': rep.seed, 'stage': 'none',
                     **evaluate(before[k], k)})
    for dataset in s.datasets:
        for stage in stages:
            trainer = StageTrainer(model, data.mean, data.std, stage, s.make_optimizer(), s.batch_size, s.strategy,
                                   len(noisy), s.seed)
            variables, opt_state = trainer.prepare(stacked)
            for epoch in range(s.epochs):
                variables, opt_state, _ = trainer.epoch(variables, opt_state, pool, labels, index_sets[dataset],
                                                        epoch)
            predictions = trainer.predict(variables, pool)
            for k, replica in enumerate(noisy):
                rep = run.replicas[replica]
                rows.append({'data': dataset, 'noise_ratio': rep.noise_ratio, 'seed': rep.seed, 'stage': stage,
                             **evaluate(predictions[k], k)})
        log(f'  finetune on {dataset}: {len(stages)} stages done')
    out = run.directory.results_dir('finetune')
    columns = ('data', 'noise_ratio', 'seed', 'stage', 'test_accuracy', 'noisy_true_accuracy',
               'memorization_accuracy')
    write_csv(os.path.join(out, 'finetune.csv'), rows, columns)
    stage_accuracy_grid(os.path.join(run.directory.figures_dir, 'finetune.png'), rows, stages,
                        [d for d in DATASETS if d in s.datasets],
                        {'val': 'fine-tuned on the validation split',
                         'noisy_true': 'fine-tuned on $D_n^r$ with true labels'},
                        (('test_accuracy', 'test accuracy'), ('noisy_true_accuracy', '$D_n^r$ vs true labels')),
                        'Fine-tuning exactly one stage of the noisy model (P2 Fig. 6)')
    log('  finetune: results/finetune/finetune.csv, figures/finetune.png')
