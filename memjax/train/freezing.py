"""Freezing parts of a model through the optimizer.

Labels are a prefix tree of the params: 'train' or 'frozen' at the top of
every subtree (`unit_labels`: the subtrees at the given paths train, all else
is frozen). The optimizer is `optax.partition` with `optax.set_to_zero()` for
frozen subtrees, so they carry no optimizer state. To avoid computing
gradients that are thrown away (`set_to_zero` alone still lets autodiff
compute them; optax issues 290, 477, 993), frozen subtrees also pass through
`stop_gradient` in the loss, and `apply_updates` returns frozen subtrees
untouched, so they stay bit-identical.
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


def unit_labels(params: dict, paths: Collection[tuple[str, ...]]) -> dict:
    """Prefix labels: 'train' at every path in `paths` (tuples of keys), 'frozen' everywhere else."""
    paths = [tuple(p) for p in paths]

    def label(tree: dict, prefix: tuple) -> dict | str:
        if prefix in paths:
            return TRAIN
        if not any(p[:len(prefix)] == prefix for p in paths) or not isinstance(tree, dict):
            return FROZEN
        return {key: label(sub, prefix + (key,)) for key, sub in tree.items()}

    out = label(params, ())
    return out if isinstance(out, dict) else {key: out for key in params}


def _over_labels(fn, labels: dict, *trees):
    """fn(label, *subtrees) over the label prefix tree."""
    return jax.tree_util.tree_map(fn, labels, *trees)


def masked_optimizer(tx: optax.GradientTransformation, labels: dict) -> optax.GradientTransformation:
    """`tx` on the trainable subtrees, nothing (and no state) on the frozen ones."""
    return optax.partition({TRAIN: tx, FROZEN: optax.set_to_zero()}, labels)


def stop_frozen_gradients(params: dict, labels: dict) -> dict:
    """Params with stop_gradient on frozen subtrees: autodiff does no work for them."""
    return _over_labels(lambda label, sub: sub if label == TRAIN else jax.lax.stop_gradient(sub), labels, params)


def apply_updates(params: dict, updates: dict, labels: dict) -> dict:
    """optax.apply_updates on trainable subtrees; frozen subtrees returned as they are."""
    return _over_labels(lambda label, sub, up: optax.apply_updates(sub, up) if label == TRAIN else sub,
                        labels, params, updates)
