"""Training state of one replica and its optimizer."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

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


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer by value (hashable: equal specs build equal optimizers and share compiled steps).

    kind 'sgd' (momentum, nesterov; coupled weight decay when `weight_decay` is set) or 'adam'; the
    learning rate follows `schedule` (`memjax.train.schedules`) over `epochs` x `steps_per_epoch` steps.
    weight_decay None: none in the optimizer (a run's trainer applies each replica's own from its state).
    """

    kind: str = 'sgd'
    learning_rate: float = 0.05
    schedule: str = 'constant'
    epochs: int = 1
    steps_per_epoch: int = 1
    peak_epoch: float = 0.0
    milestones: tuple = ()
    gamma: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float | None = None

    @classmethod
    def from_train(cls, train, steps_per_epoch: int, weight_decay: bool = True, epochs: int | None = None):
        """The optimizer of the training keys (`train.*`); weight_decay=False leaves the decay to the state."""
        return cls(str(getattr(train, 'optimizer', 'sgd')), float(train.learning_rate), str(train.schedule), int(epochs or train.epochs),
                   int(steps_per_epoch), float(train.peak_epoch), tuple(float(m) for m in train.milestones),
                   float(train.gamma), float(train.momentum), bool(train.nesterov),
                   float(train.weight_decay) if weight_decay else None)

    @functools.lru_cache(maxsize=None)
    def build(self) -> optax.GradientTransformation:
        schedule = make_schedule(self, self.steps_per_epoch)
        if self.kind == 'adam':
            core = optax.adam(schedule)
        else:
            core = optax.sgd(schedule, momentum=self.momentum or None, nesterov=self.nesterov)
        decay = optax.add_decayed_weights(self.weight_decay) if self.weight_decay else optax.identity()
        return optax.chain(decay, core)  # the same state structure with or without the decay


def make_optimizer(train, steps_per_epoch: int, weight_decay: bool = True) -> optax.GradientTransformation:
    """SGD with momentum and (coupled, PyTorch-style) weight decay on every parameter.

    With weight_decay=False the decay is left out: the run's trainer applies each
    replica's own value from its TrainState (`replica_weight_decays`).
    """
    return OptimizerSpec.from_train(train, steps_per_epoch, weight_decay).build()


def replica_weight_decays(train, noise_ratios) -> np.ndarray:
    """float32 [R]: train.weight_decay, or the value `train.weight_decay_by_ratio` gives a replica's ratio."""
    table = {round(float(r), 9): float(wd) for r, wd in train.weight_decay_by_ratio}
    return np.asarray([table.get(round(float(r), 9), float(train.weight_decay)) for r in noise_ratios], np.float32)


def zero_grad_sums(params: Any) -> dict:
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return {'clean': zeros, 'noisy': zeros}
