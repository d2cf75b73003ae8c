"""Example-tied dropout (P3 section 6.2, Tables 1-3), trained next to its baselines.

Trains fresh models on the run's data with the noisy labels of one of its
replicas, with the run's optimizer, schedule and augmentation, one model per
variant (`memjax.analysis.localization.dropout_masks`): example-tied dropout
at (p_gen, p_mem), optionally a p_gen x p_mem grid (Table 2), standard
dropout and a sparse network (Table 3). Every variant trains with the run's
trainable (`memjax.train.trainable.ClassifierTrainable`) and a mask hook, in
the same data order, all variants together as the models of one fit (the
variant is data: one compiled step serves them all). Each is then evaluated
three ways (P3's code's modes):

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
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from memjax.analysis.localization.dropout_masks import (DRAWS, EVALUATIONS, MODES, evaluation_mask,
                                                        training_mask)
from memjax.analysis.settings import AT_LEAST_1, AnalysisSettings, Context, FRACTION, Range, SEED, setting
from memjax.engine.fit import Batches, fit
from memjax.engine.lifting import lift, per_replica, stacked
from memjax.errors import ConfigError
from memjax.report.tables import text_table, write_csv
from memjax.run import Run
from memjax.rundir import write_text
from memjax.train.metrics import accuracy
from memjax.train.state import OptimizerSpec
from memjax.train.trainable import ClassifierTrainable

NAME = 'example_tied'
COLUMNS = ('variant', 'p_gen', 'p_mem', 'p_drop', 'draw', 'evaluation', 'table1', 'clean_accuracy',
           'noisy_accuracy', 'test_accuracy')
# Which cells of P3 Table 1 each evaluation gives (see the module doc).
TABLE1 = {'as_trained': 'before: clean, noisy', 'expected': 'before: test', 'drop': 'after: clean, noisy, test'}


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.example_tied`: example-tied dropout and its baselines (P3 section 6.2)."""

    KEY: ClassVar[str] = 'example_tied'
    SMOKE: ClassVar[dict] = dict(epochs=1, variants=(('example_tied', 0.4, 0.2, 0.0),))

    variants: tuple = setting((('example_tied', 0.4, 0.2, 0.0), ('standard', 0.0, 0.0, 0.4),
                               ('sparse', 0.4, 0.0, 0.0)),
                              '(mode, p_gen, p_mem, p_drop); modes: example_tied | standard | sparse | none; '
                              'standard drops each element with probability p_drop (P3: p_gen); sparse keeps '
                              'the fraction p_gen of each stage\'s elements (P3: remaining fraction p_gen)',
                              range='(mode, p_gen, p_mem, p_drop) with p_gen + p_mem <= 1, 0 <= p_drop < 1')
    grid_p_gen: tuple = setting((), 'with grid_p_mem: example-tied variants for every pair (P3 Table 2)',
                                range=Range(0, 1, low_open=True))
    grid_p_mem: tuple = setting((), 'see grid_p_gen', range=FRACTION)
    draw: str = setting('bernoulli', "an example's memorization channels: each non-generalization channel with "
                        'probability p_mem (P3 code), or exactly round(p_mem x their number)', choices=DRAWS)
    noise_ratio: float | None = setting(None, "whose labels are trained on (None: the first noisy replica)",
                                        range=Range(0, 1, low_open=True))
    epochs: int | None = setting(None, 'training epochs (None: train.epochs)', range=AT_LEAST_1)
    seed: int = setting(0, 'seed of the masks and batch order', range=SEED)

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
            if v[0] == 'example_tied' and v[1] + v[2] > 1 + 1e-9:
                raise ConfigError(f"analysis.example_tied variant {v!r}: p_gen + p_mem = {v[1] + v[2]:g} > 1, but "
                                  "the memorization channels are drawn from the 1 - p_gen channels left; lower them")
            if v[0] == 'example_tied' and v[1] <= 0:
                raise ConfigError(f"analysis.example_tied variant {v!r}: example-tied needs p_gen > 0 (its "
                                  "'drop' evaluation scales by (p_gen + p_mem) / p_gen)")
            if v[0] == 'sparse' and (v[1] <= 0 or v[2] != 0 or v[3] != 0):
                raise ConfigError(f"analysis.example_tied variant {v!r}: a sparse network keeps the fraction p_gen "
                                  "of each stage's elements (P3: remaining fraction p_gen); give p_gen > 0 and "
                                  "p_mem = p_drop = 0, e.g. ('sparse', 0.4, 0.0, 0.0)")
        return variants

    def check_data(self, data) -> None:
        noisy = sorted({r for r in data.noise_ratios if r > 0})
        if not noisy:
            raise ConfigError('analysis.example_tied trains on the labels of a noisy replica, and this run has none; '
                              'add a ratio r > 0 to noise.ratios')
        if self.noise_ratio is not None and not any(abs(self.noise_ratio - r) < 1e-9 for r in noisy):
            raise self.error('noise_ratio', f"is not a noise ratio of this run's noisy replicas "
                             f"({', '.join(f'{r:g}' for r in noisy)}); pick one, or None for the first")


def stage_shapes(model, image_shape) -> tuple:
    """((stage, one example's output shape), ...) for every stage but the last (the masked ones)."""
    return tuple(model.stage_output_shapes(image_shape).items())[:-1]


@dataclasses.dataclass(frozen=True)
class VariantMasks:
    """The stage masks of a batch under a variant row (mode, p_gen, p_mem, p_drop), from the example indices.

    Value-hashable, so every variant trains through one compiled step (the variant is data, not code).
    """

    seed: int
    draw: str
    shapes: tuple
    stage_ids: tuple

    @property
    def key(self):
        return jax.random.PRNGKey(self.seed)

    def __call__(self, idx, epoch, step, variant):
        """Training masks {stage: [B, ...]} of the batch idx [B] (a step of `ClassifierTrainable`)."""
        key, ids = self.key, dict(self.stage_ids)
        step_key = jax.random.fold_in(jax.random.fold_in(key, epoch), step)
        return {name: jax.vmap(lambda i: training_mask(variant, key, ids[name], i, step_key, shape, self.draw))(idx)
                for name, shape in self.shapes}

    def evaluation(self, idx, variant, how: str):
        key, ids = self.key, dict(self.stage_ids)
        return {name: jax.vmap(lambda i: evaluation_mask(variant, key, ids[name], i, shape, how, self.draw))(idx)
                for name, shape in self.shapes}


@dataclasses.dataclass(frozen=True)
class VariantPredict:
    """One variant's predictions [B] of images [B, ...] (training examples `index` [B]) under evaluation `how`."""

    runner: Any
    masks: VariantMasks

    def __call__(self, variables, images, index, variant, *, how: str):
        return self.runner.predict(variables, images, self.masks.evaluation(index, variant, how))


def _replica(run: Run, s: Settings):
    noisy = [r for r in run.replicas if r.noise_ratio > 0 and (s.noise_ratio is None or r.noise_ratio == s.noise_ratio)]
    if not noisy:
        raise ConfigError(f'example_tied: no noisy replica with noise_ratio={s.noise_ratio}; this run has '
                          f"{', '.join(r.name for r in run.replicas)}")
    return noisy[0]


def train_variants(run: Run, s: Settings, replica, variants: list[tuple], context: Context):
    """Every variant trained from the run's initialisation on the replica's labels, all together (one model
    per variant, lifted): variables stacked [V, ...]."""
    model, data, train = run.model, run.dataset, run.settings.train
    epochs = s.epochs or train.epochs
    batch, n = train.batch_size, data.num_train
    steps = n // batch
    masks = VariantMasks(s.seed, s.draw, stage_shapes(model, data.image_shape),
                         tuple((name, i) for i, name in enumerate(model.stage_names)))
    trainable = ClassifierTrainable(run.runner, OptimizerSpec.from_train(train, steps, epochs=epochs),
                                    augment=run.settings.data.augment, masks=masks)
    lifting = context.lifting(len(variants))
    start = model.init(jax.random.PRNGKey(train.init_seed), data.image_shape)
    one = trainable.init(start)
    state = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (len(variants), *jnp.shape(x))), one)

    def batches(epoch: int) -> Batches:
        order = np.random.default_rng([s.seed, epoch]).permutation(n)[:steps * batch]
        return Batches(jnp.asarray(order, jnp.int32), np.full(len(variants), steps))

    rows = jnp.asarray([[MODES[v[0]], v[1], v[2], v[3]] for v in variants], jnp.float32)
    common = {'pool': jnp.asarray(data.train_images), 'labels': jnp.asarray(run.noise['labels'][replica.index]),
              'data_key': jax.random.fold_in(jax.random.PRNGKey(s.seed), 7)}
    state = fit(trainable, state, epochs=range(1, epochs + 1), batches=batches, own={'mask_data': rows},
                common=common, lifting=lifting, batch_size=batch,
                progress=lambda total, name: context.progress(total, f'example_tied {name}'))
    return stacked(per_replica(state, lambda st: st.variables)), masks, rows, epochs


def run(run: Run, s: Settings, context: Context) -> None:
    data = run.dataset
    replica = _replica(run, s)
    variants = s.all_variants()
    labels = np.asarray(run.noise['labels'][replica.index])
    mask_noisy = run.noise['noise_mask'][replica.index]
    context.log(f'example_tied: {len(variants)} variants trained {s.epochs or run.settings.train.epochs} epochs on '
                f'the labels of replica {replica.name} (memorization channels: {s.draw})')
    variables, masks, variant_rows, epochs = train_variants(run, s, replica, variants, context)
    program = lift(VariantPredict(run.runner, masks), ('variables', 'variant'), context.lifting(len(variants)),
                   static=('how',))

    def predictions(how: str, images: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(stacked(program(
            variables=variables, images=jnp.asarray(images[lo:lo + 1000]), index=jnp.asarray(index[lo:lo + 1000]),
            variant=variant_rows, how=how))) for lo in range(0, images.shape[0], 1000)], axis=1)

    rows = []
    for how in EVALUATIONS:
        train_pred = predictions(how, data.train_images, np.arange(data.num_train))
        test_pred = None if how == 'as_trained' else predictions(how, data.test_images,
                                                                 np.zeros(data.test_labels.size, int))
        for k, v in enumerate(variants):
            rows.append({'variant': v[0], 'p_gen': v[1], 'p_mem': v[2], 'p_drop': v[3],
                         'draw': s.draw if v[0] == 'example_tied' else '', 'evaluation': how, 'table1': TABLE1[how],
                         'clean_accuracy': accuracy(train_pred[k], data.train_labels, ~mask_noisy),
                         'noisy_accuracy': accuracy(train_pred[k], labels, mask_noisy),
                         'test_accuracy': None if test_pred is None else accuracy(test_pred[k], data.test_labels)})
    rows.sort(key=lambda r: [tuple(v) for v in variants].index((r['variant'], r['p_gen'], r['p_mem'], r['p_drop'])))
    out = context.output
    write_csv(os.path.join(out, 'table.csv'), rows, COLUMNS)
    text = (f'Example-tied dropout and baselines on the labels of replica {replica.name} ({epochs} epochs).\n'
            + summary_text(rows) + '\n')
    write_text(os.path.join(out, 'table.txt'), text)
    context.log(text + '  example_tied: results/example_tied/table.csv, table.txt')


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
