"""Stage x stage CKA heatmaps between two (replica, checkpoint) models.

Config `analysis.cka_matrix.pairs`: a tuple of pairs ((r_a, seed_a, epoch_a),
(r_b, seed_b, epoch_b)); epoch -1 means the final checkpoint. With no pairs,
every replica's final model is compared with the final clean (r = 0) model of
its seed. Settings of the estimator come from `analysis.cka`.

Output per pair: `results/cka_matrix/<a>__<b>.npz` (cka [La, Lb], stage names)
and `.csv`, and `figures/cka_matrix_<a>__<b>.png`.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import numpy as np

from memjax.analysis.cka import MinibatchCKA
from memjax.analysis.representations import CkaSettings, GramMaker, split_examples
from memjax.errors import ConfigError
from memjax.report import plots
from memjax.report.tables import write_csv
from memjax.run import Run, open_run


def _model_key(run: Run, spec) -> tuple[int, int]:
    ratio, seed, epoch = float(spec[0]), int(spec[1]), int(spec[2])
    try:
        replica = run.replica_index(ratio, seed)
    except KeyError:
        raise ConfigError(f"analysis.cka_matrix.pairs names replica r={ratio:g}, seed={seed}, which this run "
                          f"does not have; replicas: {', '.join(r.name for r in run.replicas)}") from None
    epochs = run.epochs()
    epoch = epochs[-1] if epoch < 0 else epoch
    if epoch not in epochs:
        raise ConfigError(f"analysis.cka_matrix.pairs asks for epoch {epoch}, not kept; kept: {epochs}")
    return replica, epoch


def default_pairs(run: Run) -> list[tuple]:
    pairs = []
    for rep in run.replicas:
        clean = [r for r in run.replicas if r.noise_ratio == 0.0 and r.seed == rep.seed]
        if clean:
            pairs.append(((0.0, rep.seed, -1), (rep.noise_ratio, rep.seed, -1)))
    if not pairs:
        raise ConfigError('cka_matrix has no clean (r = 0) replica to compare with; set '
                          'analysis.cka_matrix.pairs, e.g. "(((0.2, 0, -1), (0.5, 0, -1)),)"')
    return pairs


def cka_matrix(run: Run, settings: CkaSettings, a: tuple[int, int], b: tuple[int, int]) -> np.ndarray:
    """CKA [L, L] between all stages of model a and all stages of model b ((replica, epoch) each)."""
    maker = GramMaker(run.model, run.dataset.mean, run.dataset.std, settings)
    images, _ = split_examples(run, settings.split, settings.num_examples)
    accumulator = MinibatchCKA(debiased=settings.debiased)
    grams = []
    for replica, epoch in (a, b):
        variables = jax.tree_util.tree_map(lambda x: x[replica], run.checkpoints.load_epoch(epoch))
        grams.append(maker.grams(variables, images))
    for ga, gb in zip(*grams):
        accumulator.update(ga, gb)
    return np.asarray(accumulator.result()), maker.stages


def run_cka_matrix(workdir: str, analysis, log: Callable[[str], None] = print) -> None:
    """analysis: the `config.analysis` node (uses `cka` and `cka_matrix.pairs`)."""
    run = open_run(workdir)
    settings = CkaSettings.from_config(analysis.get('cka'))
    node = analysis.get('cka_matrix') or {}
    pairs = list(node.get('pairs', ()) or ()) or default_pairs(run)
    out = run.directory.results_dir('cka_matrix')
    for spec_a, spec_b in pairs:
        a, b = _model_key(run, spec_a), _model_key(run, spec_b)
        matrix, stages = cka_matrix(run, settings, a, b)
        name = lambda key: f'r{run.replicas[key[0]].noise_ratio:g}_s{run.replicas[key[0]].seed}_e{key[1]}'
        stem = f'{name(a)}__{name(b)}'
        np.savez(os.path.join(out, f'{stem}.npz'), cka=matrix, stages=np.asarray(stages))
        rows = [{'stage_a': sa, 'stage_b': sb, 'cka': float(matrix[i, j])}
                for i, sa in enumerate(stages) for j, sb in enumerate(stages)]
        write_csv(os.path.join(out, f'{stem}.csv'), rows, ('stage_a', 'stage_b', 'cka'))
        label = lambda key: f'r={run.replicas[key[0]].noise_ratio:g}, seed {run.replicas[key[0]].seed}, epoch {key[1]}'
        plots.heatmap(os.path.join(run.directory.figures_dir, f'cka_matrix_{stem}.png'), matrix, stages, stages,
                      f'{settings.estimator} CKA, {run.config.model.name}', label(a), label(b))
        log(f'  cka_matrix {label(a)} vs {label(b)}: results/cka_matrix/{stem}.npz')
