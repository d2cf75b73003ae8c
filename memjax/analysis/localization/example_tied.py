"""Example-tied dropout (P3 section 6.2, Tables 1-3), trained next to its baselines.

Trains fresh models on the run's data with the noisy labels of one of its
replicas, with the run's optimizer, schedule and augmentation, one model per
variant (`memjax.analysis.localization.dropout_masks`): example-tied dropout
at (p_gen, p_mem), optionally a p_gen x p_mem grid (Table 2), standard
dropout and a sparse network (Table 3). Every variant trains through the
trainer's own compiled step (`memjax.train.step.make_train_chunk` with a
mask hook), in the same data order. Each is then evaluated three ways
(P3's code's modes):

- as_trained (P3's "train" mode): each training example with its own
  memorization channels, unscaled, as in training (training accuracies only;
  held-out examples own no channels);
- expected (P3's "test" mode): generalization channels as they are,
  memorization channels multiplied by p_mem;
- drop (P3's "drop" mode): memorization channels zeroed, generalization
  channels multiplied by (p_gen + p_mem) / p_gen.

P3 Table 1, as memjax reads it: "before" = the clean and noisy TRAINING
accuracies as_trained (P3: "the model almost perfectly fits on all the noisy
data at training time"; noisy 99.3% before dropping) and the TEST accuracy
under expected (the mode P3's code names for test time); "after" = drop for
all three columns. The `table1` column of table.csv marks which rows give
which cells, and table.txt prints exactly that before -> after.

Baselines evaluate the same way under every name (standard dropout: no
dropout at evaluation; sparse: its fixed mask). noisy_accuracy is the
relabelled training examples against their NOISY labels (memorization).
Written: results/example_tied/{table.csv, table.txt}.
"""

from __future__ import annotations

import dataclasses
import itertools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from memjax.analysis.localization.dropout_masks import (DRAWS, EVALUATIONS, MODES, evaluation_mask,
                                                        training_mask)
from memjax.analysis.settings import AnalysisSettings, Context, setting
from memjax.data.pipeline import normalize
from memjax.errors import ConfigError
from memjax.report.tables import text_table, write_csv
from memjax.run import Run
from memjax.train.metrics import accuracy
from memjax.train.state import init_state, make_optimizer
from memjax.train.step import make_train_chunk

NAME = 'example_tied'
COLUMNS = ('variant', 'p_gen', 'p_mem', 'p_drop', 'draw', 'evaluation', 'table1', 'clean_accuracy',
           'noisy_accuracy', 'test_accuracy')
# Which cells of P3 Table 1 each evaluation gives (see the module doc).
TABLE1 = {'as_trained': 'before: clean, noisy', 'expected': 'before: test', 'drop': 'after: clean, noisy, test'}


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.example_tied`: example-tied dropout and its baselines (P3 section 6.2)."""

    variants: tuple = setting((('example_tied', 0.4, 0.2, 0.0), ('standard', 0.0, 0.0, 0.4),
                               ('sparse', 0.4, 0.0, 0.0)),
                              '(mode, p_gen, p_mem, p_drop); modes: example_tied | standard | sparse | none; '
                              'standard drops each element with probability p_drop (P3: p_gen); sparse keeps '
                              'the fraction p_gen of each stage\'s elements (P3: remaining fraction p_gen)')
    grid_p_gen: tuple = setting((), 'with grid_p_mem: example-tied variants for every pair (P3 Table 2)')
    grid_p_mem: tuple = setting((), 'see grid_p_gen')
    draw: str = setting('bernoulli', "an example's memorization channels: each non-generalization channel with "
                        'probability p_mem (P3 code), or exactly round(p_mem x their number)', choices=DRAWS)
    noise_ratio: float | None = setting(None, "whose labels are trained on (None: the first noisy replica)")
    epochs: int | None = setting(None, 'training epochs (None: train.epochs)')
    seed: int = setting(0, 'seed of the masks and batch order')

    def validate(self) -> None:
        self.all_variants()

    def all_variants(self) -> list[tuple]:
        grid = [('example_tied', g, m, 0.0) for g, m in itertools.product(self.grid_p_gen, self.grid_p_mem)]
        variants = list(self.variants) + [v for v in grid if v not in self.variants]
        for v in variants:
            if v[0] not in MODES:
                raise ConfigError(f"analysis.example_tied variant {v!r}: mode must be one of {', '.join(MODES)}")
            if not (0 <= v[1] <= 1 and 0 <= v[2] <= 1 and 0 <= v[3] < 1):
                raise ConfigError(f"analysis.example_tied variant {v!r}: need p_gen, p_mem in [0, 1] and "
                                  "0 <= p_drop < 1")
            if v[0] == 'example_tied' and v[1] <= 0:
                raise ConfigError(f"analysis.example_tied variant {v!r}: example-tied needs p_gen > 0 (its "
                                  "'drop' evaluation scales by (p_gen + p_mem) / p_gen)")
            if v[0] == 'sparse' and (v[1] <= 0 or v[2] != 0 or v[3] != 0):
                raise ConfigError(f"analysis.example_tied variant {v!r}: a sparse network keeps the fraction p_gen "
                                  "of each stage's elements (P3: remaining fraction p_gen); give p_gen > 0 and "
                                  "p_mem = p_drop = 0, e.g. ('sparse', 0.4, 0.0, 0.0)")
        return variants


def stage_shapes(model, image_shape) -> dict:
    """{stage: one example's output shape} for every stage but the last (the masked ones)."""
    zeros = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    init = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), image_shape))
    out = jax.eval_shape(lambda v, x: model.apply(v, x, capture=True), init, zeros)
    return {name: tuple(out.features[name].shape[1:]) for name in model.stage_names[:-1]}


def _replica(run: Run, s: Settings):
    noisy = [r for r in run.replicas if r.noise_ratio > 0 and (s.noise_ratio is None or r.noise_ratio == s.noise_ratio)]
    if not noisy:
        raise ConfigError(f'example_tied: no noisy replica with noise_ratio={s.noise_ratio}; this run has '
                          f"{', '.join(r.name for r in run.replicas)}")
    return noisy[0]


def run(run: Run, s: Settings, context: Context) -> None:
    log = context.log
    model, data, train_cfg = run.model, run.dataset, run.config.train
    replica = _replica(run, s)
    variants = s.all_variants()
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
    shapes = stage_shapes(model, data.image_shape)
    stage_ids = {name: i for i, name in enumerate(model.stage_names)}
    orders = [jnp.asarray(np.random.default_rng([s.seed, epoch]).permutation(n), jnp.int32)
              for epoch in range(epochs + 1)]
    data_key = jax.random.fold_in(key, 7)
    noise_mask = jnp.asarray(mask_noisy)
    log(f'example_tied: {len(variants)} variants trained {epochs} epochs on the labels of replica {replica.name} '
        f'(memorization channels: {s.draw})')

    def trained(variant_row) -> dict:
        variant = jnp.asarray(variant_row, jnp.float32)

        def masks_fn(idx, epoch, step):
            step_key = jax.random.fold_in(jax.random.fold_in(key, epoch), step)
            return {name: jax.vmap(lambda i: training_mask(variant, key, stage_ids[name], i, step_key, shape,
                                                           s.draw))(idx)
                    for name, shape in shapes.items()}

        chunk = jax.jit(make_train_chunk(model, tx, batch_size=batch, augment=bool(run.config.data.augment),
                                         mean=data.mean, std=data.std, masks_fn=masks_fn),
                        static_argnames='num_steps')
        state = init_state(model, tx, jax.random.PRNGKey(int(train_cfg.init_seed)), data.image_shape)
        for epoch in range(1, epochs + 1):
            for b in range(steps):
                state, _ = chunk(state, images, labels, noise_mask, orders[epoch], epoch, b, data_key, True,
                                 num_steps=1)
                bar.update(1)
        return state.variables

    def predictions(variables, variant_row, how: str, x_all, index) -> np.ndarray:
        variant = jnp.asarray(variant_row, jnp.float32)

        @jax.jit
        def predict(x_u8, idx):
            masks = {name: jax.vmap(lambda i: evaluation_mask(variant, key, stage_ids[name], i, shape, how,
                                                              s.draw))(idx)
                     for name, shape in shapes.items()}
            out = model.apply(variables, normalize(x_u8, mean, std, model.dtype), masks=masks)
            return jnp.argmax(out.output, -1)

        return np.concatenate([np.asarray(predict(jnp.asarray(x_all[lo:lo + 1000]), jnp.asarray(index[lo:lo + 1000])))
                               for lo in range(0, x_all.shape[0], 1000)])

    bar = context.progress(len(variants) * epochs * steps, 'example_tied steps')
    rows = []
    for v in variants:
        variant_row = [MODES[v[0]], v[1], v[2], v[3]]
        variables = trained(variant_row)
        for how in EVALUATIONS:
            train_pred = predictions(variables, variant_row, how, data.train_images, np.arange(n))
            test = None if how == 'as_trained' else accuracy(
                predictions(variables, variant_row, how, data.test_images, np.zeros(data.test_labels.size, int)),
                data.test_labels)
            rows.append({'variant': v[0], 'p_gen': v[1], 'p_mem': v[2], 'p_drop': v[3],
                         'draw': s.draw if v[0] == 'example_tied' else '', 'evaluation': how, 'table1': TABLE1[how],
                         'clean_accuracy': accuracy(train_pred, data.train_labels, ~mask_noisy),
                         'noisy_accuracy': accuracy(train_pred, np.asarray(labels), mask_noisy),
                         'test_accuracy': test})
    bar.close()
    out = context.output
    write_csv(os.path.join(out, 'table.csv'), rows, COLUMNS)
    text = (f'Example-tied dropout and baselines on the labels of replica {replica.name} ({epochs} epochs).\n'
            + summary_text(rows) + '\n')
    with open(os.path.join(out, 'table.txt'), 'w') as f:
        f.write(text)
    log(text + '  example_tied: results/example_tied/table.csv, table.txt')


def summary_text(rows: list[dict]) -> str:
    """One line per variant: P3 Table 1's clean / noisy / test accuracy before -> after (see the module doc), and
    the training accuracies under expected."""
    by = {(r['variant'], r['p_gen'], r['p_mem'], r['p_drop'], r['evaluation']): r for r in rows}
    summary = []
    for (variant, g, m, d, how), expected in by.items():
        if how != 'expected':
            continue
        after, trained = by[(variant, g, m, d, 'drop')], by[(variant, g, m, d, 'as_trained')]
        before = {'clean': trained['clean_accuracy'], 'noisy': trained['noisy_accuracy'],
                  'test': expected['test_accuracy']}
        summary.append({'variant': variant, 'p_gen': g, 'p_mem': m, 'p_drop': d,
                        **{f'{k} before->after': f"{before[k]:.3f} -> {after[f'{k}_accuracy']:.3f}"
                           for k in ('clean', 'noisy', 'test')},
                        'clean/noisy expected': f"{expected['clean_accuracy']:.3f} / {expected['noisy_accuracy']:.3f}"})
    return ('P3 Table 1: before = clean and noisy training accuracy as_trained (each example with its own '
            'memorization channels, as in training), test accuracy expected (memorization channels x p_mem, P3\'s '
            '"test" mode); after = drop (memorization channels zeroed, generalization channels x (p_gen + p_mem) / '
            'p_gen); noisy = relabelled training examples against their noisy labels\n'
            + text_table(summary, list(summary[0])))
