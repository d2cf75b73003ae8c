"""The replicas of a run: one per (noise ratio, seed).

A replica's randomness depends only on its own (ratio, seed) and the run's
seeds, never on its position in the run, so a replica trained in a group
equals the same replica trained alone:

- noise: (noise.seed, seed) -> `memjax.data.noise`;
- init: (train.init_seed, seed, ratio);
- data order and augmentation: (train.data_seed, seed, ratio).

So by default every replica is an independent model, as P1/P2 trained one
model per noise ratio. With `train.shared_start=True` the ratio is left out of
both keys: the replicas of one seed start from the same weights and see the
same batches and augmentation, so clean and noisy models differ only in their
labels (a controlled comparison; see `memjax.train.replica_keys`).
"""

from __future__ import annotations

import dataclasses
import itertools



@dataclasses.dataclass(frozen=True)
class Replica:
    """One trained copy: position in the run, noise ratio r and seed."""

    index: int
    noise_ratio: float
    seed: int

    @property
    def name(self) -> str:
        return f'r={self.noise_ratio:g},seed={self.seed}'

    def to_dict(self) -> dict:
        return {'index': self.index, 'noise_ratio': self.noise_ratio, 'seed': self.seed}


def make_replicas(config) -> list[Replica]:
    """Replicas for every (ratio, seed) of the config, ratio-major."""
    pairs = itertools.product(config.noise.ratios, config.seeds)
    return [Replica(i, float(r), int(s)) for i, (r, s) in enumerate(pairs)]
