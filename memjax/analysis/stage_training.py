"""Training exactly one unit (a stage, a layer or a P3 layer group) of K models, the rest frozen.

Shared by layer fine-tuning (P2 appendix A.1) and layer retraining (P3 5.2).
The unit is a `memjax.models.units.Unit` (a stage name means that stage).
Freezing goes through the optimizer (`memjax.train.freezing`): the unit's
params get the optimizer, the others `set_to_zero` and `stop_gradient`, and
come back bit-identical. BatchNorm during training, `batchnorm`:

- 'frozen': the stages holding the unit run in training mode (batch
  statistics), every other stage in evaluation mode (running statistics used);
  only the unit's running statistics are updated (for a unit inside a
  residual block, the block's other BatchNorm layers also use batch
  statistics in the forward pass, but keep their running statistics);
- 'live' (P3's retraining: the whole network in training mode): every
  BatchNorm uses batch statistics and updates its running statistics on the
  training batches; still only the trained stage's params change.

Evaluation (`predict`) always runs the whole network in evaluation mode.
Training steps pass a dropout key (one per model and step, from `seed`), so
models with dropout (P3's ViT) train with it on, as P3's retraining does.

Each of the K models trains on its own examples: `indices[k]` into a shared
image pool with `labels[k]` over that pool. Sets of different sizes are
handled by giving every model the same number of steps per epoch (the largest
set's) and masking the updates of a model whose epoch is over.

A set of n >= batch_size examples gives n // batch_size full batches per epoch
(the last partial batch dropped, as in training). A set smaller than one batch
(0 < n < batch_size) still trains: one step per epoch on a partial batch, its
n examples padded to the compiled batch shape by repeating them, the repeats
weighted 0 in the loss (the gradient is exactly the mean over the n examples;
the trained stage's BatchNorm batch statistics see the repeats too). An empty
set is a ConfigError: an untrained model is never reported as fine-tuned.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax.data.pipeline import normalize
from memjax.errors import ConfigError
from memjax.models import StagedModel
from memjax.models.layer_index import get_subtree, set_subtree
from memjax.models.units import Unit
from memjax.train import freezing
from memjax.analysis.lifting import Lifted

BATCHNORM_MODES = ('frozen', 'live')


def _where(active, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, old)


def _take_paths(old: dict, new: dict, paths, active) -> dict:
    """`old` with the subtrees at `paths` (those present) replaced by `where(active, new, old)`."""
    out = old
    for path in paths:
        before, after = get_subtree(old, path), get_subtree(new, path)
        if before is not None:
            out = set_subtree(out, path, _where(active, after, before))
    return out


class StageTrainer:
    """One stage of K models trained on per-model example sets (see module doc)."""

    def __init__(self, model: StagedModel, mean, std, unit: str | Unit, tx: optax.GradientTransformation,
                 batch_size: int, strategy: str, size: int, seed: int = 0, batchnorm: str = 'frozen'):
        if batchnorm not in BATCHNORM_MODES:
            raise ValueError(f'batchnorm {batchnorm!r} is not one of {BATCHNORM_MODES}')
        self.model, self.batch_size, self.seed, self.batchnorm = model, batch_size, seed, batchnorm
        if not isinstance(unit, Unit):
            unit = model.units('stage')[model.stage_index(unit)]
        self.unit = unit
        self.stage = unit.name  # its name, in messages
        self.unit_stages = {path[0] for path in unit.paths}
        self.mean, self.std = jnp.asarray(mean), jnp.asarray(std)
        shapes = jax.eval_shape(lambda key: model.init(key, model.example_shape), jax.random.PRNGKey(0))  # keys only
        self.labels = freezing.unit_labels(shapes['params'], unit.paths)
        self.tx = freezing.masked_optimizer(tx, self.labels)
        self.lift = Lifted(strategy, size)

    # One model -------------------------------------------------------------
    def _logits(self, variables, x, train_stage: bool, rng=None):
        if self.batchnorm == 'live' or not train_stage:
            run = self.model.apply(variables, x, train=train_stage, rng=rng)
            return run.output, run.batch_stats
        stats = variables.get('batch_stats', {})
        for i, name in enumerate(self.model.stage_names):
            run = self.model.apply({**variables, 'batch_stats': stats}, x, start=i, stop=i + 1,
                                   train=name in self.unit_stages, rng=rng)
            x, stats = run.output, run.batch_stats
        return x, _take_paths(variables.get('batch_stats', {}), stats, self.unit.paths, True)

    def _step(self, variables, opt_state, pool, labels, idx, weights, active, rng):
        x = normalize(pool[idx], self.mean, self.std, self.model.dtype)
        y = labels[idx]

        def loss_fn(params):
            params = freezing.stop_frozen_gradients(params, self.labels)
            logits, batch_stats = self._logits({**variables, 'params': params}, x, train_stage=True, rng=rng)
            losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
            return jnp.sum(weights * losses) / jnp.sum(weights), batch_stats

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])
        updates, new_opt = self.tx.update(grads, opt_state, variables['params'])
        params = freezing.apply_updates(variables['params'], updates, self.labels)
        new_params = _take_paths(variables['params'], params, self.unit.paths, active)
        new_stats = _where(active, batch_stats, variables['batch_stats'])
        return ({'params': new_params, 'batch_stats': new_stats}, _where(active, new_opt, opt_state),
                jnp.where(active, loss, 0.0))

    def _predict(self, variables, images):
        logits, _ = self._logits(variables, normalize(images, self.mean, self.std, self.model.dtype), False)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def _init_optimizer(self, variables):
        return self.tx.init(variables['params'])

    # K models ----------------------------------------------------------------
    def prepare(self, stacked_variables) -> tuple[Any, Any]:
        """(variables, optimizer state), both stacked [K, ...], from variables stacked [K, ...]."""
        return stacked_variables, self.lift(self._init_optimizer, (True,), stacked_variables)

    def epoch(self, variables, opt_state, pool: jax.Array, labels: jax.Array, indices: list[np.ndarray],
              epoch: int):
        """One epoch: model k visits `indices[k]` (positions in pool) in a seeded random order.

        labels: int32 [K, P], model k's label of every pool image.
        Returns (variables, opt_state, mean loss per model [K]).
        """
        rng = np.random.default_rng([self.seed, epoch])
        orders = [rng.permutation(ix) for ix in indices]
        b = self.batch_size
        if any(len(o) == 0 for o in orders):
            raise ConfigError(f'stage training of {self.stage} got an empty example set for model '
                              f'{[len(o) for o in orders].index(0)}; nothing to train on (raise data.num_train '
                              'or the noise ratio, or drop that data set)')
        counts = [max(len(o) // b, 1) for o in orders]  # a set smaller than one batch: one partial batch
        steps = max(counts)
        totals = np.zeros(len(orders))
        for step in range(steps):
            idx, weights = [], []
            for o, c in zip(orders, counts):
                if len(o) < b:  # partial batch, padded by repeating its examples; repeats weighted 0
                    idx.append(np.resize(o, b))
                    weights.append((np.arange(b) < len(o)).astype(np.float32))
                else:
                    idx.append(o[(step % c) * b:][:b])
                    weights.append(np.ones(b, np.float32))
            active = np.asarray([step < c for c in counts])
            # Dropout (models that have it, e.g. P3's ViT, train with it on): one key per model and step.
            keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(self.seed), epoch * 100_003 + step),
                                    len(orders))
            variables, opt_state, loss = self.lift(
                self._step, (True, True, False, True, True, True, True, True), variables, opt_state, pool, labels,
                jnp.asarray(np.stack(idx)), jnp.asarray(np.stack(weights)), jnp.asarray(active), keys)
            totals += np.asarray(loss)
        return variables, opt_state, totals / np.asarray(counts)

    def predict(self, variables, images: jax.Array, batch: int = 1000) -> np.ndarray:
        """int32 [K, P] predictions (evaluation mode) on images [P, ...]."""
        return self.lift.batched_over(self._predict, (True,), images, variables, batch=batch)
