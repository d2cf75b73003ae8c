"""Training state of one replica and its optimizer."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
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

    @property
    def variables(self) -> dict:
        return {'params': self.params, 'batch_stats': self.batch_stats}


def make_optimizer(train, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum and (coupled, PyTorch-style) weight decay on every parameter."""
    return optax.chain(
        optax.add_decayed_weights(float(train.weight_decay)),
        optax.sgd(make_schedule(train, steps_per_epoch), momentum=float(train.momentum) or None,
                  nesterov=bool(train.nesterov)),
    )


def zero_grad_sums(params: Any) -> dict:
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return {'clean': zeros, 'noisy': zeros}


def init_state(model: StagedModel, tx: optax.GradientTransformation, key: jax.Array,
               image_shape: tuple[int, int, int], gradient_accounting: bool = False) -> TrainState:
    """A freshly initialised replica (call under jax.vmap for R replicas)."""
    variables = model.init(key, image_shape)
    sums = zero_grad_sums(variables['params']) if gradient_accounting else None
    return TrainState(variables['params'], variables['batch_stats'], tx.init(variables['params']), sums)
