"""CKA across training checkpoints (P1 Figs. 1 and 3): the engine of two analyses.

- `convergence` (memjax.analysis.similarity.convergence): for every replica i,
  unit l and kept epoch t, CKA(unit l of replica i at t, unit l of replica i
  at its final checkpoint).
- `noisy_vs_clean` (memjax.analysis.similarity.noisy_vs_clean): CKA(unit l of
  replica i at t, unit l of the final CLEAN (r = 0) replica of the same seed).

Units are stages or layers (`analysis.cka.granularity`). Both come from one
pass over the checkpoints when both are listed: each (epoch, replica) Gram is
formed once (`shared_pass`). Results go to `results/<analysis>/cka.npz`
(cka [R, L, T], epochs [T], stages [L] = the unit names, granularity,
noise_ratios [R], seeds [R], estimator, minibatch_size: 0 = full batch) and `cka.csv` (one row per replica, epoch and
unit; its `granularity` column says whether `stage` holds stage or layer
names), figures to `figures/<analysis>_*.png`.

The `cka` arrays hold the settings' estimator; with full-batch Grams (the
default, `analysis.cka.minibatch_size=None`) `cka_debiased` [R, L, T] (npz)
and a `cka_debiased` column (csv) hold the debiased value from the same Grams.

Order and memory: replicas are taken one at a time, grouped by the final
model they are compared with (a clean replica, then the noisy replicas of
its seed), so at most three models' Grams are held at once (the replica's
final model, its seed's clean final model and the checkpoint at hand; two
when one analysis is listed). Full batch: L x N^2 x 4 bytes per model;
the paper configs (N = 10,000) hold 11.6 GB per ResNet-18 (29 layer units:
21 layers and 8 block outputs), 21.2 GB per ResNet-34 (53 units), 28 GB per
ResNet-50 (70 units); the analysis logs what it holds and refuses (one
line, before any Gram is formed) what the device cannot hold. Minibatch:
L x N x b x 4 bytes per model. Each epoch's checkpoint is read once per
replica.
"""

from __future__ import annotations

import os

import numpy as np

from memjax.analysis.settings import Context
from memjax.analysis.similarity.representations import (CkaSettings, GramMaker, block_ends, check_memory, compare,
                                                         split_images)
from memjax.report import plots
from memjax.report.tables import write_csv
from memjax.run import Run

NAMES = ('convergence', 'noisy_vs_clean')


def comparison_order(targets: list[list[int]]) -> list[int]:
    """Replica indices, each group of replicas compared with the same other final model
    (a seed's clean replica) right after that replica, so its final Grams are formed once."""
    count = len(targets[0])

    def partner(i: int) -> int:
        return next((t[i] for t in reversed(targets) if t[i] != i), i)
    return sorted(range(count), key=lambda i: (partner(i), partner(i) != i, i))


def cka_over_training(run: Run, settings: CkaSettings, targets: list[list[int]],
                      context: Context) -> tuple[list[dict], list[int], tuple]:
    """CKA of every replica's units over the kept epochs against target final models.

    Args:
      targets: one list per output; targets[k][i] is the replica whose FINAL
        checkpoint replica i is compared with (itself for convergence).
    Returns:
      ([{'cka': [R, L, T]} (plus 'cka_debiased' [R, L, T] in full batch) for each target list],
       epochs [T], unit names [L]).
    """
    maker = GramMaker(run.runner, settings)
    images = split_images(run, settings)
    epochs = run.kept_epochs(settings.epochs, 'analysis.cka.epochs')
    final_epoch = run.final_epoch()
    order = comparison_order(targets)
    held = max(len({t[i] for t in targets}) for i in order) + 1
    check_memory(maker, held, images.shape[1:], context.log)
    num_replicas, num_units = len(run.replicas), len(maker.names)
    keys = ('cka', 'cka_debiased') if settings.full_batch else ('cka',)
    out = [{key: np.zeros((num_replicas, num_units, len(epochs))) for key in keys} for _ in targets]
    finals: dict[int, list] = {}
    bar = context.progress(len(epochs) * num_replicas, 'cka over training')
    for i in order:
        needed = [t[i] for t in targets]
        for j in [j for j in finals if j not in needed]:
            del finals[j]  # frees its Grams before the next are formed
        for j in needed:
            if j not in finals:
                finals[j] = maker.grams(run.replica_variables(final_epoch, j), images)
        for t, epoch in enumerate(epochs):
            current = finals[i] if epoch == final_epoch and i in finals else None
            if current is None:
                current = maker.grams(run.replica_variables(epoch, i), images)
            for k, target in enumerate(targets):
                for key, values in compare(current, finals[target[i]], settings, diagonal=True).items():
                    out[k][key][i, :, t] = values
            del current
            bar.update(1)
    bar.close()
    return out, epochs, maker.names


def save(run: Run, name: str, values: dict, epochs: list[int], stages: tuple, settings: CkaSettings,
         context: Context, title: str, ylabel: str) -> None:
    """results/<name>/cka.npz, cka.csv and the two figures of one analysis.

    values: {'cka': [R, L, T]} and, in full batch, 'cka_debiased' [R, L, T]; stages: the L unit
    names, stages or layers as `settings.granularity` says.
    """
    ratios = [r.noise_ratio for r in run.replicas]
    seeds = [r.seed for r in run.replicas]
    granularity, cka = settings.granularity, values['cka']
    np.savez(os.path.join(context.output, 'cka.npz'), **values, epochs=np.asarray(epochs),
             stages=np.asarray(stages), granularity=np.asarray(granularity), noise_ratios=np.asarray(ratios),
             seeds=np.asarray(seeds), estimator=np.asarray(settings.estimator),
             minibatch_size=np.asarray(settings.minibatch_size or 0))
    keys = [key for key in ('cka', 'cka_debiased') if key in values]
    rows = [{**run.row(i), 'epoch': e, 'granularity': granularity, 'stage': s,
             **{key: float(values[key][i, l, t]) for key in keys}}
            for i in range(cka.shape[0]) for l, s in enumerate(stages) for t, e in enumerate(epochs)]
    write_csv(os.path.join(context.output, 'cka.csv'), rows,
              ('replica', 'noise_ratio', 'seed', 'epoch', 'granularity', 'stage', *keys))
    title = f'{title}\n{settings.describe()}'
    plots.stage_curves_per_epoch(os.path.join(context.figures, f'{name}_by_stage.png'), cka, epochs, stages,
                                 ratios, block_ends(stages), title, ylabel, unit=granularity)
    plots.epoch_curves_per_stage(os.path.join(context.figures, f'{name}_over_epochs.png'), cka, epochs, stages,
                                 ratios, title, ylabel)
    context.log(f'  {name}: results/{name}/cka.npz, cka.csv, figures/{name}_by_stage.png, '
                f'figures/{name}_over_epochs.png')


def shared_pass(run: Run, settings: CkaSettings, context: Context) -> dict:
    """{'convergence' | 'noisy_vs_clean': {'cka': [R, L, T], ...}, 'epochs': [T], 'stages': unit names [L]}
    for the listed ones.

    Computed once per invocation for both analyses (cached in `context.cache`).
    """
    if 'cka_over_training' not in context.cache:
        order = [n for n in ('convergence', 'noisy_vs_clean') if n in context.listed] or ['convergence']
        targets = {'convergence': lambda: [rep.index for rep in run.replicas],
                   'noisy_vs_clean': lambda: [run.clean_partner(rep.index, 'noisy_vs_clean')
                                              for rep in run.replicas]}
        context.log(f"cka over training ({', '.join(order)}): {settings.describe()} per {settings.granularity} "
                    f"on {settings.num_examples} {settings.split} examples")
        results, epochs, stages = cka_over_training(run, settings, [targets[n]() for n in order], context)
        context.cache['cka_over_training'] = {**dict(zip(order, results)), 'epochs': epochs, 'stages': stages}
    return context.cache['cka_over_training']
