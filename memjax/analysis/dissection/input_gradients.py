"""Input-gradient magnitude over training (P4 section 2, Figs. 1 and 4).

G(x) = sum_j |dL/dx_j| over the input dimensions, averaged over training
examples with each replica's own training labels, per epoch and replica
(`memjax.train.input_gradients`). Two definitions, named in every row
(`definition`, with its `units`):

- 'train_normalised' (P4's): the gradient w.r.t. the model's input, the
  normalised image (p - mean) / std, in training mode (BatchNorm batch
  statistics), over every training example;
- 'eval_pixels': w.r.t. pixels in [0, 1], in evaluation mode, over the first n
  examples. For one model and example in one mode, the pixel gradient is the
  normalised one divided by the channel's std.

P4 finds a "hunting" stage of small G before random labels are fitted. The
values come from training's record (`train.input_gradients=True`: every epoch,
in the definition `train.input_gradient_definition`) or, for runs trained
without it, from the kept checkpoints (in `definition`).

Written: results/input_gradients/input_gradients.csv (replica, noise_ratio,
seed, epoch, train_accuracy, input_gradient, definition, units, examples,
source) and figures/input_gradients.png.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar
import os

from memjax.analysis.settings import AnalysisSettings, Context, NON_NEGATIVE, setting
from memjax.errors import ConfigError
from memjax.report.dissection_plots import accuracy_and_gradient
from memjax.report.tables import write_csv
from memjax.run import Run
from memjax.rundir import read_json
from memjax.train.input_gradients import DEFINITIONS, InputGradientMeter, definition

NAME = 'input_gradients'
COLUMNS = ('replica', 'noise_ratio', 'seed', 'epoch', 'train_accuracy', 'input_gradient', 'definition', 'units',
           'examples', 'source')
OLD_RUNS_DEFINITION = 'eval_pixels'  # what runs whose config lacks train.input_gradient_definition recorded


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.input_gradients`: G per epoch and replica (P4)."""

    KEY: ClassVar[str] = 'input_gradients'
    SMOKE: ClassVar[dict] = dict(num_examples=32)

    source: str = setting('auto', 'auto: the training record if present, else checkpoints',
                          choices=('auto', 'training', 'checkpoints'))
    definition: str = setting('run', "G's definition: the run's train.input_gradient_definition, P4's "
                              '(normalised input, training mode) or pixels in [0, 1] in evaluation mode',
                              choices=('run', *DEFINITIONS))
    num_examples: int = setting(1000, 'checkpoints source: G averaged over the first n training examples (0: all)',
                                range=NON_NEGATIVE)
    epochs: tuple = setting((), 'checkpoints source: kept epochs (empty: all)', range=NON_NEGATIVE)

    def check_config(self, config) -> None:
        if self.source == 'training' and not config.train.input_gradients:
            raise ConfigError(MISSING_RECORD)


def run_definition(run: Run) -> str:
    """The definition the run's training record uses."""
    return run.config.train.get('input_gradient_definition', OLD_RUNS_DEFINITION)


def axis_label(name: str) -> str:
    """The figure's G axis: definition and units."""
    d = DEFINITIONS[name]
    space = 'normalised input' if d.space == 'normalised' else 'pixels in [0, 1]'
    mode = 'training' if d.train else 'evaluation'
    return f'G = sum |dL/dx| (x: {space}, {mode} mode)\n[{d.units}]'


MISSING_RECORD = ('analysis.input_gradients.source=training reads G from metrics.jsonl, which training records only '
                  'with train.input_gradients=True; train with --config.train.input_gradients=True (in a new '
                  '--workdir: it is part of the run), or use --config.analysis.input_gradients.source=checkpoints')


def run(run: Run, s: Settings, context: Context) -> None:
    metrics = run.directory.read_metrics()
    recorded = bool(metrics) and all('input_gradient' in r for r in metrics)
    source = ('training' if recorded else 'checkpoints') if s.source == 'auto' else s.source
    if source == 'training' and not recorded:
        raise ConfigError(MISSING_RECORD)
    name = run_definition(run) if s.definition == 'run' or source == 'training' else s.definition
    if source == 'training' and s.definition not in ('run', name):
        raise ConfigError(f"analysis.input_gradients.definition={s.definition!r}, but the run recorded G as "
                          f"{name!r} (train.input_gradient_definition); use definition=run, or "
                          "source=checkpoints to measure it anew")
    units = DEFINITIONS[name].units
    if source == 'training':
        num_train = int(read_json(run.directory.file('data.json'))['num_train'])
        examples = min(int(run.config.train.input_gradient_examples) or num_train, num_train)
        rows = [{**run.row(r['replica']), 'epoch': r['epoch'], 'train_accuracy': r['train_accuracy'],
                 'input_gradient': r['input_gradient'], 'definition': name, 'units': units, 'examples': examples,
                 'source': source} for r in metrics]
    else:
        data = run.dataset
        n = min(s.num_examples or data.num_train, data.num_train)
        batch = int(run.config.train.batch_size) if definition(name).train else 256
        meter = InputGradientMeter(run.runner, data.train_images[:n], run.noise['labels'][:, :n], name,
                                   context.lifting(len(run.replicas)), batch)
        accuracy = {(r['epoch'], r['replica']): r['train_accuracy'] for r in metrics}
        epochs = run.kept_epochs(s.epochs, 'analysis.input_gradients.epochs')
        rows = []
        bar = context.progress(len(epochs), 'input gradients over checkpoints')
        for epoch in epochs:
            for i, value in enumerate(meter(run.variables(epoch))):
                rows.append({**run.row(i), 'epoch': epoch, 'train_accuracy': accuracy.get((epoch, i)),
                             'input_gradient': float(value), 'definition': name, 'units': units, 'examples': n,
                             'source': source})
            bar.update(1)
        bar.close()
    write_csv(os.path.join(context.output, 'input_gradients.csv'), rows, COLUMNS)
    accuracy_and_gradient(os.path.join(context.figures, 'input_gradients.png'), rows,
                          f'Training accuracy and input-gradient magnitude (P4 Figs. 1/4), {run.model.name}, '
                          f'from {source}', axis_label(name))
    context.log(f'  input_gradients ({source}, {name}): results/input_gradients/input_gradients.csv, '
                'figures/input_gradients.png')
