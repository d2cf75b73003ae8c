"""Running a function written for ONE item over K items: by vmap or by a loop.

Analyses train or evaluate many small things at once (stitch layers, stages
of the replicas, dropout variants). `Lifted(strategy, K)` runs `fn` for each
item; per-item arguments are stacked trees [K, ...] and results always come
back stacked [K, ...], under both strategies:

- `vmap`: one compiled program over the K items (`jax.vmap`);
- `loop`: the same compiled single-item program called K times (no grouped
  convolutions, which XLA:CPU runs slowly; see BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from memjax.errors import ConfigError

STRATEGIES = ('vmap', 'loop')


@jax.jit
def _take(tree: Any, k: jax.Array) -> Any:
    return jax.tree_util.tree_map(lambda x: x[k], tree)


@jax.jit
def _stack(trees: list) -> Any:
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def take(tree: Any, k: int) -> Any:
    """Item k of a stacked tree [K, ...] (one compiled dispatch)."""
    return _take(tree, jnp.asarray(k, jnp.int32))


def stack(trees: list) -> Any:
    """A list of K trees stacked into one tree [K, ...]."""
    return _stack(list(trees))


class Lifted:
    """fn over K items, stacked in and stacked out (see module docstring)."""

    def __init__(self, strategy: str, size: int):
        if strategy not in STRATEGIES:
            raise ConfigError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        self.strategy, self.size = strategy, int(size)
        self._compiled: dict = {}

    def __call__(self, fn: Callable, batched: tuple[bool, ...], *args) -> Any:
        """fn(*args) for each item; batched[i] says whether args[i] is per item (stacked [K, ...]).

        Returns fn's result (a tree, or a tuple of trees) stacked over the K items.
        """
        key = (fn, batched)
        if key not in self._compiled:
            if self.strategy == 'vmap':
                self._compiled[key] = jax.jit(jax.vmap(fn, in_axes=tuple(0 if b else None for b in batched)))
            else:
                self._compiled[key] = jax.jit(fn)
        compiled = self._compiled[key]
        if self.strategy == 'vmap':
            return compiled(*args)
        outs = [compiled(*[take(a, k) if b else a for a, b in zip(args, batched)]) for k in range(self.size)]
        return stack(outs)

    def batched_over(self, fn: Callable, batched: tuple[bool, ...], images: jax.Array, *args,
                     batch: int = 1000, image_position: int = 1) -> np.ndarray:
        """fn over the K items and over example batches of `images` [P, ...]: numpy [K, P, ...].

        `images` is inserted at `image_position` among `args` (shared by all items).
        """
        flags = batched[:image_position] + (False,) + batched[image_position:]
        parts = []
        for start in range(0, images.shape[0], batch):
            call_args = args[:image_position] + (images[start:start + batch],) + args[image_position:]
            parts.append(np.asarray(self(fn, flags, *call_args)))
        return np.concatenate(parts, axis=1)
