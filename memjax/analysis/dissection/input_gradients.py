"""Input-gradient magnitude over training (P4 section 2, Figs. 1 and 4).

G(x) = sum_j |dL/dx_j| over the input dimensions (pixels in [0, 1], see
`memjax.train.input_gradients`), averaged over a fixed set of training
examples (the first n) with each replica's own training labels, per epoch and
replica. P4 finds a "hunting" stage of small G before random labels are fitted.
The values come from training's record (`train.input_gradients=True`: every
epoch) or, for runs trained without it, from the kept checkpoints.

Written: results/input_gradients/input_gradients.csv (replica, noise_ratio,
seed, epoch, train_accuracy, input_gradient, source) and figures/input_gradients.png.
"""

from __future__ import annotations

import dataclasses
import os

from memjax.analysis.settings import AnalysisSettings, Context, setting
from memjax.errors import ConfigError
from memjax.report.dissection_plots import accuracy_and_gradient
from memjax.report.tables import write_csv
from memjax.run import Run
from memjax.train.input_gradients import InputGradientMeter

NAME = 'input_gradients'
COLUMNS = ('replica', 'noise_ratio', 'seed', 'epoch', 'train_accuracy', 'input_gradient', 'source')


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.input_gradients`: G per epoch and replica (P4)."""

    source: str = setting('auto', 'auto: the training record if present, else checkpoints',
                          choices=('auto', 'training', 'checkpoints'))
    num_examples: int = setting(1000, 'checkpoints source: G averaged over the first n training examples')
    epochs: tuple = setting((), 'checkpoints source: kept epochs (empty: all)')

    def validate(self) -> None:
        self.positive('num_examples')

    def check_config(self, config) -> None:
        if self.source == 'training' and not config.train.input_gradients:
            raise ConfigError(MISSING_RECORD)


MISSING_RECORD = ('analysis.input_gradients.source=training reads G from metrics.jsonl, which training records only '
                  'with train.input_gradients=True; train with --config.train.input_gradients=True (in a new '
                  '--workdir: it is part of the run), or use --config.analysis.input_gradients.source=checkpoints')


def run(run: Run, s: Settings, context: Context) -> None:
    metrics = run.directory.read_metrics()
    recorded = bool(metrics) and all('input_gradient' in r for r in metrics)
    source = ('training' if recorded else 'checkpoints') if s.source == 'auto' else s.source
    if source == 'training' and not recorded:
        raise ConfigError(MISSING_RECORD)
    if source == 'training':
        rows = [{**run.row(r['replica']), 'epoch': r['epoch'], 'train_accuracy': r['train_accuracy'],
                 'input_gradient': r['input_gradient'], 'source': source} for r in metrics]
    else:
        data = run.dataset
        n = min(s.num_examples, data.num_train)
        meter = InputGradientMeter(run.model, data.mean, data.std, data.train_images[:n], run.noise['labels'][:, :n])
        accuracy = {(r['epoch'], r['replica']): r['train_accuracy'] for r in metrics}
        epochs = run.kept_epochs(s.epochs, 'analysis.input_gradients.epochs')
        rows = []
        bar = context.progress(len(epochs), 'input gradients over checkpoints')
        for epoch in epochs:
            for i, value in enumerate(meter(run.variables(epoch))):
                rows.append({**run.row(i), 'epoch': epoch, 'train_accuracy': accuracy.get((epoch, i)),
                             'input_gradient': float(value), 'source': source})
            bar.update(1)
        bar.close()
    write_csv(os.path.join(context.output, 'input_gradients.csv'), rows, COLUMNS)
    accuracy_and_gradient(os.path.join(context.figures, 'input_gradients.png'), rows,
                          f'Training accuracy and input-gradient magnitude (P4 Figs. 1/4), {run.model.name}, '
                          f'from {source}')
    context.log(f'  input_gradients ({source}): results/input_gradients/input_gradients.csv, '
                'figures/input_gradients.png')
