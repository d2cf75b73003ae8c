"""One way to run a computation written for ONE replica over R of them: the lifting layer.

Every computation of memjax (a training step, a prediction, a CKA Gram, a
neuron search step) is a function of one replica's arguments. `lift` gives it
its lifted form; arguments are passed by name and the caller says which ones
carry a leading replica axis (`per_replica`), the rest are shared by every
replica. Four liftings (`KINDS`):

- `vmap`: one compiled program over all replicas (`jax.vmap`). Convolutions
  with per-replica weights become grouped convolutions.
- `map`: one compiled program that runs the replicas one after another
  (`jax.lax.map`): no grouped convolutions, one dispatch for all.
- `loop`: the single-replica program, compiled once and called R times from
  Python. The replicas' state stays a `Replicas` tuple between calls (no
  stacking per step), and replicas that are inactive are not run at all.
- `shard`: the replica axis split over the devices of a mesh (`jax.sharding`,
  axis 'replica'): every device vmaps over its own R / D replicas inside
  `jax.shard_map`, so the program holds no collective (R must be a multiple
  of the device count).

Whatever the lifting, a replica's result depends only on its own arguments
(and agrees across liftings up to floating-point reassociation), and the
lifted function's results come back in the lifting's layout: stacked arrays
[R, ...] (vmap, map, shard) or a `Replicas` tuple (loop); `stacked` turns
either into arrays [R, ...].

Compiled programs are cached for the life of the process by (function,
replica arguments, static arguments, lifting): a function that is a method of
a cached object (`memjax.engine.runner.ModelRunner`) or a frozen dataclass
with `__call__` (a training step) keys the cache by value, so building the
same computation again (a second run, an analysis per replica) reuses its
compiled program. JAX's own cache then reuses it for every call of the same
shapes.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from memjax.engine.processes import host  # noqa: F401  (values of any lifting on the host, all processes)

KINDS = ('vmap', 'map', 'loop', 'shard')
REPLICA_AXIS = 'replica'


class Replicas(tuple):
    """The `loop` lifting's layout of per-replica values: a tuple of R single-replica trees."""


@jax.jit
def _take(tree: Any, index: jax.Array) -> Any:
    return jax.tree_util.tree_map(lambda x: x[index], tree)


@jax.jit
def _stack(trees: tuple) -> Any:
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def take(tree: Any, index: int) -> Any:
    """Replica `index` of a stacked tree [R, ...] (or of a `Replicas` tuple)."""
    if isinstance(tree, Replicas):
        return tree[index]
    return _take(tree, jnp.asarray(index, jnp.int32))


def stacked(tree: Any) -> Any:
    """Per-replica values as one tree of arrays [R, ...], from any lifting's layout (a program's tuple of
    outputs under `loop` is a tuple of `Replicas`: each is stacked)."""
    if isinstance(tree, Replicas):
        return _stack(tuple(tree))
    if isinstance(tree, tuple) and any(isinstance(x, Replicas) for x in tree):
        return tuple(stacked(x) for x in tree)
    return tree


def per_replica(values: Any, fn) -> Any:
    """fn applied to per-replica values in either layout: to each replica of a `Replicas` tuple, or once to
    the stacked tree (fn must then act on the leading axis alike, e.g. picking a field)."""
    if isinstance(values, Replicas):
        return Replicas(fn(v) for v in values)
    return fn(values)


def count(tree: Any) -> int:
    """R, the number of replicas of per-replica values in any layout."""
    if isinstance(tree, Replicas):
        return len(tree)
    return int(jax.tree_util.tree_leaves(tree)[0].shape[0])


@dataclasses.dataclass(frozen=True)
class Lifting:
    """How per-replica computations run: `kind` (one of KINDS) and, for 'shard', `devices`
    (how many of `jax.devices()` the replica axis spans; 0: all) and `local` (span only this process's
    devices, `jax.local_devices()`, in a job of several processes: a computation every process does alike).

    With several processes, a 'shard' lifting over `jax.devices()` spans all of them: each process holds
    its devices' replicas, per-replica and shared values are placed from the host values every process
    holds (`jax.make_array_from_callback`), and `host` gathers results to every process.
    """

    kind: str = 'vmap'
    devices: int = 0
    local: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"lifting {self.kind!r} is not one of {', '.join(KINDS)}")

    @functools.cached_property
    def mesh(self) -> jax.sharding.Mesh:
        devices = jax.local_devices() if self.local else jax.devices()
        chosen = devices[:self.devices] if self.devices else devices
        return jax.sharding.Mesh(np.asarray(chosen), (REPLICA_AXIS,))

    def sharding(self, per_replica: bool) -> jax.sharding.NamedSharding:
        spec = jax.sharding.PartitionSpec(REPLICA_AXIS) if per_replica else jax.sharding.PartitionSpec()
        return jax.sharding.NamedSharding(self.mesh, spec)

    def place(self, tree: Any) -> Any:
        """Per-replica values (stacked [R, ...] or `Replicas`) in this lifting's layout."""
        if self.kind == 'loop':
            if isinstance(tree, Replicas):
                return tree
            return Replicas(take(tree, i) for i in range(count(tree)))
        tree = stacked(tree)
        if self.kind == 'shard':
            return self._put(tree, self.sharding(True))
        return tree

    def place_shared(self, tree: Any) -> Any:
        """Shared values where this lifting's programs read them (replicated over the mesh for 'shard')."""
        return self._put(tree, self.sharding(False)) if self.kind == 'shard' else tree

    def _put(self, tree: Any, sharding: jax.sharding.NamedSharding) -> Any:
        if sharding.is_fully_addressable:
            return jax.device_put(tree, sharding)

        def one(x):  # a mesh over several processes: from the global value every process holds
            if isinstance(x, jax.Array) and x.sharding == sharding:
                return x
            if isinstance(x, jax.Array) and not x.is_fully_addressable:
                return jax.device_put(x, sharding)
            value = np.asarray(x)
            return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
        return jax.tree_util.tree_map(one, tree)


def _as_tuple(names: Iterable[str]) -> tuple[str, ...]:
    return (names,) if isinstance(names, str) else tuple(names)


class Program:
    """A single-replica function lifted over the replicas; see `lift`."""

    def __init__(self, fn: Callable, per_replica: tuple[str, ...], static: tuple[str, ...], lifting: Lifting,
                 carry: str | None):
        self.fn, self.per_replica, self.static, self.lifting, self.carry = fn, per_replica, static, lifting, carry
        self._compiled: dict = {}

    def _build(self, static_values: tuple) -> Callable:
        fn, statics = self.fn, dict(zip(self.static, static_values))

        def one(per: dict, shared: dict):
            return fn(**per, **shared, **statics)

        kind = self.lifting.kind
        if kind == 'loop':
            return jax.jit(one)
        if kind == 'map':
            return jax.jit(lambda per, shared: jax.lax.map(lambda p: one(p, shared), per))
        lifted = jax.vmap(one, in_axes=(0, None))
        if kind == 'shard':  # each device vmaps over its own replicas: no collective at all (a vmap left to
            # the partitioner all-gathers grouped-convolution weights and activations, openxla/xla 47945)
            spec = jax.sharding.PartitionSpec
            return jax.jit(jax.shard_map(lifted, mesh=self.lifting.mesh, in_specs=(spec(REPLICA_AXIS), spec()),
                                         out_specs=spec(REPLICA_AXIS), check_vma=False))
        return jax.jit(lifted)

    def compiled(self, **static_values) -> Callable:
        key = tuple(static_values[name] for name in self.static)
        if key not in self._compiled:
            self._compiled[key] = self._build(key)
        return self._compiled[key]

    def __call__(self, *, running: np.ndarray | None = None, **kwargs) -> Any:
        """Runs every replica. kwargs: the function's arguments by name (per-replica ones in any layout).

        running: optional bool [R] known on the host; with `carry`, the `loop` lifting does not run a
        replica that is not running and returns its `carry` argument unchanged, zeros for the other
        outputs (the function must do the same when told so by its own arguments, as it runs under the
        other liftings).
        """
        statics = {name: kwargs.pop(name) for name in self.static}
        program = self.compiled(**statics)
        per = {name: self.lifting.place(kwargs.pop(name)) for name in self.per_replica}
        shared = {name: self.lifting.place_shared(value) for name, value in kwargs.items()}
        if self.lifting.kind != 'loop':
            return program(per, shared)
        size = count(next(iter(per.values())))
        outputs, skipped = [], []
        for i in range(size):
            if running is not None and self.carry is not None and not bool(running[i]):
                outputs.append(None)
                skipped.append(i)
                continue
            outputs.append(program({name: value[i] for name, value in per.items()}, shared))
        if skipped:
            ran = next((out for out in outputs if out is not None), None)
            if ran is None:  # nothing ran: the output structure from an abstract evaluation
                ran = jax.eval_shape(program, {name: value[0] for name, value in per.items()}, shared)
            for i in skipped:
                carried = per[self.carry][i]
                outputs[i] = (carried, *jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), ran[1:])) \
                    if isinstance(ran, tuple) else carried
        return _transpose(outputs)


def _transpose(outputs: list) -> Any:
    """R per-replica outputs (each a value or a tuple of values) as Replicas, or a tuple of Replicas."""
    if isinstance(outputs[0], tuple):
        return tuple(Replicas(out[k] for out in outputs) for k in range(len(outputs[0])))
    return Replicas(outputs)


def one_device_rule(backend: str, num_replicas: int) -> tuple[str, str]:
    """(the lifting 'auto' gives R replicas on ONE device of `backend`, why); `choose` and `memjax.plan` share it.

    One replica -> loop (nothing to lift). CPU -> loop: XLA:CPU runs the grouped convolutions of vmap 3-9x
    slower than separate ones (BENCHMARKS.md). GPU and TPU -> vmap (one program). `map` is the candidate
    for GPUs, where vmap's grouped convolutions have a slow backward pass (jax issue 13800; in jax issue
    26568 lax.map over 10 CNN seeds took 1.71 ms against vmap's 4.92 ms): `scripts/device_check.py`
    measures every lifting on the first GPU, and this rule follows its numbers once they exist.
    """
    if num_replicas == 1:
        return 'loop', 'a single replica'
    if backend == 'cpu':
        return 'loop', 'XLA:CPU runs the grouped convolutions of vmap slowly'
    return 'vmap', f'one program for all replicas on {backend}'


def choose(requested: str, num_replicas: int, local: bool = False) -> tuple[Lifting, str]:
    """(the Lifting `requested` names on this machine, why): a rule of the backend and the device and
    replica counts only, so the same command on the same machine always computes the same way.

    'auto': several devices -> shard; otherwise `one_device_rule` (CPU -> loop, GPU and TPU -> vmap;
    one replica -> loop). 'shard' spans the largest number of devices that divides the replica count.
    """
    backend, devices = jax.default_backend(), jax.device_count()
    if requested == 'auto':
        if num_replicas > 1 and devices > 1:
            requested, reason = 'shard', f'{devices} {backend} devices'
        else:
            requested, reason = one_device_rule(backend, num_replicas)
    else:
        reason = 'requested'
    if requested == 'shard':
        used = max(d for d in range(1, devices + 1) if num_replicas % d == 0)
        return Lifting('shard', used, local), f'{reason}; {num_replicas} replicas over {used} of {devices} devices'
    return Lifting(requested, local=local), reason


_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 512


def lift(fn: Callable, per_replica: Iterable[str] | str, lifting: Lifting | str, *, static: Iterable[str] = (),
         carry: str | None = None) -> Program:
    """`fn` (written for one replica, called with keyword arguments) lifted over the replicas.

    Args:
      fn: the single-replica function. Use a value-hashable callable (a bound method of a cached
        object, a frozen dataclass with `__call__`, a module-level function) so the compiled
        program is reused by every later `lift` of the same computation.
      per_replica: names of the arguments with a leading replica axis R (stacked or `Replicas`).
      lifting: a `Lifting` or its kind.
      static: names of arguments that are compile-time constants (hashable; one program each).
      carry: the argument the function returns unchanged, first, for a replica that does not run
        (see `Program.__call__`'s `running`).
    Returns:
      A `Program`: call it with the same keyword arguments.
    """
    lifting = Lifting(lifting) if isinstance(lifting, str) else lifting
    key = (fn, _as_tuple(per_replica), _as_tuple(static), lifting, carry)
    program = _PROGRAMS.get(key)
    if program is None:
        program = Program(fn, key[1], key[2], lifting, carry)
        _PROGRAMS[key] = program
        if len(_PROGRAMS) > _CACHE_SIZE:
            _PROGRAMS.popitem(last=False)
    else:
        _PROGRAMS.move_to_end(key)
    return program


def cache_size() -> int:
    """How many lifted programs the process keeps (each with its compiled shapes)."""
    return len(_PROGRAMS)
