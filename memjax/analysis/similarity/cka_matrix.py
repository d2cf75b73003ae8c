"""CKA heatmaps (P1 Fig. 3 style): every unit of model A against every unit of model B.

Units are stages or layers (`analysis.cka.granularity`). Models are
(replica, kept epoch) pairs, by default each noisy replica's final checkpoint
against the final clean replica of its seed. Written:
results/cka_matrix/<a>__<b>.npz (cka [L, L], stages [L] = unit names,
granularity, estimator, minibatch_size: 0 = full batch; and with full-batch
Grams cka_debiased [L, L], the debiased value from the same Grams),
<a>__<b>.csv (granularity, stage_a, stage_b, cka[, cka_debiased]) and
figures/cka_matrix_<a>__<b>.png. Representation settings: `analysis.cka`.
Memory: the two models' Grams (see `representations`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar
import os

import numpy as np

from memjax.analysis.settings import AnalysisSettings, Context, setting
from memjax.analysis.similarity.representations import (CkaSettings, GramMaker, block_ends, check_memory, compare,
                                                         split_images)
from memjax.errors import ConfigError
from memjax.report import plots
from memjax.report.tables import write_csv
from memjax.run import Run

NAME = 'cka_matrix'
USES = ('cka',)


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.cka_matrix`: which model pairs are compared."""

    KEY: ClassVar[str] = 'cka_matrix'

    pairs: tuple = setting((), '(((r_a, seed_a, epoch_a), (r_b, seed_b, epoch_b)), ...); epoch -1 = final; '
                               'empty: each noisy replica vs its clean partner',
                    range="((r, seed, epoch), (r, seed, epoch)) pairs of the run's replicas")

    def validate(self) -> None:
        for pair in self.pairs:
            if len(pair) != 2 or any(len(spec) != 3 for spec in pair):
                raise ConfigError(f"analysis.cka_matrix.pairs has {pair!r}; each pair is "
                                  "((r_a, seed_a, epoch_a), (r_b, seed_b, epoch_b))")

    def check_data(self, data) -> None:
        replicas = set(zip(data.noise_ratios, data.seeds))
        for pair in self.pairs:
            for ratio, seed, _ in pair:
                if not any(abs(ratio - r) < 1e-9 and seed == s for r, s in replicas):
                    raise self.error('pairs', f"names replica r={ratio:g}, seed={seed}, which this run does not "
                                     f"have; its replicas: {', '.join(f'(r={r:g}, seed={s})' for r, s in replicas)}")


def _model_key(run: Run, spec) -> tuple[int, int]:
    ratio, seed, epoch = float(spec[0]), int(spec[1]), int(spec[2])
    try:
        replica = run.replica_index(ratio, seed)
    except KeyError:
        raise ConfigError(f"analysis.cka_matrix.pairs names replica r={ratio:g}, seed={seed}, which this run "
                          f"does not have; replicas: {', '.join(r.name for r in run.replicas)}") from None
    epoch = run.final_epoch() if epoch < 0 else epoch
    run.kept_epochs((epoch,), 'analysis.cka_matrix.pairs')
    return replica, epoch


def default_pairs(run: Run) -> list[tuple]:
    """Each replica's final checkpoint against the final clean replica of its seed."""
    clean_seeds = {r.seed for r in run.replicas if r.noise_ratio == 0.0}
    pairs = [((0.0, rep.seed, -1), (rep.noise_ratio, rep.seed, -1)) for rep in run.replicas
             if rep.seed in clean_seeds]
    if not pairs:
        raise ConfigError('cka_matrix has no clean (r = 0) replica to compare with; set '
                          'analysis.cka_matrix.pairs, e.g. "(((0.2, 0, -1), (0.5, 0, -1)),)"')
    return pairs


def cka_matrices(run: Run, settings: CkaSettings, pairs: list[tuple], log=lambda _: None):
    """For each pair (a, b) of (replica, epoch) models, in the order given: (a, b, {'cka': [L, L]} (plus
    'cka_debiased' [L, L] in full batch) between all units of model a (rows) and of model b (columns),
    unit names [L]). Two models' Grams are held; a model shared by consecutive pairs is formed once."""
    maker = GramMaker(run.runner, settings)
    images = split_images(run, settings)
    check_memory(maker, 2, images.shape[1:], log)
    held: dict[tuple, list] = {}
    for a, b in pairs:
        for key in [key for key in held if key not in (a, b)]:
            del held[key]  # frees its Grams before the next are formed
        for replica, epoch in (a, b):
            if (replica, epoch) not in held:
                held[(replica, epoch)] = maker.grams(run.replica_variables(epoch, replica), images)
        yield a, b, compare(held[a], held[b], settings), maker.names


def run(run: Run, settings: Settings, context: Context) -> None:
    cka_settings = context.shared['cka']
    specs = list(settings.pairs) or default_pairs(run)
    pairs = sorted([(_model_key(run, spec_a), _model_key(run, spec_b)) for spec_a, spec_b in specs],
                   key=lambda pair: pair[0])  # pairs that share model a run one after another
    for a, b, values, stages in cka_matrices(run, cka_settings, pairs, context.log):
        matrix = values['cka']
        name = lambda key: f'r{run.replicas[key[0]].noise_ratio:g}_s{run.replicas[key[0]].seed}_e{key[1]}'
        stem = f'{name(a)}__{name(b)}'
        granularity = cka_settings.granularity
        np.savez(os.path.join(context.output, f'{stem}.npz'), **values, stages=np.asarray(stages),
                 granularity=np.asarray(granularity), estimator=np.asarray(cka_settings.estimator),
                 minibatch_size=np.asarray(cka_settings.minibatch_size or 0))
        keys = list(values)
        rows = [{'granularity': granularity, 'stage_a': sa, 'stage_b': sb,
                 **{key: float(values[key][i, j]) for key in keys}}
                for i, sa in enumerate(stages) for j, sb in enumerate(stages)]
        write_csv(os.path.join(context.output, f'{stem}.csv'), rows, ('granularity', 'stage_a', 'stage_b', *keys))
        label = lambda key: f'r={run.replicas[key[0]].noise_ratio:g}, seed {run.replicas[key[0]].seed}, epoch {key[1]}'
        plots.heatmap(os.path.join(context.figures, f'cka_matrix_{stem}.png'), matrix, stages, stages,
                      f'{cka_settings.describe()}, per {granularity}, {run.config.model.name}', label(a), label(b),
                      block_ends=block_ends(stages) if granularity == 'layer' else ())
        context.log(f'  cka_matrix {label(a)} vs {label(b)}: results/cka_matrix/{stem}.npz')
