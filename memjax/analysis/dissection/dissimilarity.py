"""Function dissimilarity (P4 section 3, Figs. 2, 3 and 5).

1. A DCGAN is trained on the run's training images (P4: 30 epochs), kept in
   <workdir>/generator/ and resumable (`generator_training`).
2. For every replica f1 (final epoch) and class j, latents from `num_seeds`
   seeds are pushed up f1_j(G(z)) by gradient ascent (P4: lr 0.05, 1000
   iterations): x_j* = G(z_j*) (`activation_maximization`, one compiled program
   for all replicas x classes x seeds).
3. Dist(f1, f2) = (1/C) sum_j KL(f1(x_j*) || f2(x_j*)) on f1's images, mean and
   std over seeds, for every ordered pair of models: the replicas of this run
   and of the runs in `other_runs` (P4 compares VGG-11 seeds with VGG-13 and
   ResNet-32: other runs), all maximised through this run's generator.

Written: results/dissimilarity/dissimilarity.csv (run_a, replica_a,
noise_ratio_a, seed_a, run_b, replica_b, noise_ratio_b, seed_b, dissimilarity,
dissimilarity_std), images.npz; figures/dissimilarity_bars.png (Fig. 2),
dissimilarity_images.png (Fig. 3), dissimilarity_vs_noise.png (Fig. 5) and
generator_samples.png.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from memjax.analysis.dissection.activation_maximization import (OBJECTIVES, latents_from_seeds,
                                                                maximize_activations)
from memjax.analysis.dissection.generator_training import GeneratorSettings, generate, train_generator
from memjax.analysis.dissection.kl_distance import dissimilarity_matrix
from memjax.analysis.settings import AnalysisSettings, Context, setting
from memjax.errors import ConfigError
from memjax.models.dcgan import dcgan
from memjax.report import dissection_plots
from memjax.report.tables import write_csv
from memjax.run import Run, open_run
from memjax.rundir import read_json
from memjax.train.pixel_classifier import ModelGroup, pixel_classifier

NAME = 'dissimilarity'
COLUMNS = ('run_a', 'replica_a', 'noise_ratio_a', 'seed_a', 'run_b', 'replica_b', 'noise_ratio_b', 'seed_b',
           'dissimilarity', 'dissimilarity_std')


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.dissimilarity`: GAN-regularised activation maximisation and Dist (P4)."""

    generator_epochs: int = setting(30, 'DCGAN training epochs on the run\'s training images (P4: 30)')
    generator_batch_size: int = setting(128, 'DCGAN batch size')
    generator_width: int = setting(64, 'DCGAN base width')
    num_seeds: int = setting(100, 'latent seeds per class (P4: 100)')
    iterations: int = setting(1000, 'gradient-ascent iterations (P4: 1000)')
    learning_rate: float = setting(0.05, 'gradient-ascent learning rate (P4: 0.05)')
    objective: str = setting('logit', 'f_j: the class logit or its softmax probability', choices=OBJECTIVES)
    other_runs: tuple = setting((), 'work directories of other runs whose replicas are compared too')
    seed_chunk: int | None = setting(None, 'seeds per compiled call (None: all; lower it to bound memory)')
    seed: int = setting(0, 'seed of the DCGAN training')

    def validate(self) -> None:
        self.positive('generator_epochs', 'generator_batch_size', 'generator_width', 'num_seeds', 'iterations')
        for path in self.other_runs:
            if not os.path.exists(os.path.join(path, 'config.json')):
                raise ConfigError(f"analysis.dissimilarity.other_runs has {path!r}, which holds no memjax run "
                                  "(no config.json); give the --workdir of a trained run")


def _check_other(run: Run, other: Run) -> None:
    mine, theirs = read_json(run.directory.file('data.json')), read_json(other.directory.file('data.json'))
    for key in ('num_classes', 'image_shape'):
        if mine.get(key) != theirs.get(key):
            raise ConfigError(f"analysis.dissimilarity.other_runs: {other.directory.path} has {key}="
                              f"{theirs.get(key)}, this run {mine.get(key)}; compare runs on the same data")


def _group(run: Run, name: str) -> ModelGroup:
    data = run.dataset
    return ModelGroup(pixel_classifier(run.model, data.mean, data.std), run.variables(run.final_epoch()), name)


def _summary(rows: list[dict]) -> dict[str, tuple[float, float]]:
    """Fig. 2 groups: same run, other seed, true vs random labels; and each other run."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        if r['run_a'] == r['run_b'] and r['replica_a'] == r['replica_b']:
            continue
        if r['run_a'] == r['run_b'] == 'this run':
            if r['noise_ratio_a'] == r['noise_ratio_b'] and r['seed_a'] != r['seed_b']:
                kind = 'true labels' if r['noise_ratio_a'] == 0 else f"r={r['noise_ratio_a']:g}"
                groups.setdefault(f'{kind}: other seed', []).append(r['dissimilarity'])
        elif r['run_a'] == 'this run' and r['noise_ratio_a'] == r['noise_ratio_b']:
            kind = 'true labels' if r['noise_ratio_a'] == 0 else f"r={r['noise_ratio_a']:g}"
            groups.setdefault(f"{kind}: {os.path.basename(r['run_b'])}", []).append(r['dissimilarity'])
    return {k: (float(np.mean(v)), float(np.std(v))) for k, v in groups.items()}


def run(run: Run, s: Settings, context: Context) -> None:
    others = [open_run(path) for path in s.other_runs]
    for other in others:
        _check_other(run, other)
    data = run.dataset
    generator_settings = GeneratorSettings(epochs=s.generator_epochs, batch_size=s.generator_batch_size,
                                           width=s.generator_width, seed=s.seed)
    context.log(f'dissimilarity: DCGAN ({s.generator_epochs} epochs) in {run.directory.file("generator")}')
    g_vars = train_generator(data.train_images, run.directory.file('generator'), generator_settings,
                             log=lambda line: context.log('  ' + line), async_save=False)
    generator, _ = dcgan(data.image_shape, s.generator_width)
    groups = [_group(run, 'this run')] + [_group(o, o.directory.path) for o in others]
    seeds = tuple(range(s.num_seeds))
    context.log(f'  activation maximisation: {sum(g.num_replicas for g in groups)} models x {data.num_classes} '
                f'classes x {s.num_seeds} seeds, {s.iterations} iterations')
    images = []
    bar = context.progress(len(groups), 'activation maximisation (runs)')
    for group in groups:
        result = maximize_activations(group.classifier, group.variables, generator, g_vars,
                                      num_classes=data.num_classes, seeds=seeds, iterations=s.iterations,
                                      learning_rate=s.learning_rate, objective=s.objective,
                                      seed_chunk=s.seed_chunk)
        images.append(result.images)
        bar.update(1)
    bar.close()
    dist = dissimilarity_matrix(groups, images, s.seed_chunk)
    models = [(name, i, rep) for name, r in [('this run', run)] + [(o.directory.path, o) for o in others]
              for i, rep in enumerate(r.replicas)]
    rows = [{'run_a': na, 'replica_a': ia, 'noise_ratio_a': ra.noise_ratio, 'seed_a': ra.seed,
             'run_b': nb, 'replica_b': ib, 'noise_ratio_b': rb.noise_ratio, 'seed_b': rb.seed,
             'dissimilarity': float(dist.mean[a, b]), 'dissimilarity_std': float(dist.std[a, b])}
            for a, (na, ia, ra) in enumerate(models) for b, (nb, ib, rb) in enumerate(models)]
    write_csv(os.path.join(context.output, 'dissimilarity.csv'), rows, COLUMNS)
    np.savez_compressed(os.path.join(context.output, 'images.npz'), images=images[0], mean=dist.mean, std=dist.std)
    _figures(run, rows, images[0], generator, g_vars, context)
    context.log('  dissimilarity: results/dissimilarity/dissimilarity.csv; figures/dissimilarity_bars.png, '
                'dissimilarity_images.png, dissimilarity_vs_noise.png, generator_samples.png')


def _figures(run: Run, rows: list[dict], images: np.ndarray, generator, g_vars, context: Context) -> None:
    figures = context.figures
    summary = _summary(rows)
    if summary:
        dissection_plots.dissimilarity_bars(os.path.join(figures, 'dissimilarity_bars.png'), summary,
                                            f'Function dissimilarity (P4 Fig. 2), {run.model.name}')
    ratios = sorted({rep.noise_ratio for rep in run.replicas})
    same = {ratio: [r['dissimilarity'] for r in rows if r['run_a'] == r['run_b'] == 'this run'
                    and r['noise_ratio_a'] == r['noise_ratio_b'] == ratio and r['seed_a'] != r['seed_b']]
            for ratio in ratios}
    if any(same.values()):
        kept = [ratio for ratio in ratios if same[ratio]]
        dissection_plots.dissimilarity_vs_noise(os.path.join(figures, 'dissimilarity_vs_noise.png'), kept,
                                                [float(np.mean(same[r])) for r in kept],
                                                [float(np.std(same[r])) for r in kept],
                                                'Dissimilarity between seeds against noise (P4 Fig. 5)')
    labels = [rep.name for rep in run.replicas]
    dissection_plots.image_grid(os.path.join(figures, 'dissimilarity_images.png'), images[:, :, 0], labels,
                                'x_j* per class (columns), first seed (P4 Fig. 3)')
    z = latents_from_seeds(tuple(range(8)))
    samples = (np.asarray(generate(generator, jax.tree_util.tree_map(np.asarray, g_vars), z)) + 1) / 2
    dissection_plots.image_grid(os.path.join(figures, 'generator_samples.png'), samples[None], ['G(z)'],
                                'DCGAN samples (P4 Fig. 3, first row)')
