"""CKA across training checkpoints (P1 Figs. 1 and 3).

- `convergence`: for every replica i, stage l and kept epoch t,
  CKA(stage l of replica i at t, stage l of replica i at its final checkpoint).
- `noisy_vs_clean`: CKA(stage l of replica i at t, stage l of the final CLEAN
  (r = 0) replica of the same seed). The clean replica's own row is its
  convergence curve, drawn as the r = 0 reference.

Both come from one pass over the checkpoints when both are asked for: each
(epoch, replica) Gram is formed once. Results go to
`results/<analysis>/cka.npz` (cka [R, L, T], epochs, stages, noise_ratios,
seeds) and `cka.csv`, figures to `figures/<analysis>_*.png`.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import numpy as np

from memjax.analysis.cka import hsic_scale
from memjax.analysis.representations import CkaSettings, GramMaker, block_ends, split_examples
from memjax.errors import ConfigError
from memjax.report import plots
from memjax.report.tables import write_csv
from memjax.run import Run, open_run

NAMES = ('convergence', 'noisy_vs_clean')


def clean_partners(run: Run) -> list[int]:
    """For every replica, the index of the r = 0 replica with the same seed."""
    partners = []
    for rep in run.replicas:
        clean = [r.index for r in run.replicas if r.noise_ratio == 0.0 and r.seed == rep.seed]
        if not clean:
            raise ConfigError(f"noisy_vs_clean needs a clean replica (r = 0) for seed {rep.seed}; "
                              "add 0.0 to noise.ratios")
        partners.append(clean[0])
    return partners


def _diagonal_sums(grams_a, grams_b, scale):
    """Same-stage HSIC sums of [L, b, b] Grams: (xy [L], xx [L], yy [L])."""
    xy = jax.numpy.sum(grams_a * grams_b, axis=(1, 2)) * scale
    xx = jax.numpy.sum(grams_a * grams_a, axis=(1, 2)) * scale
    yy = jax.numpy.sum(grams_b * grams_b, axis=(1, 2)) * scale
    return np.stack([np.asarray(xy), np.asarray(xx), np.asarray(yy)])


def cka_over_training(run: Run, settings: CkaSettings, targets: list[list[int]],
                      log: Callable[[str], None] = print) -> tuple[list[np.ndarray], list[int], tuple]:
    """CKA of every replica's stages over the kept epochs against target final models.

    Args:
      targets: one list per output; targets[k][i] is the replica whose FINAL
        checkpoint replica i is compared with (itself for convergence).
    Returns:
      ([cka [R, L, T] for each target list], epochs [T], stage names [L]).
    """
    model, data = run.model, run.dataset
    maker = GramMaker(model, data.mean, data.std, settings)
    images, _ = split_examples(run, settings.split, settings.num_examples)
    kept = run.epochs()
    epochs = [e for e in kept if not settings.epochs or e in settings.epochs]
    if settings.epochs and len(epochs) != len(settings.epochs):
        raise ConfigError(f"analysis.cka.epochs={tuple(settings.epochs)} asks for epochs that were not kept; "
                          f"kept epochs: {kept}")
    final = run.checkpoints.load_epoch(kept[-1])
    replica_vars = lambda tree, i: jax.tree_util.tree_map(lambda x: x[i], tree)
    needed = sorted({j for target in targets for j in target})
    final_grams = {j: maker.grams(replica_vars(final, j), images) for j in needed}
    num_replicas, num_stages = len(run.replicas), len(maker.stages)
    sums = [np.zeros((3, num_replicas, num_stages, len(epochs))) for _ in targets]
    for t, epoch in enumerate(epochs):
        variables = run.checkpoints.load_epoch(epoch)
        for i in range(num_replicas):
            grams = maker.grams(replica_vars(variables, i), images)
            for k, target in enumerate(targets):
                for batch, gram in enumerate(grams):
                    other = final_grams[target[i]][batch]
                    sums[k][:, i, :, t] += _diagonal_sums(gram, other, hsic_scale(gram.shape[-1],
                                                                                   settings.debiased))
        if (t + 1) % max(1, len(epochs) // 5) == 0 or t + 1 == len(epochs):
            log(f'  cka: {t + 1}/{len(epochs)} checkpoints (epoch {epoch})')
    return [_cka(s) for s in sums], epochs, maker.stages


def _cka(sums: np.ndarray) -> np.ndarray:
    xy, xx, yy = sums
    den = np.sqrt(np.maximum(xx, 0) * np.maximum(yy, 0))
    return np.where(den > 1e-30, xy / np.where(den > 1e-30, den, 1.0), 0.0)


def _save(run: Run, name: str, cka: np.ndarray, epochs: list[int], stages: tuple, title: str,
          ylabel: str) -> None:
    out = run.directory.results_dir(name)
    ratios = [r.noise_ratio for r in run.replicas]
    seeds = [r.seed for r in run.replicas]
    np.savez(os.path.join(out, 'cka.npz'), cka=cka, epochs=np.asarray(epochs), stages=np.asarray(stages),
             noise_ratios=np.asarray(ratios), seeds=np.asarray(seeds))
    rows = [{'replica': i, 'noise_ratio': ratios[i], 'seed': seeds[i], 'epoch': e, 'stage': s,
             'cka': float(cka[i, l, t])}
            for i in range(cka.shape[0]) for l, s in enumerate(stages) for t, e in enumerate(epochs)]
    write_csv(os.path.join(out, 'cka.csv'), rows, ('replica', 'noise_ratio', 'seed', 'epoch', 'stage', 'cka'))
    figures = run.directory.figures_dir
    plots.stage_curves_per_epoch(os.path.join(figures, f'{name}_by_stage.png'), cka, epochs, stages, ratios,
                                 block_ends(stages), title, ylabel)
    plots.epoch_curves_per_stage(os.path.join(figures, f'{name}_over_epochs.png'), cka, epochs, stages,
                                 ratios, title, ylabel)


def run_cka_over_training(workdir: str, settings_node, names: set[str], log: Callable[[str], None] = print):
    """Runs the requested subset of NAMES on a run directory."""
    run = open_run(workdir)
    settings = CkaSettings.from_config(settings_node)
    order = [n for n in NAMES if n in names]
    targets = {'convergence': [rep.index for rep in run.replicas], 'noisy_vs_clean': clean_partners(run)
               if 'noisy_vs_clean' in names else None}
    log(f"cka over training ({', '.join(order)}): {settings.estimator} CKA on {settings.num_examples} "
        f"{settings.split} examples" + (f', minibatches of {settings.minibatch_size}' if settings.minibatch_size
                                        else ''))
    results, epochs, stages = cka_over_training(run, settings, [targets[n] for n in order], log)
    for name, cka in zip(order, results):
        if name == 'convergence':
            _save(run, name, cka, epochs, stages, f'Layer convergence: CKA(stage at epoch t, same stage at the '
                  f'final epoch), {run.config.model.name}', 'CKA with final')
        else:
            _save(run, name, cka, epochs, stages, 'CKA(stage of replica at epoch t, same stage of the final '
                  f'clean model), {run.config.model.name}', 'CKA with final clean')
        log(f'  {name}: results/{name}/cka.npz, cka.csv, figures/{name}_by_stage.png, '
            f'figures/{name}_over_epochs.png')
