"""Layer retraining (P3 section 5.2, Fig. 4).

For every noisy replica and every stage: reset that stage (params and
BatchNorm statistics) to its initial state (the epoch-0 checkpoint), then
train ONLY that stage on the replica's CLEAN examples, every other stage
frozen through the optimizer (`memjax.analysis.stage_training`), with SGD and
a one-cycle schedule (20 epochs, peak 0.1 at epoch 10 by default, as P3).
The retrained stage's BatchNorm statistics update; no other stage's do.
After every epoch: clean training accuracy, memorization accuracy (noisy
examples against their noisy labels: can the network still predict them
without having trained on them?), noisy examples against the true labels, and
test accuracy.

Written: results/retraining/retraining.csv and figures/retraining.png.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax.analysis.evaluation import training_metrics
from memjax.analysis.stage_training import StageTrainer
from memjax.analysis.representations import resolve_stages
from memjax.analysis.settings import AnalysisSettings
from memjax.errors import ConfigError
from memjax.report import p3_plots
from memjax.report.tables import write_csv
from memjax.run import open_run
from memjax.train.schedules import one_cycle


@dataclasses.dataclass(frozen=True)
class RetrainSettings(AnalysisSettings):
    epochs: int = 20
    peak_epoch: float = 10.0
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    stages: tuple = ()
    num_train: int | None = None   # training examples evaluated each epoch (None: all)
    strategy: str = 'loop'
    seed: int = 0


    def optimizer(self, steps_per_epoch: int) -> optax.GradientTransformation:
        schedule = one_cycle(self.learning_rate, self.peak_epoch * steps_per_epoch, self.epochs * steps_per_epoch)
        return optax.chain(optax.add_decayed_weights(self.weight_decay),
                           optax.sgd(schedule, momentum=self.momentum or None))


def run_retraining(workdir: str, analysis, log: Callable[[str], None] = print) -> None:
    run = open_run(workdir)
    s = RetrainSettings.from_config(analysis.get('retraining'))
    model, data = run.model, run.dataset
    noisy = [r.index for r in run.noisy_replicas('retraining')]
    stages = list(resolve_stages(model, s.stages))
    n_eval = min(s.num_train or data.num_train, data.num_train)
    pool = jnp.asarray(np.concatenate([data.train_images, data.test_images]))
    eval_images = jnp.asarray(np.concatenate([data.train_images[:n_eval], data.test_images]))
    labels = jnp.asarray(np.concatenate([run.noise['labels'][noisy],
                                         np.broadcast_to(data.test_labels, (len(noisy), data.test_labels.size))],
                                        axis=1))
    masks = run.noise['noise_mask'][noisy]
    clean_sets = [np.flatnonzero(~m) for m in masks]
    steps_per_epoch = max(len(c) for c in clean_sets) // s.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"analysis.retraining.batch_size={s.batch_size} is larger than the clean training set")
    final = run.checkpoints.load_epoch(run.final_epoch())
    initial = run.checkpoints.load_epoch(0)
    take = lambda tree: jax.tree_util.tree_map(lambda x: jnp.asarray(x[np.asarray(noisy)]), tree)
    final, initial = take(final), take(initial)
    log(f'retraining: {len(stages)} stages x {len(noisy)} noisy replicas, {s.epochs} epochs on clean examples each')

    rows = []
    for stage in stages:
        trainer = StageTrainer(model, data.mean, data.std, stage, s.optimizer(steps_per_epoch), s.batch_size,
                               s.strategy, len(noisy), s.seed)
        start = model.replace_stage(final, stage, model.stage_variables(initial, stage))
        variables, opt_state = trainer.prepare(start)
        for epoch in range(s.epochs + 1):
            if epoch > 0:
                variables, opt_state, _ = trainer.epoch(variables, opt_state, pool, labels, clean_sets, epoch)
            predictions = trainer.predict(variables, eval_images)
            for k, i in enumerate(noisy):
                rep = run.replicas[i]
                metrics = training_metrics(predictions[k, :n_eval], run.noise['labels'][i, :n_eval],
                                           run.noise['true_labels'][:n_eval], masks[k, :n_eval],
                                           predictions[k, n_eval:], data.test_labels)
                rows.append({'stage': stage, 'epoch': epoch, 'replica': i, 'noise_ratio': rep.noise_ratio,
                             'seed': rep.seed, **metrics})
        log(f'  retraining {stage}: clean {rows[-1]["clean_accuracy"]:.3f}, '
            f'memorization {rows[-1]["memorization_accuracy"]:.3f} after {s.epochs} epochs')
    out = run.directory.results_dir('retraining')
    write_csv(os.path.join(out, 'retraining.csv'), rows,
              ('stage', 'epoch', 'replica', 'noise_ratio', 'seed', 'clean_accuracy', 'memorization_accuracy',
               'noisy_true_accuracy', 'train_accuracy', 'test_accuracy'))
    p3_plots.retraining_curves(os.path.join(run.directory.figures_dir, 'retraining.png'), rows, stages)
    log('  retraining: results/retraining/retraining.csv, figures/retraining.png')
