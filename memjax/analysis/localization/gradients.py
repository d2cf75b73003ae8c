"""Gradient accounting (P3 section 4, Figs. 1-2), per unit (P3's layer groups by default), clean against noisy.

The training loss over a set S of examples, L = (1/|S|) sum_i l_i, splits into
its clean and noisy parts, L = L_c + L_n with L_c = (1/|S|) sum_{i clean} l_i,
so grad L = g_c + g_n exactly. For every unit l (params theta_l; `granularity`,
see `memjax.analysis.localization.layer_groups`):

- clean_norm = ||g_c restricted to theta_l|| / sqrt(#theta_l), noisy_norm likewise;
- cosine = cos(g_c, g_n) on theta_l (the mean clean and mean noisy gradients
  differ from g_c, g_n only by positive factors, so this is the paper's
  cosine between the average gradients).

One forward pass and two vector-Jacobian products (one per part) give both.
The gradient is taken in training mode (BatchNorm batch statistics), as in a
training step, without touching the running statistics.

Two ways to get the numbers:
- during training (`train.gradient_accounting=True`): g_c and g_n of every
  step are summed over the epoch (the contribution each part made to that
  epoch's updates) and written to gradients.jsonl in the run directory, one
  row per parameter tensor;
- from checkpoints (the `gradients` analysis): the full-training-set gradient
  at each kept epoch (not the paper's quantity, which is the epoch's SGD
  gradients; for runs trained without accounting).

Every row carries `source` ('training' or 'checkpoints'), and the figure's
title names it. A replica that stopped training (train.stop_accuracy) writes
no rows for the epochs after it stopped, under either source.

P3 Fig. 1 averages the per-epoch numbers over a window of epochs (15-20 in
its caption; its plotter takes entries [15:20] of the per-epoch list, the
16th to 20th training epochs); the appendix figures average over all epochs.
`window=(first, last)` (inclusive, in the rows' epoch numbers: epoch t of the
training record is the t-th training epoch) picks the epochs averaged in the
figure's middle panel and in gradients_<source>_window.csv; () takes all.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from memjax.analysis.settings import AT_LEAST_1, AnalysisSettings, Context, NON_NEGATIVE, setting
from memjax.report import p3_plots
from memjax.report.tables import write_csv
from memjax.run import Run
from memjax.analysis.localization.layer_groups import chosen_units, granularity_setting
from memjax.engine.lifting import lift, stacked
from memjax.engine.runner import ModelRunner
from memjax.models import StagedModel
from memjax.errors import ConfigError, RunDirectoryError
from memjax.train.gradient_split import AGGREGATES, rows_from_sums, split_gradients, tensor_sums, unit_rows

NAME = 'gradients'

COLUMNS = ('epoch', 'source', 'replica', 'noise_ratio', 'seed', 'granularity', 'aggregate', 'unit', 'clean_norm', 'noisy_norm',
           'total_norm', 'cosine')
WINDOW_COLUMNS = ('window', 'epochs', 'source', 'replica', 'noise_ratio', 'seed', 'granularity', 'aggregate', 'unit',
                  'clean_norm', 'noisy_norm', 'total_norm', 'cosine')
MEASURES = ('clean_norm', 'noisy_norm', 'total_norm', 'cosine')


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.gradients`: clean vs noisy gradient parts per unit (P3 section 4)."""

    KEY: ClassVar[str] = 'gradients'
    SMOKE: ClassVar[dict] = dict(num_train=64, batch_size=32, window=lambda node, config: (
        (min(node.window[0], config.train.epochs), min(node.window[1], config.train.epochs)) if node.window else ()))

    granularity: str = granularity_setting()
    aggregate: str = setting('tensor_mean', "a unit's numbers: the mean over its parameter tensors of each one's "
                             'normalised norms and cosine (P3), or its parameters as one vector', choices=AGGREGATES)
    source: str = setting('auto', 'auto: the training record if present', choices=('auto', 'training', 'checkpoints'))
    window: tuple = setting((), '(first, last) epochs, inclusive, averaged in the figure and the window CSV (P3 '
                            'Fig. 1: the 16th-20th epochs, (16, 20)); empty: all', range=NON_NEGATIVE)
    epochs: tuple = setting((), 'kept epochs (checkpoints source; empty: all)', range=NON_NEGATIVE)
    num_train: int | None = setting(None, 'training examples used (checkpoints source; None: all)', range=AT_LEAST_1)
    batch_size: int = setting(256, 'examples per gradient batch (checkpoints source)', range=AT_LEAST_1)

    def validate(self) -> None:
        w = self.window
        if w and not (len(w) == 2 and all(isinstance(e, int) and e >= 0 for e in w) and w[0] <= w[1]):
            raise ConfigError(f'analysis.gradients.window={w!r} must be () or (first, last) epochs with '
                              'first <= last, e.g. (16, 20)')

    def check_config(self, config) -> None:
        if self.source == 'training' and not config.train.gradient_accounting:
            raise ConfigError(missing_record(self.KEY))


def window_label(window: tuple) -> str:
    return f'epochs {window[0]}-{window[1]}' if window else 'all epochs'


def window_rows(rows: list[dict], window: tuple) -> list[dict]:
    """Per (replica, unit): the mean of each measure over the rows whose epoch lies in `window` (inclusive;
    () = all), with the epochs averaged named."""
    chosen = [r for r in rows if not window or window[0] <= r['epoch'] <= window[1]]
    groups: dict[tuple, list[dict]] = {}
    for r in chosen:
        groups.setdefault((r['replica'], r['unit']), []).append(r)
    out = []
    for members in groups.values():
        first, epochs = members[0], sorted({m['epoch'] for m in members})
        out.append({'window': window_label(window), 'epochs': f'{epochs[0]}-{epochs[-1]} ({len(epochs)})',
                    **{k: first[k] for k in ('source', 'replica', 'noise_ratio', 'seed', 'granularity', 'aggregate',
                                             'unit')},
                    **{k: float(np.mean([m[k] for m in members])) for k in MEASURES}})
    return out



def missing_record(key: str) -> str:
    return (f'analysis.{key}.source=training reads the gradient record (gradients.jsonl), which training writes '
            'only with train.gradient_accounting=True; train with --config.train.gradient_accounting=True (in a new '
            f'--workdir: it is part of the run), or use --config.analysis.{key}.source=checkpoints')


@dataclasses.dataclass(frozen=True)
class BatchParts:
    """One replica's clean and noisy gradient parts of one batch, each example weighted 1 / n (lifted)."""

    runner: ModelRunner
    n: int

    def __call__(self, variables, x, y, mask):
        g_c, g_n, _, _ = split_gradients(self.runner.model, variables, self.runner.normalize(x), y, mask, 1.0 / self.n)
        return g_c, g_n


@dataclasses.dataclass(frozen=True)
class TensorSums:
    """One replica's {(layer, tensor): sums} from its summed parts (lifted)."""

    model: StagedModel

    def __call__(self, g_c, g_n):
        return tensor_sums(self.model, g_c, g_n)


def gradients_from_checkpoints(run: Run, s: Settings, context: Context) -> list[dict]:
    model, data = run.model, run.dataset
    n = min(s.num_train or data.num_train, data.num_train)
    steps = n // s.batch_size
    n = steps * s.batch_size
    images = jnp.asarray(data.train_images[:n])
    labels = run.noise['labels'][:, :n]
    noisy = run.noise['noise_mask'][:, :n]
    lifting = context.lifting(len(run.replicas))
    batch_part = lift(BatchParts(run.runner, n), ('variables', 'y', 'mask'), lifting)
    summarise = lift(TensorSums(model), ('g_c', 'g_n'), lifting)

    epochs = run.kept_epochs(s.epochs, 'analysis.gradients.epochs')
    stopped = [int(e) for e in run.directory.status().get('converged_epoch') or [-1] * len(run.replicas)]
    rows = []
    bar = context.progress(len(epochs), 'gradients over checkpoints')
    for epoch in epochs:
        variables = run.variables(epoch)
        sums = None
        for b in range(steps):
            sl = slice(b * s.batch_size, (b + 1) * s.batch_size)
            part = stacked(batch_part(variables=variables, x=images[sl], y=jnp.asarray(labels[:, sl]),
                                      mask=jnp.asarray(noisy[:, sl])))
            sums = part if sums is None else jax.tree_util.tree_map(jnp.add, sums, part)
        g_c, g_n = sums
        sums = stacked(summarise(g_c=g_c, g_n=g_n))
        include = [stop < 0 or epoch <= stop for stop in stopped]
        rows += rows_from_sums(sums, epoch, run.replicas, include)
        bar.update(1)
    bar.close()
    return rows


def run(run: Run, s: Settings, context: Context) -> None:
    log = context.log
    record = run.directory.file('gradients.jsonl')
    source = s.source
    if source == 'auto':
        source = 'training' if os.path.exists(record) else 'checkpoints'
    units = chosen_units(run.model, s.granularity)
    log(f'gradients: clean vs noisy gradient per unit ({s.granularity}: {len(units)} units), from {source}')
    if source == 'training':
        if not os.path.exists(record):
            raise RunDirectoryError(missing_record(s.KEY))
        with open(record) as f:
            tensor_rows = [json.loads(line) for line in f if line.strip()]
        if tensor_rows and 'tensor' not in tensor_rows[0]:
            raise RunDirectoryError(f'{record} was written per stage or layer by an older memjax; rerun with '
                                    '--config.analysis.gradients.source=checkpoints')
    else:
        tensor_rows = gradients_from_checkpoints(run, s, context)
    rows = unit_rows(tensor_rows, units, s.granularity, source, s.aggregate)
    averaged = window_rows(rows, s.window)
    if rows and not averaged:
        raise ConfigError(f"analysis.gradients.window={s.window!r} holds none of the recorded epochs "
                          f"({min(r['epoch'] for r in rows)}..{max(r['epoch'] for r in rows)}); pick epochs in "
                          'that range or () for all')
    out = context.output
    write_csv(os.path.join(out, f'gradients_{source}.csv'), rows, COLUMNS)
    write_csv(os.path.join(out, f'gradients_{source}_window.csv'), averaged, WINDOW_COLUMNS)
    for ratio in sorted({r.noise_ratio for r in run.replicas if r.noise_ratio > 0}):
        p3_plots.gradient_accounting(os.path.join(context.figures, f'gradients_r{ratio:g}.png'),
                                     [r for r in rows if r['noise_ratio'] == ratio], [u.name for u in units],
                                     ratio, source, [r for r in averaged if r['noise_ratio'] == ratio],
                                     window_label(s.window))
    log(f'  gradients: results/gradients/gradients_{source}.csv, gradients_{source}_window.csv '
        f'({window_label(s.window)}), figures/gradients_r*.png')
