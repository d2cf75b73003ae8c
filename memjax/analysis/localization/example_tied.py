"""Example-tied dropout (P3 section 6.2, Tables 1-3), trained next to its baselines.

Trains fresh models on the run's data with the noisy labels of one of its
replicas, with the run's optimizer and schedule, one model per variant
(`memjax.analysis.localization.dropout_masks`): example-tied dropout at (p_gen, p_mem),
optionally a p_gen x p_mem grid (Table 2), standard dropout and a sparse
network at the same p (Table 3). All variants train side by side (lifted over
variants, same data order). Each is then evaluated three ways:

- as_trained: training examples with their own memorization channels,
  held-out examples with the generalization channels;
- generalization: memorization channels dropped (the paper's "after");
- all: every channel on.

Table 1's "before -> after" is reported as clean / noisy training accuracy
as_trained -> generalization, and test accuracy all -> generalization.
Written: results/example_tied/{example_tied.csv, table.txt}.
"""

from __future__ import annotations

import dataclasses
import itertools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from memjax.analysis.localization.dropout_masks import MODES, evaluation_mask, training_mask
from memjax.analysis.localization.neurons import full_masks
from memjax.data.pipeline import normalize
from memjax.analysis.lifting import STRATEGIES, Lifted
from memjax.analysis.settings import AnalysisSettings, Context, setting
from memjax.errors import ConfigError
from memjax.report.tables import text_table, write_csv
from memjax.run import Run
from memjax.train.metrics import accuracy
from memjax.train.state import make_optimizer
from memjax.train.step import cross_entropy

NAME = 'example_tied'
EVALUATIONS = ('as_trained', 'generalization', 'all')


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.example_tied`: example-tied dropout and its baselines (P3 section 6.2)."""

    variants: tuple = setting((('example_tied', 0.4, 0.2, 0.0), ('standard', 0.0, 0.0, 0.4),
                               ('sparse', 0.4, 0.0, 0.0)),
                              '(mode, p_gen, p_mem, p_drop); modes: example_tied | standard | sparse | none')
    grid_p_gen: tuple = setting((), 'with grid_p_mem: example-tied variants for every pair (P3 Table 2)')
    grid_p_mem: tuple = setting((), 'see grid_p_gen')
    noise_ratio: float | None = setting(None, "whose labels are trained on (None: the first noisy replica)")
    epochs: int | None = setting(None, 'training epochs (None: train.epochs)')
    strategy: str = setting('loop', 'vmap or loop over the variants', choices=STRATEGIES)
    seed: int = setting(0, 'seed of the masks and batch order')

    def validate(self) -> None:
        self.all_variants()

    def all_variants(self) -> list[tuple]:
        grid = [('example_tied', g, m, 0.0) for g, m in itertools.product(self.grid_p_gen, self.grid_p_mem)]
        variants = list(self.variants) + [v for v in grid if v not in self.variants]
        for v in variants:
            if v[0] not in MODES:
                raise ConfigError(f"analysis.example_tied variant {v!r}: mode must be one of {', '.join(MODES)}")
            if not (0 <= v[1] <= 1 and 0 <= v[2] <= 1 - v[1] and 0 <= v[3] < 1):
                raise ConfigError(f"analysis.example_tied variant {v!r}: need 0 <= p_gen, p_mem with "
                                  "p_gen + p_mem <= 1, and 0 <= p_drop < 1")
        return variants


def run(run: Run, s: Settings, context: Context) -> None:
    log = context.log
    model, data, train_cfg = run.model, run.dataset, run.config.train
    noisy = [r for r in run.replicas if r.noise_ratio > 0 and (s.noise_ratio is None or r.noise_ratio == s.noise_ratio)]
    if not noisy:
        raise ConfigError(f'example_tied: no noisy replica with noise_ratio={s.noise_ratio}; this run has '
                          f"{', '.join(r.name for r in run.replicas)}")
    replica = noisy[0]
    variants = s.all_variants()
    table = jnp.asarray([[MODES[v[0]], v[1], v[2], v[3]] for v in variants], jnp.float32)
    epochs = int(s.epochs or train_cfg.epochs)
    batch, n = int(train_cfg.batch_size), data.num_train
    steps = n // batch
    schedule_cfg = ml_collections.ConfigDict(train_cfg.to_dict())
    schedule_cfg.epochs = epochs
    tx = make_optimizer(schedule_cfg, steps)
    labels = jnp.asarray(run.noise['labels'][replica.index])
    mask_noisy = run.noise['noise_mask'][replica.index]
    images = jnp.asarray(data.train_images)
    mean, std = jnp.asarray(data.mean), jnp.asarray(data.std)
    key = jax.random.PRNGKey(s.seed)
    init = model.init(jax.random.PRNGKey(int(train_cfg.init_seed)), data.image_shape)
    channels = {name: int(m.shape[0]) for name, m in full_masks(model, init, data.image_shape).items()}
    stage_ids = {name: i for i, name in enumerate(model.stage_names)}
    lift = Lifted(s.strategy, len(variants))

    def masks_for(fn):
        return {name: fn(stage_ids[name], c) for name, c in channels.items()}

    def step(variables, opt_state, variant, idx, step_key):
        x = normalize(images[idx], mean, std, model.dtype)
        masks = masks_for(lambda l, c: jax.vmap(lambda i: training_mask(variant, key, l, i, step_key, c))(idx))

        def loss_fn(params):
            out = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, x, train=True, masks=masks)
            return cross_entropy(out.output, labels[idx]), out.batch_stats

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])
        updates, opt_state = tx.update(grads, opt_state, variables['params'])
        return {'params': jax.tree_util.tree_map(jnp.add, variables['params'], updates), 'batch_stats': stats}, \
            opt_state, loss

    def predict(variables, variant, x_u8, index, how):
        masks = masks_for(lambda l, c: jax.vmap(lambda i: evaluation_mask(variant, key, l, i, c, how))(index))
        out = model.apply(variables, normalize(x_u8, mean, std, model.dtype), masks=masks)
        return jnp.argmax(out.output, -1)

    stacked = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (len(variants), *x.shape)), init)
    variables = stacked
    opt_state = lift(lambda v: tx.init(v['params']), (True,), variables)
    bar = context.progress(epochs * steps, 'example_tied steps')
    log(f'example_tied: {len(variants)} variants trained {epochs} epochs on the labels of replica {replica.name}')
    for epoch in range(1, epochs + 1):
        order = np.random.default_rng([s.seed, epoch]).permutation(n)
        for b in range(steps):
            idx = jnp.asarray(order[b * batch:(b + 1) * batch])
            step_key = jax.random.fold_in(jax.random.fold_in(key, epoch), b)
            variables, opt_state, _ = lift(step, (True, True, True, False, False), variables, opt_state,
                                           table, idx, step_key)
            bar.update(1)
    bar.close()

    rows = []
    splits = {'train': (data.train_images, np.arange(n)), 'test': (data.test_images, -np.ones(data.test_labels.size, int))}
    predictions = {}
    for how in EVALUATIONS:
        fn = lambda v, t, x, i, how=how: predict(v, t, x, i, how)
        for split, (x_all, index) in splits.items():
            parts = [np.asarray(lift(fn, (True, True, False, False), variables, table,
                                     jnp.asarray(x_all[lo:lo + 1000]), jnp.asarray(index[lo:lo + 1000])))
                     for lo in range(0, x_all.shape[0], 1000)]
            predictions[(how, split)] = np.concatenate(parts, axis=1)
    true = data.train_labels
    noisy_labels = np.asarray(labels)
    for k, v in enumerate(variants):
        row = {'variant': v[0], 'p_gen': v[1], 'p_mem': v[2], 'p_drop': v[3]}
        for how in EVALUATIONS:
            train_pred = predictions[(how, 'train')][k]
            row[f'clean_{how}'] = accuracy(train_pred, true, ~mask_noisy)
            row[f'noisy_{how}'] = accuracy(train_pred, noisy_labels, mask_noisy)
            row[f'test_{how}'] = accuracy(predictions[(how, 'test')][k], data.test_labels)
        rows.append(row)
    out = context.output
    columns = ['variant', 'p_gen', 'p_mem', 'p_drop'] + [f'{m}_{h}' for h in EVALUATIONS for m in ('clean', 'noisy', 'test')]
    write_csv(os.path.join(out, 'example_tied.csv'), rows, columns)
    summary = [{'variant': r['variant'], 'p_gen': r['p_gen'], 'p_mem': r['p_mem'], 'p_drop': r['p_drop'],
                'clean before->after': f"{r['clean_as_trained']:.3f} -> {r['clean_generalization']:.3f}",
                'noisy before->after': f"{r['noisy_as_trained']:.3f} -> {r['noisy_generalization']:.3f}",
                'test before->after': f"{r['test_all']:.3f} -> {r['test_generalization']:.3f}"} for r in rows]
    text = (f'Example-tied dropout and baselines on the labels of replica {replica.name} ({epochs} epochs).\n'
            'before = as trained (test: all channels); after = memorization channels dropped\n'
            + text_table(summary, list(summary[0])) + '\n')
    with open(os.path.join(out, 'table.txt'), 'w') as f:
        f.write(text)
    log(text + '  example_tied: results/example_tied/example_tied.csv, table.txt')
