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
noise_ratios [R], seeds [R]) and `cka.csv` (one row per replica, epoch and
unit; its `granularity` column says whether `stage` holds stage or layer
names), figures to `figures/<analysis>_*.png`.

Memory: the final Grams of every target replica are held on the device,
[L, b, b] float32 per minibatch of b examples, R x L x N x b x 4 bytes for N
examples. Paper configs (N = 10,000, b = 1,000), per replica: ResNet-18 0.84 GB
for its 21 layers (0.4 GB for its 10 stages), ResNet-34 1.5 GB (37 layers),
ResNet-50 2.2 GB (54 layers); nine ResNet-18 replicas hold 7.6 GB.
"""

from __future__ import annotations

import os
import jax
import numpy as np

from memjax.analysis.lifting import take
from memjax.analysis.similarity.cka import hsic_scale
from memjax.analysis.settings import Context
from memjax.analysis.similarity.representations import CkaSettings, GramMaker, block_ends, split_images
from memjax.report import plots
from memjax.report.tables import write_csv
from memjax.run import Run

NAMES = ('convergence', 'noisy_vs_clean')


def _diagonal_sums(grams_a, grams_b, scale):
    """Same-unit HSIC sums of [L, b, b] Grams: (xy [L], xx [L], yy [L])."""
    xy = jax.numpy.sum(grams_a * grams_b, axis=(1, 2)) * scale
    xx = jax.numpy.sum(grams_a * grams_a, axis=(1, 2)) * scale
    yy = jax.numpy.sum(grams_b * grams_b, axis=(1, 2)) * scale
    return np.stack([np.asarray(xy), np.asarray(xx), np.asarray(yy)])


def cka_over_training(run: Run, settings: CkaSettings, targets: list[list[int]],
                      context: Context) -> tuple[list[np.ndarray], list[int], tuple]:
    """CKA of every replica's units over the kept epochs against target final models.

    Args:
      targets: one list per output; targets[k][i] is the replica whose FINAL
        checkpoint replica i is compared with (itself for convergence).
    Returns:
      ([cka [R, L, T] for each target list], epochs [T], unit names [L]).
    """
    model, data = run.model, run.dataset
    maker = GramMaker(model, data.mean, data.std, settings)
    images = split_images(run, settings)
    epochs = run.kept_epochs(settings.epochs, 'analysis.cka.epochs')
    final_epoch = run.final_epoch()
    needed = sorted({j for target in targets for j in target})
    final_grams = {j: maker.grams(run.replica_variables(final_epoch, j), images) for j in needed}
    num_replicas, num_units = len(run.replicas), len(maker.names)
    sums = [np.zeros((3, num_replicas, num_units, len(epochs))) for _ in targets]
    bar = context.progress(len(epochs) * num_replicas, 'cka over training')
    for t, epoch in enumerate(epochs):
        variables = run.variables(epoch)
        for i in range(num_replicas):
            grams = maker.grams(take(variables, i), images)
            bar.update(1)
            for k, target in enumerate(targets):
                for batch, gram in enumerate(grams):
                    other = final_grams[target[i]][batch]
                    sums[k][:, i, :, t] += _diagonal_sums(gram, other, hsic_scale(gram.shape[-1],
                                                                                   settings.debiased))
    bar.close()
    return [_cka(s) for s in sums], epochs, maker.names


def _cka(sums: np.ndarray) -> np.ndarray:
    xy, xx, yy = sums
    den = np.sqrt(np.maximum(xx, 0) * np.maximum(yy, 0))
    return np.where(den > 1e-30, xy / np.where(den > 1e-30, den, 1.0), 0.0)


def save(run: Run, name: str, cka: np.ndarray, epochs: list[int], stages: tuple, granularity: str,
         context: Context, title: str, ylabel: str) -> None:
    """results/<name>/cka.npz, cka.csv and the two figures of one analysis.

    cka: [R, L, T]; stages: the L unit names, stages or layers as `granularity` says.
    """
    ratios = [r.noise_ratio for r in run.replicas]
    seeds = [r.seed for r in run.replicas]
    np.savez(os.path.join(context.output, 'cka.npz'), cka=cka, epochs=np.asarray(epochs),
             stages=np.asarray(stages), granularity=np.asarray(granularity), noise_ratios=np.asarray(ratios),
             seeds=np.asarray(seeds))
    rows = [{**run.row(i), 'epoch': e, 'granularity': granularity, 'stage': s, 'cka': float(cka[i, l, t])}
            for i in range(cka.shape[0]) for l, s in enumerate(stages) for t, e in enumerate(epochs)]
    write_csv(os.path.join(context.output, 'cka.csv'), rows,
              ('replica', 'noise_ratio', 'seed', 'epoch', 'granularity', 'stage', 'cka'))
    plots.stage_curves_per_epoch(os.path.join(context.figures, f'{name}_by_stage.png'), cka, epochs, stages,
                                 ratios, block_ends(stages), title, ylabel, unit=granularity)
    plots.epoch_curves_per_stage(os.path.join(context.figures, f'{name}_over_epochs.png'), cka, epochs, stages,
                                 ratios, title, ylabel)
    context.log(f'  {name}: results/{name}/cka.npz, cka.csv, figures/{name}_by_stage.png, '
                f'figures/{name}_over_epochs.png')


def shared_pass(run: Run, settings: CkaSettings, context: Context) -> dict:
    """{'convergence' | 'noisy_vs_clean': cka [R, L, T], 'epochs': [T], 'stages': unit names [L]} for the listed ones.

    Computed once per invocation for both analyses (cached in `context.cache`).
    """
    if 'cka_over_training' not in context.cache:
        order = [n for n in ('convergence', 'noisy_vs_clean') if n in context.listed] or ['convergence']
        targets = {'convergence': lambda: [rep.index for rep in run.replicas],
                   'noisy_vs_clean': lambda: [run.clean_partner(rep.index, 'noisy_vs_clean')
                                              for rep in run.replicas]}
        batches = f', minibatches of {settings.minibatch_size}' if settings.minibatch_size else ''
        context.log(f"cka over training ({', '.join(order)}): {settings.estimator} CKA per {settings.granularity} "
                    f"on {settings.num_examples} {settings.split} examples{batches}")
        results, epochs, stages = cka_over_training(run, settings, [targets[n]() for n in order], context)
        context.cache['cka_over_training'] = {**dict(zip(order, results)), 'epochs': epochs, 'stages': stages}
    return context.cache['cka_over_training']
