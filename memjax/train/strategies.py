"""How the single-replica step is lifted over R replicas.

- `vmap`: one compiled program over all replicas (`jax.vmap`). Convolutions of
  different weights become grouped convolutions (feature_group_count = R) and
  their weight gradients batch_group_count convolutions. On accelerators that is
  one large kernel instead of R small ones; on XLA:CPU those grouped forms run
  on a slow generic path (see BENCHMARKS.md: a 4-way grouped conv's weight
  gradient measured ~9x slower than the 4 separate ones), so vmap loses there.
- `loop`: the same compiled single-replica chunk, called once per replica. No
  grouped convolutions; one dispatch per replica per chunk of steps.
- `auto`: a fixed rule of the backend and the device and replica counts
  (`default_strategy`), written to the run directory; a resumed run keeps it.

Every strategy computes each replica from its own state, labels and keys only,
so a replica's result does not depend on the strategy beyond floating-point
reassociation, nor on which other replicas share the run. The state is kept
stacked (leading axis R) by vmap and as a list of per-replica states by loop;
`gather` returns the stacked form for checkpoints either way.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from memjax.train.state import TrainState


def stack_trees(trees: list) -> Any:
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def unstack_tree(tree: Any, count: int) -> list:
    return [jax.tree_util.tree_map(lambda x, i=i: x[i], tree) for i in range(count)]


class VmapStrategy:
    """All replicas in one compiled program (jax.vmap over the replica axis)."""

    name = 'vmap'

    def __init__(self, train_chunk: Callable, predict: Callable, shared_data: bool):
        self._chunk_fn = train_chunk
        self._data_axis = None if shared_data else 0
        self._compiled: dict[int, Callable] = {}
        self._predict = jax.jit(jax.vmap(predict, in_axes=(0, None)))

    def place(self, stacked: TrainState) -> TrainState:
        return stacked

    def gather(self, state: TrainState) -> TrainState:
        return state

    def _train(self, num_steps: int) -> Callable:
        if num_steps not in self._compiled:
            fn = functools.partial(self._chunk_fn, num_steps=num_steps)
            axes = (0, None, 0, 0, self._data_axis, None, None, self._data_axis, 0)
            self._compiled[num_steps] = jax.jit(jax.vmap(fn, in_axes=axes))
        return self._compiled[num_steps]

    def train_chunk(self, state, images, labels, noise_mask, orders, epoch, first_step, data_keys, active,
                    num_steps):
        """labels, noise_mask [R, N]; orders/data_keys [R, ...] or, with shared data, one [...]; active bool [R]."""
        return self._train(num_steps)(state, images, labels, noise_mask, orders, epoch, first_step, data_keys,
                                      jnp.asarray(active))

    def predict(self, state, batches: list) -> jax.Array:
        """int32 [R, P] predictions of every replica on image batches [b, H, W, C]."""
        return jnp.concatenate([self._predict(state.variables, x) for x in batches], axis=1)


class LoopStrategy:
    """One compiled single-replica program, called for each replica in turn."""

    name = 'loop'

    def __init__(self, train_chunk: Callable, predict: Callable, shared_data: bool):
        self._train = jax.jit(train_chunk, static_argnames='num_steps')
        self._predict = jax.jit(predict)
        self._shared = shared_data

    def place(self, stacked: TrainState) -> list[TrainState]:
        count = jax.tree_util.tree_leaves(stacked)[0].shape[0]
        return unstack_tree(stacked, count)

    def gather(self, states: list[TrainState]) -> TrainState:
        return stack_trees(states)

    def train_chunk(self, states, images, labels, noise_mask, orders, epoch, first_step, data_keys, active,
                    num_steps):
        new_states, losses = [], []
        for i, state in enumerate(states):
            if not active[i]:
                new_states.append(state)
                losses.append(jnp.zeros((), jnp.float32))
                continue
            order = orders if self._shared else orders[i]
            key = data_keys if self._shared else data_keys[i]
            state, loss = self._train(state, images, labels[i], noise_mask[i], order, epoch, first_step, key,
                                      True, num_steps=num_steps)
            new_states.append(state)
            losses.append(loss)
        return new_states, jnp.stack(losses)

    def predict(self, states, batches: list) -> jax.Array:
        return jnp.stack([jnp.concatenate([self._predict(s.variables, x) for x in batches])
                          for s in states])


class ShardStrategy(VmapStrategy):
    """vmap over replicas, with the replica axis sharded over all local devices.

    A mesh with one axis, 'replica', spans the devices; the stacked state and
    every per-replica input are placed with `PartitionSpec('replica')`, shared
    inputs (images, shared data order) are replicated, and the jitted vmapped
    step is partitioned by XLA along the replica axis: each device runs its
    R / D replicas (a TPU v5e-8 or an 8-GPU host trains 8x the replicas). The
    device count used is the largest divisor of R not above the number of
    local devices. With one device this is `vmap`.
    """

    name = 'shard'

    def __init__(self, train_chunk: Callable, predict: Callable, shared_data: bool, num_replicas: int = 1):
        super().__init__(train_chunk, predict, shared_data)
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        devices = jax.local_devices()
        count = max(d for d in range(1, len(devices) + 1) if num_replicas % d == 0)
        self.mesh = Mesh(np.asarray(devices[:count]), ('replica',))
        self.sharded = NamedSharding(self.mesh, PartitionSpec('replica'))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.shared_data = shared_data

    def place(self, stacked: TrainState) -> TrainState:
        return jax.device_put(stacked, self.sharded)

    def train_chunk(self, state, images, labels, noise_mask, orders, epoch, first_step, data_keys, active,
                    num_steps):
        per_replica = self.replicated if self.shared_data else self.sharded
        return super().train_chunk(state, jax.device_put(images, self.replicated),
                                   jax.device_put(labels, self.sharded), jax.device_put(noise_mask, self.sharded),
                                   jax.device_put(orders, per_replica), epoch, first_step,
                                   jax.device_put(data_keys, per_replica),
                                   jax.device_put(jnp.asarray(active), self.sharded), num_steps)

    def predict(self, state, batches: list) -> jax.Array:
        return super().predict(state, [jax.device_put(x, self.replicated) for x in batches])


STRATEGIES = {'vmap': VmapStrategy, 'loop': LoopStrategy, 'shard': ShardStrategy}


def default_strategy(backend: str, num_devices: int, num_replicas: int) -> tuple[str, str]:
    """(strategy, reason) that `train.strategy='auto'` takes: a rule of the backend, the device count
    and the replica count only, so the same command on the same machine always trains the same way
    (a timing race would not: two runs could pick differently and differ in the last digits).

    - one replica: `loop` (nothing to lift);
    - several devices: `shard` (replicas over devices);
    - CPU: `loop` (XLA:CPU's grouped convolutions, which vmap produces, run 3-9x slower than separate
      ones; BENCHMARKS.md);
    - GPU and TPU: `vmap` (one program for all replicas).
    """
    if num_replicas == 1:
        return 'loop', 'a single replica'
    if num_devices > 1:
        return 'shard', f'{num_devices} {backend} devices'
    if backend == 'cpu':
        return 'loop', 'XLA:CPU runs the grouped convolutions of vmap slowly'
    return 'vmap', f'one program for all replicas on {backend}'


def as_numpy(x) -> np.ndarray:
    return np.asarray(jax.device_get(x))
