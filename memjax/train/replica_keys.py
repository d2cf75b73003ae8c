"""PRNG keys of the replicas: parameter initialisation and data order.

A replica's keys depend only on its own (ratio, seed) and the run's seeds,
never on its position in the run (see `memjax.data.replicas`).

By default (`train.shared_start=False`) every replica is an independent model,
as in P1/P2 (one model trained per noise ratio): its init key and its data key
(order and augmentation) fold in both its seed and its ratio. With
`train.shared_start=True` the replicas of one seed share initialisation, data
order and augmentation, so clean and noisy models differ only in their labels
(a controlled comparison; it inflates noisy-vs-clean CKA early in training).
"""

from __future__ import annotations

import jax
import numpy as np

from memjax.data.replicas import Replica


def _ratio_key(ratio: float) -> int:
    return int(round(ratio * 1_000_000))


def _replica_key(seed: int, train, rep: Replica) -> np.ndarray:
    key = jax.random.fold_in(jax.random.PRNGKey(int(seed)), rep.seed)
    if not train.shared_start:
        key = jax.random.fold_in(key, _ratio_key(rep.noise_ratio))
    return np.asarray(key)


def init_keys(train, replicas: list[Replica]) -> np.ndarray:
    """PRNG keys [R, 2] for parameter initialisation."""
    return np.stack([_replica_key(train.init_seed, train, rep) for rep in replicas])


def data_keys(train, replicas: list[Replica]) -> np.ndarray:
    """PRNG keys [R, 2] for data order and augmentation."""
    return np.stack([_replica_key(train.data_seed, train, rep) for rep in replicas])
