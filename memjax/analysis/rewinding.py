"""Layer rewinding (P3 section 5.1, Fig. 3; P5's last-layers claim).

In every replica's final model, replace ONE stage, its params AND its
BatchNorm statistics (P3's public code forgets the statistics), with its state
at kept epoch t (0 = initialisation), for every stage and every t; evaluate
clean training accuracy, memorization accuracy (noisy examples against their
noisy labels), noisy examples against their true labels, and test accuracy.
With `last_k`, also rewind the last k stages together for k = 1 .. L-1 (P5:
rewinding the final layers to an early epoch restores generalization).

Written: results/rewinding/rewinding.csv (mode, stage or k, epoch, replica,
accuracies) and figures/rewinding_r<r>.png (heatmaps stage x epoch of clean and
memorization accuracy, P3 Fig. 3) and figures/rewinding_last_k.png.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax.numpy as jnp
import numpy as np

from memjax.analysis.evaluation import Evaluator, training_metrics
from memjax.analysis.settings import AnalysisSettings
from memjax.errors import ConfigError
from memjax.report import p3_plots
from memjax.report.tables import write_csv
from memjax.run import open_run


@dataclasses.dataclass(frozen=True)
class RewindSettings(AnalysisSettings):
    epochs: tuple = ()          # kept epochs to rewind to (empty: all)
    num_train: int | None = None  # training examples evaluated (None: all)
    num_test: int | None = None
    last_k: bool = True
    strategy: str = 'loop'



def rewound(model, final: dict, past: dict, stages) -> dict:
    """`final` with the given stages' params and batch_stats taken from `past` (any leading axes)."""
    out = final
    for stage in stages:
        out = model.replace_stage(out, stage, model.stage_variables(past, stage))
    return out


def run_rewinding(workdir: str, analysis, log: Callable[[str], None] = print) -> None:
    run = open_run(workdir)
    s = RewindSettings.from_config(analysis.get('rewinding'))
    model, data = run.model, run.dataset
    kept = run.epochs()
    epochs = [e for e in kept if not s.epochs or e in s.epochs]
    if s.epochs and len(epochs) != len(s.epochs):
        raise ConfigError(f"analysis.rewinding.epochs={tuple(s.epochs)} asks for epochs that were not kept; "
                          f"kept: {kept}")
    n = min(s.num_train or data.num_train, data.num_train)
    m = min(s.num_test or data.test_labels.size, data.test_labels.size)
    images = jnp.asarray(np.concatenate([data.train_images[:n], data.test_images[:m]]))
    noise = run.noise
    evaluator = Evaluator(model, data.mean, data.std, s.strategy, len(run.replicas))
    final = run.checkpoints.load_epoch(kept[-1])
    stages = model.stage_names
    log(f'rewinding: {len(stages)} stages x {len(epochs)} epochs x {len(run.replicas)} replicas on {n} train '
        f'+ {m} test examples' + (f', and the last k stages for k = 1..{len(stages) - 1}' if s.last_k else ''))

    def rows_for(variables, mode: str, what: str, epoch: int) -> list[dict]:
        predictions = evaluator.predict(variables, images)
        out = []
        for rep in run.replicas:
            i = rep.index
            metrics = training_metrics(predictions[i, :n], noise['labels'][i, :n], noise['true_labels'][:n],
                                       noise['noise_mask'][i, :n], predictions[i, n:], data.test_labels[:m])
            out.append({'mode': mode, 'stage': what, 'epoch': epoch, 'replica': i, 'noise_ratio': rep.noise_ratio,
                        'seed': rep.seed, **metrics})
        return out

    rows = rows_for(final, 'none', 'none', kept[-1])
    for t, epoch in enumerate(epochs):
        past = run.checkpoints.load_epoch(epoch)
        for stage in stages:
            rows += rows_for(rewound(model, final, past, [stage]), 'single', stage, epoch)
        if s.last_k:
            for k in range(1, len(stages)):
                rows += rows_for(rewound(model, final, past, stages[-k:]), 'last_k', str(k), epoch)
        if (t + 1) % max(1, len(epochs) // 4) == 0 or t + 1 == len(epochs):
            log(f'  rewinding: {t + 1}/{len(epochs)} epochs')
    out = run.directory.results_dir('rewinding')
    columns = ('mode', 'stage', 'epoch', 'replica', 'noise_ratio', 'seed', 'clean_accuracy', 'memorization_accuracy',
               'noisy_true_accuracy', 'train_accuracy', 'test_accuracy')
    write_csv(os.path.join(out, 'rewinding.csv'), rows, columns)
    figures = run.directory.figures_dir
    for ratio in sorted({r.noise_ratio for r in run.replicas}):
        p3_plots.rewinding_heatmaps(os.path.join(figures, f'rewinding_r{ratio:g}.png'),
                                    [r for r in rows if r['noise_ratio'] == ratio], stages, epochs, ratio)
    if s.last_k:
        p3_plots.rewinding_last_k(os.path.join(figures, 'rewinding_last_k.png'), rows, len(stages), epochs)
    log('  rewinding: results/rewinding/rewinding.csv, figures/rewinding_r*.png, rewinding_last_k.png')
