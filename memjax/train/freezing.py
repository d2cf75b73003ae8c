"""Freezing stages through the optimizer.

Labels are built from stage names: a prefix tree `{stage: 'train' | 'frozen'}`
over a model's params. The optimizer is `optax.partition` with
`optax.set_to_zero()` for frozen stages, so they carry no optimizer state. To
avoid computing gradients that are thrown away (`set_to_zero` alone still lets
autodiff compute them; optax issues 290, 477, 993), frozen subtrees also pass
through `stop_gradient` in the loss, and `apply_updates` returns frozen
subtrees untouched, so they stay bit-identical.
"""

from __future__ import annotations

from typing import Collection

import jax
import optax

TRAIN, FROZEN = 'train', 'frozen'


def stage_labels(params: dict, trainable: Collection[str]) -> dict:
    """Prefix labels {stage: 'train' | 'frozen'} for a params tree keyed by stage name."""
    unknown = set(trainable) - set(params)
    if unknown:
        raise ValueError(f'unknown stages {sorted(unknown)}; stages are {list(params)}')
    return {name: TRAIN if name in trainable else FROZEN for name in params}


def masked_optimizer(tx: optax.GradientTransformation, labels: dict) -> optax.GradientTransformation:
    """`tx` on the trainable stages, nothing (and no state) on the frozen ones."""
    return optax.partition({TRAIN: tx, FROZEN: optax.set_to_zero()}, labels)


def stop_frozen_gradients(params: dict, labels: dict) -> dict:
    """Params with stop_gradient on frozen stages: autodiff does no work for them."""
    return {name: sub if labels[name] == TRAIN else jax.lax.stop_gradient(sub) for name, sub in params.items()}


def apply_updates(params: dict, updates: dict, labels: dict) -> dict:
    """optax.apply_updates on trainable stages; frozen stages returned as they are."""
    return {name: optax.apply_updates(sub, updates[name]) if labels[name] == TRAIN else sub
            for name, sub in params.items()}
