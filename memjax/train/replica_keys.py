"""PRNG keys of the replicas: parameter initialisation and data order.

A replica's keys depend only on its own (ratio, seed) and the run's seeds,
never on its position in the run (see `memjax.data.replicas`).
"""

from __future__ import annotations

import jax
import numpy as np

from memjax.data.replicas import Replica


def _ratio_key(ratio: float) -> int:
    return int(round(ratio * 1_000_000))


def init_keys(train, replicas: list[Replica]) -> jax.Array:
    """PRNG keys [R, 2] for parameter initialisation."""
    base = jax.random.PRNGKey(int(train.init_seed))
    keys = []
    for rep in replicas:
        key = jax.random.fold_in(base, rep.seed)
        if train.init_per_ratio:
            key = jax.random.fold_in(key, _ratio_key(rep.noise_ratio))
        keys.append(key)
    return np.stack([np.asarray(k) for k in keys])


def data_keys(train, replicas: list[Replica]) -> np.ndarray:
    """PRNG keys [R, 2] for data order and augmentation."""
    base = jax.random.PRNGKey(int(train.data_seed))
    return np.stack([np.asarray(jax.random.fold_in(base, rep.seed)) for rep in replicas])
