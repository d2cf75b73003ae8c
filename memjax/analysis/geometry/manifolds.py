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
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from memjax.analysis.geometry.mftma import manifold_analysis
from memjax.analysis.settings import AnalysisSettings, Context, setting
from memjax.data.pipeline import normalize
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

    examples_per_class: int = setting(50, 'points per class manifold (the reference wrapper: 50)')
    classes: tuple = setting((), 'classes analysed (empty: all)')
    min_examples: int = setting(10, 'a class manifold with fewer relabelled examples is left out')
    epochs: tuple = setting((), 'kept epochs (empty: num_epochs of them, evenly spaced, first and last)')
    num_epochs: int = setting(4, 'kept epochs analysed when epochs is empty')
    stages: tuple = setting((), 'stages analysed (empty: all)')
    kappa: float = setting(0.0, 'margin of the MFTMA capacity')
    n_t: int = setting(200, 'Gaussian samples t per manifold (reference: 200)')
    max_features: int = setting(5000, 'layers wider than this are randomly projected to it (reference: 5000)')
    solver_iterations: int = setting(20000, 'iteration cap of the batched QP solver (a warning when reached)')
    forward_batch: int = setting(500, 'examples per forward pass')
    seed: int = setting(0, 'seed of the example choice, projection and t samples')

    def validate(self) -> None:
        self.positive('examples_per_class', 'min_examples', 'num_epochs', 'n_t', 'max_features', 'forward_batch',
                      'solver_iterations')
        if self.min_examples < 2 or self.examples_per_class < 2:
            raise ConfigError('analysis.manifolds.examples_per_class and .min_examples must be at least 2 '
                              '(a manifold needs two points)')

    def check_model(self, model) -> None:
        model.select_stages(self.stages, 'analysis.manifolds.stages')


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
    """Flattened float32 outputs of the chosen stages for one replica's variables."""

    def __init__(self, run: Run, stages: tuple[str, ...], batch: int):
        model, data = run.model, run.dataset
        self.stages, self.batch = stages, batch
        stop = max(model.stage_index(s) for s in stages) + 1
        mean, std = jnp.asarray(data.mean), jnp.asarray(data.std)

        def capture(variables, images):
            out = model.apply(variables, normalize(images, mean, std, model.dtype), stop=stop, capture=stages)
            return tuple(out.features[s].astype(jnp.float32).reshape(images.shape[0], -1) for s in stages)

        self._capture = jax.jit(capture)

    def __call__(self, variables, images: np.ndarray) -> list[np.ndarray]:
        parts = [self._capture(variables, images[i:i + self.batch]) for i in range(0, images.shape[0], self.batch)]
        return [np.concatenate([np.asarray(p[l]) for p in parts]) for l in range(len(self.stages))]


def run(run: Run, s: Settings, context: Context) -> None:
    model, data = run.model, run.dataset
    stages = model.select_stages(s.stages, 'analysis.manifolds.stages')
    classes = list(s.classes) or list(range(data.num_classes))
    missing = [c for c in classes if not 0 <= int(c) < data.num_classes]
    if missing:
        raise ConfigError(f"analysis.manifolds.classes has {missing[0]}, not a class of {data.name} "
                          f"(0..{data.num_classes - 1}); fix analysis.manifolds.classes")
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
