"""Faults injected on purpose, for the tests of resume and divergence: hooks of `memjax.engine.fit`.

The command line reads them from the environment (`from_environment`, called by
`memjax.main` only), so a test can kill or poison a real `python -m memjax.main`
process; nothing inside training reads the environment.

- MEMJAX_KILL_AFTER_EPOCH=t: SIGKILL the process right after epoch t's state is on disk.
- MEMJAX_POISON_REPLICA_AT_EPOCH=i:t: replica i's parameters become NaN after epoch t's steps.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from typing import Any

import jax
import jax.numpy as jnp

from memjax.engine.lifting import Replicas, per_replica

KILL_AFTER_EPOCH_ENV = 'MEMJAX_KILL_AFTER_EPOCH'
POISON_ENV = 'MEMJAX_POISON_REPLICA_AT_EPOCH'


@dataclasses.dataclass
class Poison:
    """Replica `replica`'s parameters become NaN after epoch `epoch` (before the health check)."""

    replica: int
    epoch: int
    position: str = 'before_health'

    def after_epoch(self, fit, epoch: int, state, losses) -> Any:
        if epoch != self.epoch:
            return state
        nan = lambda s: s.replace(params=jax.tree_util.tree_map(lambda x: jnp.full_like(x, jnp.nan), s.params))
        if isinstance(state, Replicas):
            return Replicas(nan(s) if i == self.replica else s for i, s in enumerate(state))
        return per_replica(state, lambda s: s.replace(params=jax.tree_util.tree_map(
            lambda x: x.at[self.replica].set(jnp.nan), s.params)))


@dataclasses.dataclass
class Kill:
    """SIGKILL this process once epoch `epoch` is saved (every write finished)."""

    epoch: int
    checkpoints: Any = None
    position: str = 'after_save'

    def after_epoch(self, fit, epoch: int, state, losses) -> Any:
        if epoch == self.epoch:
            if self.checkpoints is not None:
                self.checkpoints.wait()
            os.kill(os.getpid(), signal.SIGKILL)
        return state


def from_environment(environ=os.environ) -> list:
    """The faults the environment asks for (see the module doc); none in normal use."""
    faults = []
    if environ.get(KILL_AFTER_EPOCH_ENV):
        faults.append(Kill(int(environ[KILL_AFTER_EPOCH_ENV])))
    if environ.get(POISON_ENV):
        replica, epoch = environ[POISON_ENV].split(':')
        faults.append(Poison(int(replica), int(epoch)))
    return faults
