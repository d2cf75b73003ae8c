"""Manifold geometry per layer (P5, Stephenson et al. ICLR 2021): capacity, radius and dimension.

For every replica, chosen kept epoch and stage, three kinds of class manifolds
of training examples, as P5 defines them:

- `unpermuted`: examples whose label was kept, grouped by their class;
- `permuted`: relabelled examples, grouped by their training (noisy) label;
- `restored`: the same relabelled examples, grouped by their true label.

Each manifold is `examples_per_class` points (drawn once per replica with
`seed`) of the stage's flattened output in float32, analysed with MFTMA
(`memjax.analysis.geometry.mftma`). Replicas with r = 0 have only the
unpermuted kind. Memorization shows as permuted manifolds that shrink (radius,
dimension down, capacity up) in deeper layers late in training. P5's other
result, rewinding the last k layers, is the `rewinding` analysis (last_k).

The units are stages (`granularity` 'stage' of `memjax.models.units`: the
stem, each residual block, the head; for the CNN its layers), named in every
row; P5's rewinding (configs/*_p5.py) rewinds the same units.

Written: results/manifolds/manifolds.csv (replica, noise_ratio, seed, epoch,
granularity, layer, kind, capacity, radius, dimension, center_correlation, K,
solver_converged, solver_residual) and figures/manifolds_r<r>_s<seed>.png.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar
import os
import warnings

import numpy as np

from memjax.analysis.geometry.mftma import manifold_analysis
from memjax.analysis.settings import AT_LEAST_1, AT_LEAST_2, AnalysisSettings, Context, NON_NEGATIVE, SEED, setting
from memjax.errors import ConfigError
from memjax.report.geometry_plots import geometry_by_layer
from memjax.report.tables import write_csv
from memjax.run import Run

NAME = 'manifolds'
KINDS = ('unpermuted', 'permuted', 'restored')
GRANULARITY = 'stage'  # the units the manifolds are measured on
COLUMNS = ('replica', 'noise_ratio', 'seed', 'epoch', 'granularity', 'layer', 'kind', 'capacity', 'radius',
           'dimension', 'center_correlation', 'K', 'solver_converged', 'solver_residual')


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.manifolds`: MFTMA of class manifolds per layer and epoch (P5)."""

    KEY: ClassVar[str] = 'manifolds'
    SMOKE: ClassVar[dict] = dict(examples_per_class=2, min_examples=2, n_t=20, epochs=(2,), solver_iterations=2000,
                                 forward_batch=64, stages=('conv3', 'fc4'), classes=(0, 1, 2, 3))

    examples_per_class: int = setting(50, 'points per class manifold (the reference wrapper: 50)', range=AT_LEAST_2)
    classes: tuple = setting((), 'classes analysed (empty: all); distinct', range=NON_NEGATIVE)
    min_examples: int = setting(10, 'a class manifold with fewer relabelled examples is left out', range=AT_LEAST_2)
    epochs: tuple = setting((), 'kept epochs (empty: num_epochs of them, evenly spaced, first and last)',
                            range=NON_NEGATIVE)
    num_epochs: int = setting(4, 'kept epochs analysed when epochs is empty', range=AT_LEAST_1)
    stages: tuple = setting((), 'stages analysed (empty: all)', range='stage names of the model')
    kappa: float = setting(0.0, 'margin of the MFTMA capacity', range=NON_NEGATIVE)
    n_t: int = setting(200, 'Gaussian samples t per manifold (reference: 200)', range=AT_LEAST_1)
    max_features: int = setting(5000, 'layers wider than this are randomly projected to it (reference: 5000)',
                                range=AT_LEAST_1)
    solver_iterations: int = setting(20000, 'iteration cap of the batched QP solver (a warning when reached)',
                                     range=AT_LEAST_1)
    forward_batch: int = setting(500, 'examples per forward pass', range=AT_LEAST_1)
    seed: int = setting(0, 'seed of the example choice, projection and t samples', range=SEED)

    def validate(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise self.error('classes', 'names a class twice; give each class once')
        if len(self.classes) == 1:
            raise self.error('classes', 'has one class; MFTMA needs two class manifolds or more')

    def check_model(self, model) -> None:
        model.select_stages(self.stages, 'analysis.manifolds.stages')

    def check_data(self, data) -> None:
        classes = self.classes or tuple(range(data.num_classes))
        outside = [c for c in classes if c >= data.num_classes]
        if outside:
            raise self.error('classes', f'has {outside[0]}, not a class of {data.name} (0..{data.num_classes - 1})')
        counts = data.clean_class_counts()[:, list(classes)]  # [R, c]: each replica's clean examples per class
        most = int(counts.min())
        if self.examples_per_class > most:
            replica, column = np.unravel_index(np.argmin(counts), counts.shape)
            raise self.error('examples_per_class', f'is more than the {most} clean training examples of class '
                             f'{classes[column]} in replica r={data.noise_ratios[replica]:g}, seed '
                             f'{data.seeds[replica]}; set it to at most {most}')


def choose_epochs(run: Run, s: Settings) -> list[int]:
    if s.epochs:
        return run.kept_epochs(s.epochs, 'analysis.manifolds.epochs')
    kept = run.epochs()
    picks = np.unique(np.round(np.linspace(0, len(kept) - 1, min(s.num_epochs, len(kept)))).astype(int))
    return [kept[i] for i in picks]


def manifold_examples(run: Run, replica: int, s: Settings, classes: list[int]) -> dict[str, list[np.ndarray]]:
    """Training-example indices of every manifold: {kind: [indices [M_c] per class]} (kinds with data only)."""
    rng = np.random.default_rng([s.seed, replica])
    true, noisy = run.noise['true_labels'], run.noise['labels'][replica]
    relabelled = run.noise['noise_mask'][replica]
    out: dict[str, list[np.ndarray]] = {}
    kept = [rng.permutation(np.flatnonzero(~relabelled & (true == c)))[:s.examples_per_class] for c in classes]
    short = [c for c, idx in zip(classes, kept) if idx.size < s.examples_per_class]
    if short:
        raise ConfigError(f"analysis.manifolds.examples_per_class={s.examples_per_class} is more than the clean "
                          f"training examples of class {short[0]} in replica {run.replicas[replica].name}; lower it")
    out['unpermuted'] = kept
    if relabelled.any():
        permuted = [rng.permutation(np.flatnonzero(relabelled & (noisy == c)))[:s.examples_per_class]
                    for c in classes]
        permuted = [idx for idx in permuted if idx.size >= s.min_examples]
        if len(permuted) >= 2:
            out['permuted'] = permuted
            chosen = np.concatenate(permuted)
            restored = [chosen[true[chosen] == c] for c in classes]
            restored = [idx for idx in restored if idx.size >= s.min_examples]
            if len(restored) >= 2:  # like permuted: MFTMA needs two manifolds or more
                out['restored'] = restored
    return out


class FeatureMaker:
    """Flattened float32 outputs [n, D_l] of the chosen stages for one replica's variables (the run's
    runner, compiled once per process)."""

    def __init__(self, run: Run, stages: tuple[str, ...], batch: int):
        self.stages, self.batch = stages, batch
        self._capture = run.runner.jitted('features', outputs=tuple(stages), pooling='flatten')

    def __call__(self, variables, images: np.ndarray) -> list[np.ndarray]:
        parts = [self._capture(variables, images[i:i + self.batch]) for i in range(0, images.shape[0], self.batch)]
        return [np.concatenate([np.asarray(p[l]) for p in parts]) for l in range(len(self.stages))]


def run(run: Run, s: Settings, context: Context) -> None:
    model, data = run.model, run.dataset
    stages = model.select_stages(s.stages, 'analysis.manifolds.stages')
    classes = list(s.classes) or list(range(data.num_classes))
    epochs = choose_epochs(run, s)
    features = FeatureMaker(run, stages, s.forward_batch)
    examples = {i: manifold_examples(run, i, s, classes) for i in range(len(run.replicas))}
    for i, rep in enumerate(run.replicas):
        if rep.noise_ratio > 0 and 'permuted' not in examples[i]:
            context.log(f'  manifolds: {rep.name} has fewer than 2 classes with analysis.manifolds.min_examples='
                        f'{s.min_examples} relabelled examples; only its unpermuted manifolds are analysed')
    context.log(f'manifolds: {len(run.replicas)} replicas x {len(epochs)} epochs x {len(stages)} stages, '
                f'{len(classes)} classes x {s.examples_per_class} examples, n_t={s.n_t}')
    rows = []
    bar = context.progress(len(run.replicas) * len(epochs), 'manifolds (replica, epoch)')
    for epoch in epochs:
        for i in range(len(run.replicas)):
            index = np.unique(np.concatenate([idx for groups in examples[i].values() for idx in groups]))
            position = {int(e): k for k, e in enumerate(index)}
            outputs = features(run.replica_variables(epoch, i), data.train_images[index])
            for layer, out in zip(stages, outputs):
                for kind, groups in examples[i].items():
                    manifolds = [out[[position[int(e)] for e in idx]] for idx in groups]
                    with warnings.catch_warnings():  # non-convergence is recorded per row instead
                        warnings.simplefilter('ignore', UserWarning)
                        result = manifold_analysis(manifolds, kappa=s.kappa, n_t=s.n_t, seed=s.seed,
                                                   max_features=s.max_features, max_iters=s.solver_iterations)
                    rows.append({**run.row(i), 'epoch': epoch, 'granularity': GRANULARITY, 'layer': layer,
                                 'kind': kind,
                                 **{k: result[k] for k in ('capacity', 'radius', 'dimension',
                                                           'center_correlation', 'K')},
                                 'solver_converged': bool(result['solver']['converged']),
                                 'solver_residual': float(result['solver']['max_kkt_residual'])})
            bar.update(1)
    bar.close()
    write_csv(os.path.join(context.output, 'manifolds.csv'), rows, COLUMNS)
    unconverged = [r for r in rows if not r['solver_converged']]
    if unconverged:
        context.log(f'  manifolds: the QP solver reached analysis.manifolds.solver_iterations={s.solver_iterations} '
                    f'in {len(unconverged)} of {len(rows)} rows (largest KKT residual '
                    f"{max(r['solver_residual'] for r in unconverged):.1e}; column solver_converged)")
    for i, rep in enumerate(run.replicas):
        geometry_by_layer(os.path.join(context.figures, f'manifolds_r{rep.noise_ratio:g}_s{rep.seed}.png'),
                          [r for r in rows if r['replica'] == i], stages, epochs,
                          f'MFTMA class manifolds per {GRANULARITY}, {model.name}, {rep.name}', GRANULARITY)
    context.log('  manifolds: results/manifolds/manifolds.csv, figures/manifolds_r*_s*.png')
