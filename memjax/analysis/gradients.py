"""Gradient accounting (P3 section 4, Figs. 1-2), per stage, clean against noisy examples.

The training loss over a set S of examples, L = (1/|S|) sum_i l_i, splits into
its clean and noisy parts, L = L_c + L_n with L_c = (1/|S|) sum_{i clean} l_i,
so grad L = g_c + g_n exactly. For every stage l (params theta_l):

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
  epoch's updates) and written to gradients.jsonl in the run directory;
- from checkpoints (the `gradients` analysis): the full-training-set gradient
  at each kept epoch, for all replicas.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp

from memjax.analysis.settings import AnalysisSettings
from memjax.data.pipeline import normalize
from memjax.report import p3_plots
from memjax.report.tables import write_csv
from memjax.run import open_run
from memjax.train.gradient_split import rows_from_statistics, split_gradients, stage_statistics
from memjax.train.strategies import Lifted

COLUMNS = ('epoch', 'replica', 'noise_ratio', 'seed', 'stage', 'clean_norm', 'noisy_norm', 'total_norm', 'cosine')


@dataclasses.dataclass(frozen=True)
class GradientSettings(AnalysisSettings):
    source: str = 'auto'        # auto | training | checkpoints
    epochs: tuple = ()          # kept epochs (checkpoints source; empty: all)
    num_train: int | None = None  # examples of the training set (checkpoints source; None: all)
    batch_size: int = 256
    strategy: str = 'loop'



def gradients_from_checkpoints(run, s: GradientSettings, log: Callable[[str], None]) -> list[dict]:
    model, data = run.model, run.dataset
    n = min(s.num_train or data.num_train, data.num_train)
    steps = n // s.batch_size
    n = steps * s.batch_size
    images = jnp.asarray(data.train_images[:n])
    labels = run.noise['labels'][:, :n]
    noisy = run.noise['noise_mask'][:, :n]
    mean, std = jnp.asarray(data.mean), jnp.asarray(data.std)
    lift = Lifted(s.strategy, len(run.replicas))

    def batch_part(variables, x, y, mask):
        g_c, g_n, _, _ = split_gradients(model, variables, normalize(x, mean, std, model.dtype), y, mask, 1.0 / n)
        return g_c, g_n

    kept = run.epochs()
    epochs = [e for e in kept if not s.epochs or e in s.epochs]
    rows = []
    for t, epoch in enumerate(epochs):
        variables = lift.batch(jax.tree_util.tree_map(jnp.asarray, run.checkpoints.load_epoch(epoch)))
        sums = None
        for b in range(steps):
            sl = slice(b * s.batch_size, (b + 1) * s.batch_size)
            part = lift(batch_part, (True, False, True, True), variables, images[sl],
                        lift.batch(jnp.asarray(labels[:, sl])), lift.batch(jnp.asarray(noisy[:, sl])), outputs=2)
            sums = part if sums is None else jax.tree_util.tree_map(jnp.add, sums, part)
        g_c, g_n = (lift.unbatch(x) for x in sums)
        statistics = jax.vmap(stage_statistics)(g_c, g_n)
        rows += rows_from_statistics(statistics, epoch, run.replicas)
        if (t + 1) % max(1, len(epochs) // 4) == 0 or t + 1 == len(epochs):
            log(f'  gradients: {t + 1}/{len(epochs)} checkpoints')
    return rows


def run_gradients(workdir: str, analysis, log: Callable[[str], None] = print) -> None:
    run = open_run(workdir)
    s = GradientSettings.from_config(analysis.get('gradients'))
    record = run.directory.file('gradients.jsonl')
    source = s.source
    if source == 'auto':
        source = 'training' if os.path.exists(record) else 'checkpoints'
    log(f'gradients: clean vs noisy gradient per stage, from {source}')
    if source == 'training':
        with open(record) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        rows = gradients_from_checkpoints(run, s, log)
    out = run.directory.results_dir('gradients')
    write_csv(os.path.join(out, f'gradients_{source}.csv'), rows, COLUMNS)
    for ratio in sorted({r.noise_ratio for r in run.replicas if r.noise_ratio > 0}):
        p3_plots.gradient_accounting(os.path.join(run.directory.figures_dir, f'gradients_r{ratio:g}.png'),
                                     [r for r in rows if r['noise_ratio'] == ratio], run.model.stage_names, ratio)
    log(f'  gradients: results/gradients/gradients_{source}.csv, figures/gradients_r*.png')
