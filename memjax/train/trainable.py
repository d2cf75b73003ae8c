"""What trains a classifier: one SGD step of ONE model, for every kind of classifier training.

`ClassifierTrainable` is the trainable of `memjax.engine.fit` for the run's
training, example-tied dropout (a mask hook) and the training of one unit of
a trained model (fine-tuning, retraining: the unit's params train, every other
param is frozen through the optimizer). It is a frozen dataclass: equal
trainables share one compiled program (`memjax.engine.lifting`).

The step, for one batch `idx` [B] of positions in `pool` (uint8 [P, H, W, C]):
x = pool[idx], augmented (random crop and flip from the replica's data key)
if `augment`, normalised; y = labels[idx]; the loss is the `weights`-weighted
mean softmax cross-entropy (weights 0 mark padding); the model runs in
training mode with dropout from the data key; the gradient (of the trainable
params only) goes through the optimizer, with the replica's own weight decay
when the state carries one. With `record_gradients` the gradient is computed
as its clean and noisy parts (P3 section 4; their sum is the gradient), both
added to the state's `grad_sums`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from memjax.data.pipeline import augment_key, dropout_key, random_crop_flip
from memjax.engine.runner import ModelRunner
from memjax.models.layer_index import get_subtree, set_subtree
from memjax.models.units import Unit
from memjax.train import freezing
from memjax.train.gradient_split import split_gradients
from memjax.train.state import OptimizerSpec, TrainState, zero_grad_sums

BATCHNORM_MODES = ('live', 'frozen')


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of logits [B, K] against int labels [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """sum_b w_b CE(logits_b, y_b) / sum_b w_b for logits [B, K], labels [B], weights [B]."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    return jnp.sum(weights * losses) / jnp.maximum(jnp.sum(weights), 1e-12)


def _where(on, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(on, a, b), new, old)


@dataclasses.dataclass(frozen=True)
class ClassifierTrainable:
    """One classifier's training step (see the module doc).

    Attributes:
      runner: the model and its normalisation.
      optimizer: the optimizer, by value.
      augment: random crop (pad 4) and horizontal flip of each batch.
      record_gradients: accumulate the clean and noisy gradient parts in `TrainState.grad_sums`.
      masks: optional hook, masks(idx, epoch, step, mask_data) -> {stage: mask [B, ...]} (example-tied
        dropout; mask_data is the step's argument of that name, e.g. the variant).
      unit: train only this unit (`memjax.models.units.Unit`); None: the whole model.
      batchnorm: with a unit: 'live' (the whole network in training mode, every BatchNorm updates its
        running statistics: P3's retraining) or 'frozen' (only the stages holding the unit run in
        training mode, and only the unit's statistics change).
    """

    runner: ModelRunner
    optimizer: OptimizerSpec
    augment: bool = False
    record_gradients: bool = False
    masks: Any = None
    unit: Unit | None = None
    batchnorm: str = 'live'

    @property
    def model(self):
        return self.runner.model

    @functools.cached_property
    def _labels(self) -> dict | None:
        """Prefix labels of the params ('train' / 'frozen') when one unit trains."""
        if self.unit is None:
            return None
        return freezing.unit_labels(self.model.variable_shapes()['params'], self.unit.paths)

    @functools.cached_property
    def tx(self) -> optax.GradientTransformation:
        tx = self.optimizer.build()
        return tx if self._labels is None else freezing.masked_optimizer(tx, self._labels)

    def init(self, variables: dict, weight_decay=None) -> TrainState:
        """The training state of one model from its variables (weight_decay: its own, or None)."""
        sums = zero_grad_sums(variables['params']) if self.record_gradients else None
        return TrainState(variables['params'], variables.get('batch_stats', {}), self.tx.init(variables['params']),
                          sums, weight_decay)

    def _forward(self, variables, x, rng, masks):
        """(logits, new batch_stats) in training mode (see `batchnorm`)."""
        if self.unit is None or self.batchnorm == 'live':
            run = self.model.apply(variables, x, train=True, masks=masks, rng=rng)
            return run.output, run.batch_stats
        stats = variables.get('batch_stats', {})
        unit_stages = {path[0] for path in self.unit.paths}
        for i, name in enumerate(self.model.stage_names):
            run = self.model.apply({**variables, 'batch_stats': stats}, x, start=i, stop=i + 1,
                                   train=name in unit_stages, masks=masks, rng=rng)
            x, stats = run.output, run.batch_stats
        old = variables.get('batch_stats', {})
        for path in self.unit.paths:  # only the unit's running statistics change
            if get_subtree(old, path) is not None:
                old = set_subtree(old, path, get_subtree(stats, path))
        return x, old

    def step(self, state: TrainState, *, idx, weights, epoch, step, pool, labels, data_key, noise_mask=None,
             mask_data=None):
        """One step on batch idx [B]; returns (state, loss). labels: int [P] (or [N]) of this model."""
        x, y = pool[idx], labels[idx]
        if self.augment:
            x = random_crop_flip(x, augment_key(data_key, epoch, step))
        x = self.runner.normalize(x)
        rng = dropout_key(data_key, epoch, step)
        masks = None if self.masks is None else self.masks(idx, epoch, step, mask_data)
        variables = state.variables
        sums = state.grad_sums
        if self.record_gradients:
            g_clean, g_noisy, batch_stats, losses = split_gradients(
                self.model, variables, x, y, noise_mask[idx], weights / jnp.sum(weights), rng=rng)
            grads = jax.tree_util.tree_map(jnp.add, g_clean, g_noisy)
            loss = jnp.sum(weights * losses) / jnp.sum(weights)
            sums = {'clean': jax.tree_util.tree_map(jnp.add, sums['clean'], g_clean),
                    'noisy': jax.tree_util.tree_map(jnp.add, sums['noisy'], g_noisy)}
        else:
            def loss_fn(params):
                if self._labels is not None:
                    params = freezing.stop_frozen_gradients(params, self._labels)
                logits, batch_stats = self._forward({**variables, 'params': params}, x, rng, masks)
                return weighted_cross_entropy(logits, y, weights), batch_stats

            (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        if state.weight_decay is not None:  # this model's coupled weight decay, as optax's add_decayed_weights
            grads = jax.tree_util.tree_map(lambda g, p: g + state.weight_decay * p, grads, state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        if self._labels is None:
            params = optax.apply_updates(state.params, updates)
        else:
            params = freezing.apply_updates(state.params, updates, self._labels)
        return state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state, grad_sums=sums), loss
