"""The stitching experiment of P2 (sections 4-5) and P1 (Fig. 2), from a run directory.

For every seed with a clean replica f_0, every noisy replica f_r of that seed,
and every stitch point l (base depth l = 1 .. L-1):

- clean-to-noisy h_r(S(g_0)): clean base, noisy head;
- noisy-to-clean h_0(S(g_r)): noisy base, clean head.

S trains on the validation split (see `memjax.analysis.stitching`). Every
stitched model is evaluated on the test split and on the noisy replica's
training set: memorization accuracy on D_n^r (its relabelled examples, against
the noisy labels), D_n^r against the true labels, and the clean subset D_c^r;
the same for S at its initialisation (least squares by default) before
training. Then the critical depths (`memjax.analysis.critical_depths`).

Written: results/stitching/{stitching.csv, baselines.csv, critical_depths.csv,
stitching.npz}, figures/stitching_{clean_to_noisy,noisy_to_clean}.png (P2
Figs. 2-5: accuracy against depth, one line per r, baselines and critical
depths marked) and figures/stitching_vs_noise.png (P1 Fig. 2: test accuracy
against r, one line per depth).
"""

from __future__ import annotations

import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from memjax.analysis.critical_depths import critical_depths
from memjax.analysis.stitching import StitchSettings, StitchTrainer, stitch_points
from memjax.data.pipeline import normalize
from memjax.errors import ConfigError
from memjax.report import stitch_plots
from memjax.report.tables import write_csv
from memjax.run import Run, open_run
from memjax.train.metrics import accuracy, subset_accuracies

DIRECTIONS = ('clean_to_noisy', 'noisy_to_clean')
METRICS = ('test_accuracy', 'memorization_accuracy', 'noisy_true_accuracy', 'clean_accuracy')


def stitch_groups(run: Run) -> list[tuple[int, list[int]]]:
    """[(clean replica, [noisy replicas of the same seed])], one per seed that has both."""
    groups = []
    for seed in sorted({r.seed for r in run.replicas}):
        clean = [r.index for r in run.replicas if r.seed == seed and r.noise_ratio == 0.0]
        noisy = [r.index for r in run.replicas if r.seed == seed and r.noise_ratio > 0.0]
        if clean and noisy:
            groups.append((clean[0], noisy))
    if not groups:
        raise ConfigError('stitching needs a clean (r = 0) and a noisy replica of the same seed; '
                          'set noise.ratios to include 0.0 and at least one r > 0')
    return groups


def model_metrics(predictions: np.ndarray, run: Run, noisy: int) -> dict:
    """Accuracies of predictions [N + M] (train, then test) w.r.t. replica `noisy`'s labels and D_n^r."""
    n = run.noise['true_labels'].size
    row = subset_accuracies(predictions[:n], run.noise['labels'][noisy], run.noise['true_labels'],
                            run.noise['noise_mask'][noisy])
    row.pop('train_accuracy')
    row['test_accuracy'] = accuracy(predictions[n:], run.dataset.test_labels)
    return row


def run_stitching(workdir: str, analysis, log: Callable[[str], None] = print) -> None:
    run = open_run(workdir)
    settings = StitchSettings.from_config(analysis.get('stitching'))
    model, data = run.model, run.dataset
    final = run.checkpoints.load_epoch(run.final_epoch())
    replica = lambda i: jax.tree_util.tree_map(lambda x: jnp.asarray(x[i]), final)
    stack = lambda ids: jax.tree_util.tree_map(lambda x: jnp.asarray(x[np.asarray(ids)]), final)
    pool = jnp.asarray(np.concatenate([data.train_images, data.test_images]))
    val_images, val_labels = jnp.asarray(data.val_images), jnp.asarray(data.val_labels)
    points = stitch_points(model, settings.points)
    chance = 1.0 / data.num_classes
    groups = stitch_groups(run)
    log(f'stitching: {len(points)} points x 2 directions x {sum(len(g[1]) for g in groups)} noisy replicas, '
        f'S trained {settings.epochs} epochs on {val_labels.size} validation examples ({settings.strategy})')

    baselines, rows = [], []
    predict = jax.jit(lambda v, x: jnp.argmax(model.logits(v, normalize(x, data.mean, data.std, model.dtype)), -1))
    unstitched = {}
    for i in sorted({i for clean, noisy in groups for i in [clean, *noisy]}):
        unstitched[i] = np.concatenate([np.asarray(predict(replica(i), pool[j:j + 1000]))
                                        for j in range(0, pool.shape[0], 1000)])
    for clean, noisy in groups:
        for i in noisy:
            rep = run.replicas[i]
            for role, j in (('clean', clean), ('noisy', i)):
                baselines.append({'noise_ratio': rep.noise_ratio, 'seed': rep.seed, 'model': role,
                                  **model_metrics(unstitched[j], run, i)})

    started = time.perf_counter()
    for direction in DIRECTIONS:
        for clean, noisy in groups:
            base, head = (replica(clean), stack(noisy)) if direction == 'clean_to_noisy' else \
                (stack(noisy), replica(clean))
            shared = (True, False) if direction == 'clean_to_noisy' else (False, True)
            for point in points:
                trainer = StitchTrainer(model, data.mean, data.std, point, settings, base, head, shared,
                                        len(noisy))
                stitch = trainer.init(data.val_images)
                before = trainer.predict(stitch, pool)
                stitch, losses = trainer.train(stitch, val_images, val_labels)
                after = trainer.predict(stitch, pool)
                for k, i in enumerate(noisy):
                    rep = run.replicas[i]
                    init = model_metrics(before[k], run, i)
                    rows.append({'direction': direction, 'noise_ratio': rep.noise_ratio, 'seed': rep.seed,
                                 'depth': point, 'stage': model.stage_names[point - 1],
                                 **model_metrics(after[k], run, i),
                                 'init_test_accuracy': init['test_accuracy'],
                                 'init_memorization_accuracy': init['memorization_accuracy'],
                                 'final_loss': float(losses[-1][k]) if losses else None})
            log(f'  {direction}, seed {run.replicas[clean].seed}: {len(points)} points done '
                f'({time.perf_counter() - started:.0f} s)')

    depth_rows = []
    for direction in DIRECTIONS:
        for clean, noisy in groups:
            clean_test = next(b['test_accuracy'] for b in baselines
                              if b['model'] == 'clean' and b['seed'] == run.replicas[clean].seed)
            for i in noisy:
                rep = run.replicas[i]
                curve = [r for r in rows if r['direction'] == direction and r['noise_ratio'] == rep.noise_ratio
                         and r['seed'] == rep.seed]
                depths = critical_depths(direction, [r['depth'] for r in curve],
                                         [r['memorization_accuracy'] for r in curve],
                                         [r['test_accuracy'] for r in curve], chance, clean_test,
                                         settings.memorization_tolerance, settings.generalization_tolerance)
                for name, depth in depths.items():
                    depth_rows.append({'direction': direction, 'noise_ratio': rep.noise_ratio, 'seed': rep.seed,
                                       'critical_depth': name, 'depth': depth,
                                       'stage': None if not depth else model.stage_names[depth - 1]})
    _write(run, rows, baselines, depth_rows, chance, settings)
    log('  stitching: results/stitching/stitching.csv, critical_depths.csv; '
        'figures/stitching_clean_to_noisy.png, stitching_noisy_to_clean.png, stitching_vs_noise.png')


def _write(run: Run, rows: list, baselines: list, depth_rows: list, chance: float, settings) -> None:
    out = run.directory.results_dir('stitching')
    columns = ('direction', 'noise_ratio', 'seed', 'depth', 'stage', *METRICS, 'init_test_accuracy',
               'init_memorization_accuracy', 'final_loss')
    write_csv(os.path.join(out, 'stitching.csv'), rows, columns)
    write_csv(os.path.join(out, 'baselines.csv'), baselines, ('noise_ratio', 'seed', 'model', *METRICS))
    write_csv(os.path.join(out, 'critical_depths.csv'), depth_rows,
              ('direction', 'noise_ratio', 'seed', 'critical_depth', 'depth', 'stage'))
    numeric = [c for c in columns if c not in ('direction', 'stage')]
    arrays = {c: np.asarray([np.nan if r[c] is None else r[c] for r in rows], float) for c in numeric}
    np.savez(os.path.join(out, 'stitching.npz'), **arrays,
             direction=np.asarray([r['direction'] for r in rows]), stage=np.asarray([r['stage'] for r in rows]),
             tolerances=np.asarray([settings.memorization_tolerance, settings.generalization_tolerance]),
             chance=chance)
    figures = run.directory.figures_dir
    stage_names = run.model.stage_names
    for direction in DIRECTIONS:
        stitch_plots.accuracy_vs_depth(os.path.join(figures, f'stitching_{direction}.png'), direction,
                                       [r for r in rows if r['direction'] == direction], baselines,
                                       depth_rows, stage_names, chance)
    stitch_plots.accuracy_vs_noise(os.path.join(figures, 'stitching_vs_noise.png'), rows, baselines, stage_names)
