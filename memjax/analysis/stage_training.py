"""Training exactly one unit (a stage, a layer or a P3 layer group) of K models, the rest frozen.

Shared by layer fine-tuning (P2 appendix A.1) and layer retraining (P3 5.2).
It is the run's trainable (`memjax.train.trainable.ClassifierTrainable` with
a `unit`) in the one fit loop (`memjax.engine.fit`): the unit's params get the
optimizer, every other param is frozen through it (`set_to_zero` and
`stop_gradient`) and comes back bit-identical. BatchNorm during training,
`batchnorm`: 'frozen' (only the stages holding the unit run in training mode;
only the unit's running statistics change) or 'live' (P3's retraining: the
whole network in training mode, every BatchNorm updates its running
statistics; still only the unit's params change). Evaluation runs the whole
network in evaluation mode. Models with dropout (P3's ViT) train with it on,
one key per model and step.

Each of the K models trains on its own examples: `indices[k]` into a shared
image pool with `labels[k]` over that pool, visited in a seeded order per
epoch. Sets of different sizes give every model the same number of steps per
epoch (the largest set's); a model whose epoch is over idles. A set of
n >= batch_size examples gives n // batch_size full batches per epoch (the
last partial batch dropped, as in training); a smaller set (0 < n <
batch_size) still trains: one step per epoch on its n examples padded to the
batch shape by repeating them, the repeats weighted 0 in the loss (the
gradient is exactly the mean over the n examples; the unit's BatchNorm
statistics see the repeats too). An empty set is a ConfigError: an untrained
model is never reported as trained.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from memjax.engine.fit import Batches, fit
from memjax.engine.lifting import Lifting, lift, per_replica, stacked
from memjax.engine.runner import ModelRunner
from memjax.errors import ConfigError
from memjax.models.units import Unit
from memjax.train.state import OptimizerSpec
from memjax.train.trainable import BATCHNORM_MODES, ClassifierTrainable

__all__ = ['BATCHNORM_MODES', 'train_unit']


def unit_batches(indices: Sequence[np.ndarray], batch_size: int, seed: int, unit: str) -> Callable[[int], Batches]:
    """Each epoch's order of K example sets (see the module doc): order and weights [K, S * B], steps [K]."""
    empty = [k for k, ix in enumerate(indices) if len(ix) == 0]
    if empty:
        raise ConfigError(f'training {unit} got an empty example set for model {empty[0]}; nothing to train on '
                          '(raise data.num_train or the noise ratio, or drop that data set)')
    b = batch_size
    counts = np.asarray([max(len(ix) // b, 1) for ix in indices])
    total = int(counts.max()) * b

    def batches(epoch: int) -> Batches:
        rng = np.random.default_rng([seed, epoch])
        orders, weights = [], []
        for ix in indices:
            o = rng.permutation(ix)
            if len(o) < b:  # one partial batch, padded by repeating its examples; the repeats weigh 0
                row, w = np.resize(o, b), (np.arange(b) < len(o)).astype(np.float32)
            else:
                row, w = o[:len(o) // b * b], np.ones(len(o) // b * b, np.float32)
            orders.append(np.resize(row, total))
            weights.append(np.resize(w, total))
        return Batches(jnp.asarray(np.stack(orders), jnp.int32), counts, jnp.asarray(np.stack(weights)))
    return batches


def train_unit(runner: ModelRunner, variables, unit: Unit, optimizer: OptimizerSpec, *, batch_size: int,
               pool: jax.Array, labels: jax.Array, indices: Sequence[np.ndarray], epochs: int, seed: int,
               lifting: Lifting | str, batchnorm: str = 'frozen',
               after_epoch: Callable[[int, object], None] | None = None):
    """Trains `unit` of K models for `epochs` epochs; returns their variables stacked [K, ...].

    Args:
      variables: the K models' variables, stacked [K, ...].
      pool: uint8 [P, H, W, C] images; labels: int [K, P] each model's label of every pool image.
      indices: K arrays of positions in the pool, each model's training examples.
      after_epoch: optional after_epoch(epoch, variables [K, ...] in the lifting's layout), e.g. to evaluate.
    """
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f'batchnorm {batchnorm!r} is not one of {BATCHNORM_MODES}')
    trainable = ClassifierTrainable(runner, optimizer, unit=unit, batchnorm=batchnorm)
    state = lift(trainable.init, ('variables',), lifting)(variables=variables)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(indices))

    class Report:
        def after_epoch(self, fit_run, epoch, state, losses):
            after_epoch(epoch, per_replica(state, lambda s: s.variables))
            return state

    state = fit(trainable, state, epochs=range(1, epochs + 1),
                batches=unit_batches(indices, batch_size, seed, unit.name),
                own={'labels': labels, 'data_key': keys}, common={'pool': pool}, lifting=lifting,
                batch_size=batch_size, hooks=[Report()] if after_epoch else ())
    return stacked(per_replica(state, lambda s: s.variables))
