"""Training state of one replica and its optimizer."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax.models.stages import StagedModel
from memjax.train.schedules import make_schedule


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training, for ONE replica.

    Under a replica strategy every leaf gains a leading axis R.
    """

    params: Any
    batch_stats: Any
    opt_state: Any
    # {'clean': params-like, 'noisy': params-like} sums of this epoch's gradient
    # parts when train.gradient_accounting is on, else None.
    grad_sums: Any = None
    # float32 scalar: this replica's weight decay when it lives in the state (the run's
    # trainer: per-replica values); None when the optimizer applies one value to all.
    weight_decay: Any = None

    @property
    def variables(self) -> dict:
        return {'params': self.params, 'batch_stats': self.batch_stats}


def make_optimizer(train, steps_per_epoch: int, weight_decay: bool = True) -> optax.GradientTransformation:
    """SGD with momentum and (coupled, PyTorch-style) weight decay on every parameter.

    With weight_decay=False the decay is left out: the run's trainer applies each
    replica's own value from its TrainState (`replica_weight_decays`).
    """
    sgd = optax.sgd(make_schedule(train, steps_per_epoch), momentum=float(train.momentum) or None,
                    nesterov=bool(train.nesterov))
    if not weight_decay:
        return optax.chain(optax.identity(), sgd)  # same state structure as with the decay
    return optax.chain(optax.add_decayed_weights(float(train.weight_decay)), sgd)


def replica_weight_decays(train, noise_ratios) -> np.ndarray:
    """float32 [R]: train.weight_decay, or the value `train.weight_decay_by_ratio` gives a replica's ratio."""
    table = {round(float(r), 9): float(wd) for r, wd in train.weight_decay_by_ratio}
    return np.asarray([table.get(round(float(r), 9), float(train.weight_decay)) for r in noise_ratios], np.float32)


def zero_grad_sums(params: Any) -> dict:
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return {'clean': zeros, 'noisy': zeros}


def init_state(model: StagedModel, tx: optax.GradientTransformation, key: jax.Array,
               image_shape: tuple[int, int, int], gradient_accounting: bool = False,
               weight_decay: Any = None) -> TrainState:
    """A freshly initialised replica (call under jax.vmap for R replicas)."""
    variables = model.init(key, image_shape)
    sums = zero_grad_sums(variables['params']) if gradient_accounting else None
    return TrainState(variables['params'], variables['batch_stats'], tx.init(variables['params']), sums,
                      weight_decay)
