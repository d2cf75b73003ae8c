"""Function dissimilarity (P4 section 3, Figs. 2, 3 and 5).

1. A DCGAN is trained on the run's training images (P4: 30 epochs), kept in
   `generator_dir` (default <workdir>/generator/) and resumable
   (`generator_training`).
2. For every replica f1 (final epoch) and class j, latents from `num_seeds`
   seeds are pushed up f1_j(G(z)) by gradient ascent (P4: lr 0.05, 1000
   iterations): x_j* = G(z_j*) (`activation_maximization`, one compiled program
   for all replicas x classes x seeds).
3. Dist(f1, f2) = (1/C) sum_j KL(f1(x_j*) || f2(x_j*)) on f1's images, mean and
   std over seeds, for every ordered pair of models: the replicas of this run
   and of the runs in `other_runs` (P4 compares VGG-11 seeds with VGG-13 and
   ResNet-32: other runs), all maximised through this run's generator.

P4 section 4 trains every random-label model on one relabelled set X_R (only
initialisation and data order vary: `noise.shared_across_seeds=True`). Each
row says whether its two models trained on the same images with identical
labels (`same_labels`, `compared_runs.label_fingerprints`); Fig. 2's "same X_R"
bars and Fig. 5 use those pairs only, and pairs of one ratio whose labels
differ (per-seed label draws, or another run's draw) are an extra bar, "other
X_R".

Written: results/dissimilarity/dissimilarity.csv (run_a, replica_a,
noise_ratio_a, seed_a, run_b, replica_b, noise_ratio_b, seed_b, same_labels,
dissimilarity, dissimilarity_std), images.npz; figures/dissimilarity_bars.png
(Fig. 2), dissimilarity_images.png (Fig. 3), dissimilarity_vs_noise.png
(Fig. 5) and generator_samples.png.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar
import os

import jax
import numpy as np

from memjax.analysis.dissection.activation_maximization import (OBJECTIVES, latents_from_seeds,
                                                                maximize_activations)
from memjax.analysis.dissection.compared_runs import check_other_runs, label_fingerprints
from memjax.analysis.dissection.generator_training import (SETTINGS_FILE, GeneratorSettings, generate,
                                                           train_generator)
from memjax.analysis.dissection.kl_distance import dissimilarity_matrix
from memjax.analysis.settings import AT_LEAST_1, AnalysisSettings, Context, POSITIVE, SEED, setting
from memjax.errors import ConfigError
from memjax.models.dcgan import dcgan
from memjax.report import dissection_plots
from memjax.report.tables import write_csv
from memjax.run import Run, open_run
from memjax.rundir import read_json
from memjax.train.pixel_classifier import ModelGroup

NAME = 'dissimilarity'
COLUMNS = ('run_a', 'replica_a', 'noise_ratio_a', 'seed_a', 'run_b', 'replica_b', 'noise_ratio_b', 'seed_b',
           'same_labels', 'dissimilarity', 'dissimilarity_std')
THIS_RUN = 'this run'


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.dissimilarity`: GAN-regularised activation maximisation and Dist (P4)."""

    KEY: ClassVar[str] = 'dissimilarity'
    SMOKE: ClassVar[dict] = dict(generator_epochs=1, generator_batch_size=32, generator_width=8, num_seeds=2,
                                 iterations=3)

    generator_epochs: int = setting(30, 'DCGAN training epochs on the run\'s training images (P4: 30)',
                                    range=AT_LEAST_1)
    generator_batch_size: int = setting(128, 'DCGAN batch size', range=AT_LEAST_1)
    generator_width: int = setting(64, 'DCGAN base width', range=AT_LEAST_1)
    num_seeds: int = setting(100, 'latent seeds per class (P4: 100)', range=AT_LEAST_1)
    iterations: int = setting(1000, 'gradient-ascent iterations (P4: 1000)', range=AT_LEAST_1)
    learning_rate: float = setting(0.05, 'gradient-ascent learning rate (P4: 0.05)', range=POSITIVE)
    objective: str = setting('logit', 'f_j: the class logit or its softmax probability', choices=OBJECTIVES)
    other_runs: tuple = setting((), 'work directories of other finished runs (same data shape) whose replicas '
                                'are compared too; duplicates are dropped', range='finished run directories')
    generator_dir: str | None = setting(None, 'folder the DCGAN is trained and kept in (None: <workdir>/generator); '
                                        'another folder trains a new GAN, e.g. of another generator_width',
                                        range='a folder')
    seed_chunk: int | None = setting(None, 'seeds per compiled call (None: all; lower it to bound memory)',
                                     range=AT_LEAST_1)
    seed: int = setting(0, 'seed of the DCGAN training', range=SEED)

    def validate(self) -> None:
        if self.generator_dir is not None and not str(self.generator_dir).strip():
            raise ConfigError("analysis.dissimilarity.generator_dir is empty; give a folder, or None for "
                              "<workdir>/generator")

    def check_workdir(self, workdir: str, config) -> None:
        """At start-up: the other runs (finished, not diverged, not this run, same data shape) and the GAN
        folder (a kept GAN of other settings is refused)."""
        check_other_runs(self.other_runs, workdir, config)
        directory = self.generator_folder(workdir)
        saved_path = os.path.join(directory, SETTINGS_FILE)
        if os.path.exists(saved_path):
            saved = read_json(saved_path)
            keys = {'batch_size': 'generator_batch_size', 'width': 'generator_width', 'seed': 'seed'}
            wanted = dataclasses.asdict(self.generator_settings())
            different = [f'{keys.get(k, k)}={wanted[k]!r} (trained: {saved.get(k)!r})' for k in wanted
                         if k != 'epochs' and saved.get(k) != wanted[k]]
            if different:
                raise ConfigError(
                    f"analysis.dissimilarity.{', '.join(different)} differs from the GAN in {directory}; set "
                    "--config.analysis.dissimilarity.generator_dir to another folder to train a new GAN there, or "
                    "set it back to reuse that GAN")

    def generator_settings(self) -> GeneratorSettings:
        return GeneratorSettings(epochs=self.generator_epochs, batch_size=self.generator_batch_size,
                                 width=self.generator_width, seed=self.seed)

    def generator_folder(self, workdir: str) -> str:
        """Where the DCGAN lives: `generator_dir`, or <workdir>/generator."""
        return os.path.abspath(self.generator_dir or os.path.join(workdir, 'generator'))


def _group(run: Run, name: str) -> ModelGroup:
    return ModelGroup(run.runner.pixel_logits, run.variables(run.final_epoch()), name)


def _pair_group(r: dict) -> str | None:
    """The Fig. 2 bar of a row: models of one noise level, f1 of this run; None for other rows.

    'true labels' / 'r=0.5 same X_R' / 'r=0.5 other X_R' (the labels differ), then ': other seed' (this
    run) or ': <other run's folder name>'.
    """
    if r['noise_ratio_a'] != r['noise_ratio_b'] or r['run_a'] != THIS_RUN:
        return None
    if r['run_b'] == THIS_RUN:
        if r['seed_a'] == r['seed_b']:
            return None
        partner = 'other seed'
    else:
        partner = os.path.basename(os.path.normpath(r['run_b']))
    if r['noise_ratio_a'] == 0:
        kind = 'true labels' if r['same_labels'] else 'true labels, other data'
    else:
        kind = f"r={r['noise_ratio_a']:g} {'same' if r['same_labels'] else 'other'} X_R"
    return f'{kind}: {partner}'


def _summary(rows: list[dict]) -> dict[str, tuple[float, float]]:
    """Fig. 2 groups {bar label: (mean, std over pairs)} (`_pair_group`), true labels first, by ratio."""
    groups: dict[str, list[float]] = {}
    for r in sorted(rows, key=lambda r: (r['noise_ratio_a'], not r['same_labels'], r['run_b'] != THIS_RUN)):
        name = _pair_group(r)
        if name is not None:
            groups.setdefault(name, []).append(r['dissimilarity'])
    return {k: (float(np.mean(v)), float(np.std(v))) for k, v in groups.items()}


def noise_curves(rows: list[dict]) -> dict[str, dict[float, list[float]]]:
    """Fig. 5: Dist between seeds of this run per noise level, for pairs with the same labels
    ('same X_R') and, where there are any, pairs of one ratio whose labels differ ('other X_R')."""
    curves: dict[str, dict[float, list[float]]] = {'same X_R': {}, 'other X_R': {}}
    for r in rows:
        if r['run_a'] == r['run_b'] == THIS_RUN and r['noise_ratio_a'] == r['noise_ratio_b'] \
                and r['seed_a'] != r['seed_b']:
            name = 'same X_R' if r['same_labels'] else 'other X_R'
            curves[name].setdefault(r['noise_ratio_a'], []).append(r['dissimilarity'])
    return {name: curve for name, curve in curves.items() if curve}


def run(run: Run, s: Settings, context: Context) -> None:
    paths = check_other_runs(s.other_runs, run.directory.path, run.config)
    if len(paths) < len(s.other_runs):
        context.log(f'dissimilarity: {len(s.other_runs) - len(paths)} duplicate entries of other_runs dropped')
    others = [open_run(path) for path in paths]
    data = run.dataset
    folder = s.generator_folder(run.directory.path)
    context.log(f'dissimilarity: DCGAN ({s.generator_epochs} epochs) in {folder}')
    g_vars = train_generator(data.train_images, folder, s.generator_settings(),
                             log=lambda line: context.log('  ' + line), async_save=False)
    generator, _ = dcgan(data.image_shape, s.generator_width)
    groups = [_group(run, THIS_RUN)] + [_group(o, o.directory.path) for o in others]
    seeds = tuple(range(s.num_seeds))
    context.log(f'  activation maximisation: {sum(g.num_replicas for g in groups)} models x {data.num_classes} '
                f'classes x {s.num_seeds} seeds, {s.iterations} iterations')
    images = []
    bar = context.progress(len(groups), 'activation maximisation (runs)')
    for group in groups:
        result = maximize_activations(group.classifier, group.variables, generator, g_vars,
                                      num_classes=data.num_classes, seeds=seeds, iterations=s.iterations,
                                      learning_rate=s.learning_rate, objective=s.objective,
                                      seed_chunk=s.seed_chunk, lifting=context.lifting(group.num_replicas))
        images.append(result.images)
        bar.update(1)
    bar.close()
    dist = dissimilarity_matrix(groups, images, s.seed_chunk, context.lifting(max(g.num_replicas for g in groups)))
    models = [(name, i, rep, labels) for name, r in [(THIS_RUN, run)] + [(o.directory.path, o) for o in others]
              for i, (rep, labels) in enumerate(zip(r.replicas, label_fingerprints(r)))]
    rows = [{'run_a': na, 'replica_a': ia, 'noise_ratio_a': ra.noise_ratio, 'seed_a': ra.seed,
             'run_b': nb, 'replica_b': ib, 'noise_ratio_b': rb.noise_ratio, 'seed_b': rb.seed,
             'same_labels': la == lb, 'dissimilarity': float(dist.mean[a, b]),
             'dissimilarity_std': float(dist.std[a, b])}
            for a, (na, ia, ra, la) in enumerate(models) for b, (nb, ib, rb, lb) in enumerate(models)]
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
    curves = noise_curves(rows)
    if curves:
        series = {name: {ratio: (float(np.mean(v)), float(np.std(v))) for ratio, v in sorted(curve.items())}
                  for name, curve in curves.items()}
        dissection_plots.dissimilarity_vs_noise(os.path.join(figures, 'dissimilarity_vs_noise.png'), series,
                                                'Dissimilarity between seeds against noise (P4 Fig. 5)')
    labels = [rep.name for rep in run.replicas]
    dissection_plots.image_grid(os.path.join(figures, 'dissimilarity_images.png'), images[:, :, 0], labels,
                                'x_j* per class (columns), first seed (P4 Fig. 3)')
    z = latents_from_seeds(tuple(range(8)))
    samples = (np.asarray(generate(generator, jax.tree_util.tree_map(np.asarray, g_vars), z)) + 1) / 2
    dissection_plots.image_grid(os.path.join(figures, 'generator_samples.png'), samples[None], ['G(z)'],
                                'DCGAN samples (P4 Fig. 3, first row)')
