"""The stitching experiment of P2 (sections 4-5) and P1 (Fig. 2), from a run directory.

For every seed with a clean replica f_0, every noisy replica f_r of that seed,
and every stitch point l (base depth l = 1 .. L-1):

- clean-to-noisy h_r(S(g_0)): clean base, noisy head;
- noisy-to-clean h_0(S(g_r)): noisy base, clean head.

S trains on the validation split (see `memjax.analysis.stitching.stitch_trainer`). Every
stitched model is evaluated on the test split and on the noisy replica's
training set: memorization accuracy on D_n^r (its relabelled examples, against
the noisy labels), D_n^r against the true labels, and the clean subset D_c^r;
the same for S at its initialisation (least squares by default) before
training. Then the critical depths (`memjax.analysis.stitching.critical_depths`).

Written: results/stitching/{stitching.csv, baselines.csv, critical_depths.csv,
stitching.npz}, figures/stitching_{clean_to_noisy,noisy_to_clean}.png (P2
Figs. 2-5: accuracy against depth, one line per r, baselines and critical
depths marked) and figures/stitching_vs_noise.png (P1 Fig. 2: test accuracy
against r, both directions, clean and noisy baselines; for ResNets one line
per k = 1..4, the first k residual groups stitched after layer{k}.{last};
for other models one line per depth).

Default stitch points as P1/P2 (`stitch_points`): after every conv and fc
layer but the last (CNN), after every residual block layer1.0 ...
layer4.{n-1} (ResNets); the stem boundary only with `include_stem=True`
(P1/P2 list it nowhere among their stitch points).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar
import os

import jax.numpy as jnp
import numpy as np

from memjax.analysis.settings import AT_LEAST_1, FRACTION, NON_NEGATIVE, SEED, AnalysisSettings, Context, setting
from memjax.analysis.stitching.critical_depths import critical_depths
from memjax.analysis.stitching.stitch_trainer import StitchTrainer, group_ends, stitch_points
from memjax.errors import ConfigError
from memjax.report import stitch_plots
from memjax.report.tables import write_csv
from memjax.run import ImagePool, Run
from memjax.train.metrics import accuracy, subset_accuracies

NAME = 'stitching'
DIRECTIONS = ('clean_to_noisy', 'noisy_to_clean')
METRICS = ('test_accuracy', 'memorization_accuracy', 'noisy_true_accuracy', 'clean_accuracy')
INITS = ('least_squares', 'identity', 'random')


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.stitching`: how stitch layers are placed, trained and judged."""

    KEY: ClassVar[str] = 'stitching'
    SMOKE: ClassVar[dict] = dict(epochs=1, batch_size=32, eval_batch_size=64, points=('conv2',))

    epochs: int = setting(10, 'epochs of stitch-layer training on the validation split', range=AT_LEAST_1)
    learning_rate: float = setting(1e-3, 'stitch-layer learning rate (0: S stays as initialised, e.g. the '
                                   'least-squares fit)', range=NON_NEGATIVE)
    batch_size: int = setting(128, 'stitch-layer batch size (at most the validation split)', range=AT_LEAST_1)
    optimizer: str = setting('adam', 'stitch-layer optimizer (sgd: momentum 0.9)', choices=('adam', 'sgd'))
    init: str = setting('least_squares', 'initialisation of S', choices=INITS)
    batchnorm: bool = setting(False, 'BN -> S -> BN (Bansal et al.)')
    points: tuple = setting((), 'stages after which to stitch (empty: every boundary but the last and the stem)',
                            range='stage names of the model')
    include_stem: bool = setting(False, "default points: also stitch after the input stem (ResNet 'stem')")
    memorization_tolerance: float = setting(0.05, '"near chance": memorization accuracy <= 1/K + this',
                                            range=FRACTION)
    generalization_tolerance: float = setting(0.02, '"matches": test accuracy >= clean test accuracy - this',
                                              range=FRACTION)
    seed: int = setting(0, 'seed of S initialisation and batch order', range=SEED)
    eval_batch_size: int = setting(1000, 'examples per evaluation batch', range=AT_LEAST_1)

    def validate(self) -> None:
        if self.batchnorm and self.init == 'least_squares':
            raise ConfigError("analysis.stitching.init='least_squares' fits the plain stitch layer; with "
                              "batchnorm=True use init='identity' or 'random'")

    def check_model(self, model) -> None:
        stitch_points(model, self.points, self.include_stem)

    def check_config(self, config) -> None:
        check_validation_split(config.data.val_size, 'stitching', self.batch_size)

    def check_data(self, data) -> None:
        check_validation_split(data.split_sizes['val'], 'stitching', self.batch_size)


def check_validation_split(val_size: int | None, analysis: str, batch_size: int | None = None) -> None:
    """One error line when the validation split (data.val_size; None: the default) cannot train `analysis`."""
    if val_size == 0:
        raise ConfigError(f"data.val_size=0 leaves no validation split, which {analysis} trains on; set "
                          "--config.data.val_size to a positive number (or None for the default)")
    if batch_size is not None and val_size is not None and val_size < batch_size:
        raise ConfigError(f"analysis.{analysis}.batch_size={batch_size} is larger than the {val_size} validation "
                          f"examples it trains on (data.val_size); lower it")


def model_metrics(predictions: np.ndarray, pool: ImagePool, run: Run, noisy: int) -> dict:
    """Accuracies of predictions [P] on the train+test pool w.r.t. replica `noisy`'s labels and D_n^r."""
    row = subset_accuracies(pool.part(predictions, 'train'), run.noise['labels'][noisy], run.noise['true_labels'],
                            run.noise['noise_mask'][noisy])
    row.pop('train_accuracy')
    row['test_accuracy'] = accuracy(pool.part(predictions, 'test'), run.dataset.test_labels)
    return row


def run(run: Run, settings: Settings, context: Context) -> None:
    model, data = run.model, run.dataset
    final_epoch = run.final_epoch()
    replica = lambda i: run.replica_variables(final_epoch, i)
    stack = lambda ids: run.variables(final_epoch, ids)
    pool = run.image_pool('train', 'test')
    val_images, val_labels = jnp.asarray(data.val_images), jnp.asarray(data.val_labels)
    points = stitch_points(model, settings.points, settings.include_stem)
    chance = 1.0 / data.num_classes
    groups = run.seed_groups('stitching')
    context.log(f'stitching: {len(points)} points x 2 directions x {sum(len(g[1]) for g in groups)} noisy replicas, '
        f'S trained {settings.epochs} epochs on {val_labels.size} validation examples ({context.strategy})')

    baselines, rows = [], []
    involved = sorted({i for clean, noisy in groups for i in [clean, *noisy]})
    runner = run.runner
    unstitched = dict(zip(involved, runner.predict_all(stack(involved), pool.images, context.lifting(len(involved)),
                                                       settings.eval_batch_size)))
    for clean, noisy in groups:
        for i in noisy:
            rep = run.replicas[i]
            for role, j in (('clean', clean), ('noisy', i)):
                baselines.append({'noise_ratio': rep.noise_ratio, 'seed': rep.seed, 'model': role,
                                  **model_metrics(unstitched[j], pool, run, i)})

    bar = context.progress(len(DIRECTIONS) * len(groups) * len(points), 'stitching points')
    for direction in DIRECTIONS:
        for clean, noisy in groups:
            base, head = (replica(clean), stack(noisy)) if direction == 'clean_to_noisy' else \
                (stack(noisy), replica(clean))
            shared = (True, False) if direction == 'clean_to_noisy' else (False, True)
            for point in points:
                trainer = StitchTrainer(runner, point, settings, base, head, shared, len(noisy),
                                        context.lifting(len(noisy)))
                stitch = trainer.init(data.val_images)
                before = trainer.predict(stitch, pool.images)
                stitch, losses = trainer.train(stitch, val_images, val_labels)
                after = trainer.predict(stitch, pool.images)
                for k, i in enumerate(noisy):
                    rep = run.replicas[i]
                    init = model_metrics(before[k], pool, run, i)
                    rows.append({'direction': direction, 'noise_ratio': rep.noise_ratio, 'seed': rep.seed,
                                 'depth': point, 'stage': model.stage_names[point - 1],
                                 **model_metrics(after[k], pool, run, i),
                                 'init_test_accuracy': init['test_accuracy'],
                                 'init_memorization_accuracy': init['memorization_accuracy'],
                                 'final_loss': float(losses[-1][k]) if losses else None})
                bar.update(1)
    bar.close()

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
    _write(run, context, rows, baselines, depth_rows, chance, settings)
    context.log('  stitching: results/stitching/stitching.csv, critical_depths.csv; '
        'figures/stitching_clean_to_noisy.png, stitching_noisy_to_clean.png, stitching_vs_noise.png')


def _write(run: Run, context: Context, rows: list, baselines: list, depth_rows: list, chance: float,
           settings: Settings) -> None:
    out = context.output
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
    figures = context.figures
    stage_names = run.model.stage_names
    for direction in DIRECTIONS:
        stitch_plots.accuracy_vs_depth(os.path.join(figures, f'stitching_{direction}.png'), direction,
                                       [r for r in rows if r['direction'] == direction], baselines,
                                       depth_rows, stage_names, chance)
    stitch_plots.accuracy_vs_noise(os.path.join(figures, 'stitching_vs_noise.png'), rows, baselines, stage_names,
                                   _vs_noise_lines(stage_names, {r['depth'] for r in rows}))


def _vs_noise_lines(stage_names, depths: set) -> dict:
    """{depth: legend label} of P1 Fig. 2's lines.

    ResNets: the first k residual groups (stitched after layer{k}.{last}), one
    line per k that was stitched; other models: one line per stitch depth.
    """
    groups = {stage_names.index(name) + 1: f'k={k} groups (after {name})'
              for k, name in group_ends(stage_names).items() if stage_names.index(name) + 1 in depths}
    if groups:
        return groups
    return {d: f'k={d} ({stage_names[d - 1]})' for d in sorted(depths)}
